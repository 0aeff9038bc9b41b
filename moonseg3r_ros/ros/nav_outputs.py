"""The node's navigation outputs: vision_msgs/Detection3DArray after every keyframe, nav_msgs/OccupancyGrid and
moonseg3r_msgs/InstanceGrid at occupancy.rate (transient local, like a map server), the keyframe's obstacle
points in the camera frame, and the moonseg3r_msgs/QueryInstances service.

The node hands in a `MapView` (points, ids and records already in the output map frame, see
`map_view_in`) through callables, so this module never touches the pipeline or its lock. The grid is
recomputed only when the map changed since the last one (`mark_dirty`).
"""
from __future__ import annotations

import array
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from moonseg3r_ros.core.config import OccupancyConfig
from moonseg3r_ros.core.instance_query import InstanceQuery, query_instances
from moonseg3r_ros.core.occupancy import OccupancyGrid, build_occupancy, obstacle_mask, rotate
from moonseg3r_ros.ros.nav_config import NavConfig

CLASS_ID = "instance"  # the map is class-agnostic


@dataclass
class MapView:
    """The map in the output frame: points Nx3 float64, ids N int64, InstanceRecords (boxes in that frame)."""

    points: np.ndarray
    ids: np.ndarray
    records: list


def map_view_in(points: np.ndarray, ids: np.ndarray, records: Sequence[Any], transform: np.ndarray) -> MapView:
    """Map points Nx3 / ids N / records in the pipeline's world -> MapView in the frame of the 4x4 similarity
    `transform` (output <- world). With a rotation the boxes are recomputed from the moved points (axis-aligned
    in the output frame); with the identity the records are kept as they are."""
    points = np.asarray(points, np.float64)
    ids = np.asarray(ids).astype(np.int64)
    if np.array_equal(transform, np.eye(4)):
        return MapView(points, ids, list(records))
    moved = rotate(points, transform[:3, :3]) + transform[:3, 3]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]) if ids.size else np.zeros(0, int)
    boxes = {}
    for start, stop in zip(starts, np.r_[starts[1:], ids.size]):
        chunk = moved[order[start:stop]]
        boxes[int(sorted_ids[start])] = (chunk.mean(0), chunk.min(0), chunk.max(0))
    out = []
    for r in records:
        if int(r.id) in boxes:
            centroid, lo, hi = boxes[int(r.id)]
            out.append(replace(r, centroid=centroid, bbox_min=lo.astype(np.float32), bbox_max=hi.astype(np.float32)))
    return MapView(moved, ids, out)


# ----------------------------------------------------------------------------------------------------
# Messages

def detection_array_msg(records: Sequence[Any], frame_id: str, stamp: Any):
    """InstanceRecords -> vision_msgs/Detection3DArray: one detection per instance, box centre/size from its
    axis-aligned box, the instance id as tracking id, its confidence as score, pose = box centre."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    msg = Detection3DArray()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    for r in sorted(records, key=lambda r: int(r.id)):
        lo, hi = np.asarray(r.bbox_min, np.float64), np.asarray(r.bbox_max, np.float64)
        centre, size = (lo + hi) / 2, hi - lo
        det = Detection3D(header=msg.header, id=str(int(r.id)))
        det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z = (float(v) for v in centre)
        det.bbox.center.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in size)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = CLASS_ID, float(r.confidence)
        hyp.pose.pose = det.bbox.center
        det.results = [hyp]
        msg.detections.append(det)
    return msg


def _grid_msg(msg: Any, grid: OccupancyGrid, frame_id: str, stamp: Any, data: array.array):
    """Fills a nav_msgs/OccupancyGrid-like message (header, MapMetaData `info`, row-major `data`) for `grid`."""
    from nav_msgs.msg import MapMetaData

    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    info = msg.info = MapMetaData()
    info.map_load_time = stamp
    info.resolution = float(grid.info.resolution)
    info.width, info.height = int(grid.info.width), int(grid.info.height)
    position, quat = grid.info.origin_pose()
    info.origin.position.x, info.origin.position.y, info.origin.position.z = (float(v) for v in position)
    o = info.origin.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quat)
    msg.data = data
    return msg


def occupancy_grid_msg(grid: OccupancyGrid, frame_id: str, stamp: Any):
    """core OccupancyGrid -> nav_msgs/OccupancyGrid (row-major int8: -1 unknown, 0 free, 100 occupied)."""
    from nav_msgs.msg import OccupancyGrid as GridMsg

    data = array.array("b", np.ascontiguousarray(grid.data, np.int8).tobytes())
    return _grid_msg(GridMsg(), grid, frame_id, stamp, data)


def instance_grid_msg(grid: OccupancyGrid, frame_id: str, stamp: Any):
    """core OccupancyGrid's instance raster -> moonseg3r_msgs/InstanceGrid (same geometry as the grid)."""
    from moonseg3r_msgs.msg import InstanceGrid

    data = array.array("I", np.ascontiguousarray(grid.instance_ids, np.uint32).tobytes())
    return _grid_msg(InstanceGrid(), grid, frame_id, stamp, data)


