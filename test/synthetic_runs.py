"""Helper of the pipeline tests (not a test module): run the pipeline over a synthetic orbit scene."""
from __future__ import annotations

from typing import Optional

import numpy as np

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
from moonseg3r_ros.data.synthetic import SceneSpec, SyntheticScene, generate_scene


def run_orbit_scene(seed: int, interval: int, box_overlap: Optional[str] = None
                    ) -> tuple[SyntheticScene, MoonSeg3RPipeline, dict[int, set]]:
    """Ground-truth masks on a 40-frame 320x240 scene of 6 objects seen over a 120-degree orbit.

    -> (scene, pipeline, assignments): for each ground-truth object id, the set of map instance ids that
    covered most of its pixels at the keyframes. `box_overlap=None` keeps the configured default.
    """
    scene = generate_scene(SceneSpec(seed=seed, num_frames=40, width=320, height=240, num_objects=6,
                                     orbit_degrees=120))
    config = PipelineConfig()
    config.device = "cpu"
    config.masks.source = "ground_truth"
    config.keyframe_interval = interval
    if box_overlap is not None:
        config.association.box_overlap = box_overlap
    pipe = MoonSeg3RPipeline(config)
    assignments: dict[int, set] = {}
    for frame in scene.frames:
        result = pipe.step(frame.image, frame.stamp, depth=frame.depth, intrinsics=frame.intrinsics,
                           pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
        assert not result.skipped
        if not result.is_keyframe:
            continue
        for object_id in np.unique(frame.instance_ids[frame.instance_ids > 0]):
            values, counts = np.unique(result.instance_ids_2d[frame.instance_ids == object_id], return_counts=True)
            assignments.setdefault(int(object_id), set()).add(int(values[counts.argmax()]))
    return scene, pipe, assignments
