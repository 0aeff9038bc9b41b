"""Thin ROS 2 layer over the ROS-free core: the lifecycle node and its message conversions.

Modules:
    conversions.py  Image/CompressedImage/CameraInfo/Pose <-> numpy, PointCloud2 pack/unpack, InstanceMap msg
    node_config.py  NodeConfig: the node-only parameters (topics, frames, QoS, queue, cloud), ROS-free
    params.py       declare/read parameters from the typed dataclasses; config/moonseg3r.yaml generation
    worker.py       bounded drop-policy frame queue + worker thread; stamp pairing of side inputs
    markers.py      visualization_msgs/MarkerArray (boxes + id labels) and the debug mask overlay
    node.py         the MoonSeg3R LifecycleNode and `main()` (installed as `moonseg3r_node`)
    process.py      stop_process: signal a child process, wait, SIGKILL on timeout (ROS-free)
"""