def xyz_cloud_msg(points: np.ndarray, frame_id: str, stamp: Any):
    """Nx3 points -> sensor_msgs/PointCloud2 with float32 x y z (unorganised, dense)."""
    from sensor_msgs.msg import PointCloud2, PointField

    xyz = np.ascontiguousarray(np.asarray(points, np.float32).reshape(-1, 3))
    msg = PointCloud2()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.height, msg.width = 1, int(xyz.shape[0])
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    msg.is_bigendian, msg.point_step, msg.row_step, msg.is_dense = False, 12, 12 * int(xyz.shape[0]), True
    msg.data = xyz.astype("<f4").tobytes()
    return msg


def query_from_request(request: Any) -> InstanceQuery:
    c = request.center
    return InstanceQuery(ids=tuple(int(i) for i in request.ids), center=(float(c.x), float(c.y), float(c.z)),
                         radius=float(request.radius), min_size=float(request.min_size),
                         max_size=float(request.max_size), min_confidence=float(request.min_confidence),
                         max_results=int(request.max_results), include_descriptors=bool(request.include_descriptors))


def frame_obstacles(points_cam: np.ndarray, ids: np.ndarray, camera_to_map: np.ndarray, config: OccupancyConfig,
                    grid: Optional[OccupancyGrid]) -> np.ndarray:
    """Camera-frame points Nx3 (ids N) of one keyframe -> the Mx3 camera-frame points that are obstacles by the
    grid's rule (ground plane and ignored instances of the latest grid; none before the first grid)."""
    if grid is None or points_cam.shape[0] == 0:
        return np.zeros((0, 3), np.float32)
    in_map = rotate(points_cam, camera_to_map[:3, :3]) + camera_to_map[:3, 3]
    keep = obstacle_mask(in_map, ids, config, grid.info.plane, grid.ignored_instances)
    return np.asarray(points_cam, np.float32)[keep]


# ----------------------------------------------------------------------------------------------------
# Publishers, timer and service on the node

class NavOutputs:
    """Creates and feeds the navigation publishers/service of `node` (see module docstring)."""

    def __init__(self, node: Any, nav: NavConfig, occupancy: Callable[[], OccupancyConfig],
                 map_view: Callable[..., Optional[MapView]], map_frame: str, count: Callable[[str, int], None],
                 callback_group: Any = None):
        self.node, self.nav, self.occupancy = node, nav, occupancy
        self.map_view, self.map_frame, self.count, self.group = map_view, map_frame, count, callback_group
        self._pubs: dict[str, Any] = {}
        self._service = None
        self._timer = None
        self._lock = threading.Lock()
        self._dirty_stamp = None
        self._map_stamp = None  # stamp of the map state the outputs describe (the latest keyframe's image)
        self.last_grid: Optional[OccupancyGrid] = None

    def create(self) -> None:
        from nav_msgs.msg import OccupancyGrid as GridMsg
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        from moonseg3r_msgs.msg import InstanceGrid
        from moonseg3r_msgs.srv import QueryInstances
        from vision_msgs.msg import Detection3DArray

        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topics, node = self.nav.topics, self.node
        if self.nav.detections:
            self._pubs["detections"] = node.create_publisher(Detection3DArray, topics.detections, 10)
        if self.nav.occupancy_grid:
            self._pubs["grid"] = node.create_publisher(GridMsg, topics.occupancy_grid, latched)
            self._pubs["instance_grid"] = node.create_publisher(InstanceGrid, topics.instance_grid, latched)
            rate = self.occupancy().rate
            if rate > 0:
                self._timer = node.create_timer(1.0 / rate, self._grid_tick, callback_group=self.group)
        if self.nav.obstacle_cloud:
            self._pubs["obstacle_cloud"] = node.create_publisher(PointCloud2, topics.obstacle_cloud, 5)
        self._service = node.create_service(QueryInstances, topics.query_service, self._on_query,
                                            callback_group=self.group)

    @property
    def publishes_obstacles(self) -> bool:
        return "obstacle_cloud" in self._pubs

    def destroy(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        if self._service is not None:
            self.node.destroy_service(self._service)
        for pub in self._pubs.values():
            self.node.destroy_publisher(pub)
        self._pubs, self._service, self._timer = {}, None, None

    # ------------------------------------------------------------------------------------------ feeding
    def on_keyframe(self, records: Optional[list], stamp: Any) -> None:
        """After a keyframe: `records` = the map's InstanceRecords in the output frame, None while the map has
        no output frame yet (the node counts that wait). The grid waits for its timer unless occupancy.rate is
        0; then it is built now from a fresh view of the points."""
        if records is None:
            return
        self._map_stamp = stamp
        pub = self._pubs.get("detections")
        if pub is not None:
            pub.publish(detection_array_msg(records, self.map_frame, stamp))
            self.count("nav.detections_published", 1)
        self.mark_dirty(stamp)
        if "grid" in self._pubs and self.occupancy().rate <= 0:
            self.publish_grid()

    def mark_dirty(self, stamp: Any) -> None:
        with self._lock:
            self._dirty_stamp = stamp

    def _grid_tick(self) -> None:
        with self._lock:
            pending = self._dirty_stamp is not None
        if pending:
            self.publish_grid()

    def publish_grid(self) -> Optional[OccupancyGrid]:
        """Build and publish the grid of the map as it is now (points and ids only), stamped with the newest
        map change; None when there is nothing to publish."""
        with self._lock:
            stamp, self._dirty_stamp = self._dirty_stamp, None
        view = self.map_view(records=False)
        if view is None or stamp is None:
            return None
        try:
            grid = build_occupancy(view.points, view.ids, self.occupancy())
        except ValueError as err:
            self.node.get_logger().error(f"occupancy grid not built: {err}", throttle_duration_sec=5.0)
            self.count("nav.grid_errors", 1)
            return None
        self.last_grid = grid
        self._pubs["grid"].publish(occupancy_grid_msg(grid, self.map_frame, stamp))
        self._pubs["instance_grid"].publish(instance_grid_msg(grid, self.map_frame, stamp))
        self.count("nav.grids_published", 1)
        if grid.cropped_points:
            self.count("nav.grid_cropped_points", grid.cropped_points)
        return grid

    def publish_obstacles(self, points_cam: np.ndarray, ids: np.ndarray, camera_to_map: np.ndarray,
                          camera_frame: str, stamp: Any) -> None:
        """Keyframe points Nx3 in the camera frame (ids N) -> the obstacle cloud in the camera frame."""
        pub = self._pubs.get("obstacle_cloud")
        if pub is None:
            return
        obstacles = frame_obstacles(points_cam, ids, camera_to_map, self.occupancy(), self.last_grid)
        pub.publish(xyz_cloud_msg(obstacles, camera_frame, stamp))
        self.count("nav.obstacle_clouds_published", 1)

    # ------------------------------------------------------------------------------------------ service
    def _on_query(self, request: Any, response: Any) -> Any:
        from moonseg3r_ros.ros.conversions import instance_map_msg

        try:
            query = query_from_request(request)
            view = self.map_view()
            if view is None:
                response.success, response.message = False, "no map in the output frame yet"
                return response
            found = query_instances(view.records, query)
        except ValueError as err:
            response.success, response.message = False, f"invalid query: {err}"
            return response
        if not query.include_descriptors:
            found = [replace(r, descriptor=np.zeros(0, np.float32)) for r in found]
        response.header.frame_id = self.map_frame
        response.header.stamp = self._map_stamp or self.node.get_clock().now().to_msg()
        instances = instance_map_msg(found, self.map_frame, None, 0, 0, 0, "").instances
        order = {int(r.id): k for k, r in enumerate(found)}  # instance_map_msg sorts by id: restore the query's order
        response.instances = sorted(instances, key=lambda inst: order[int(inst.id)])
        response.success, response.message = True, f"{len(found)} of {len(view.records)} instances match"
        self.count("nav.queries", 1)
        return response
