"""Thin ROS 2 layer over the ROS-free core: the lifecycle node and its message conversions.

Modules:
    conversions/    messages <-> numpy: stamps, images (Image/CompressedImage), poses (CameraInfo, Pose, TF),
                    cloud (PointCloud2 pack/read), instance_map (InstanceMap msg); re-exported by the package
    node_config.py  NodeConfig: the node-only parameters (topics, frames, QoS, queue, cloud), ROS-free
    params.py       declare/read parameters from the typed dataclasses; config/moonseg3r.yaml generation
    worker.py       bounded drop-policy frame queue + worker thread; stamp pairing of side inputs
    markers.py      visualization_msgs/MarkerArray (boxes + id labels) and the debug mask overlay
    node.py         the MoonSeg3R LifecycleNode (lifecycle) and the `moonseg3r_node` entry point `main()`
    inputs.py  outputs.py  tf_chain.py  diagnostics.py  map_services.py  runtime_params.py
                    the node's parts: subscriptions/pairing, publishing, TF chain, diagnostics, map
                    services, run-time parameter changes
    main.py         running the node in a process (executor, signals, autostart)
    process.py      stop_process: signal a child process, wait, SIGKILL on timeout (ROS-free)
    node_process.py node_client.py frame_publisher.py
                    the one node driver of the tests, replay/demo and bench_node: the node as a child
                    process (ROS-free), the in-process client (lifecycle, parameters, services, outputs),
                    Frames -> input messages; testing.py: what the node tests share
    dds.py          DDS settings of our tools: LOCALHOST, the domain-id rule, the Fast DDS profile (ROS-free)
    nav_node.py nav_bridge.py nav_outputs.py nav_config.py robot_frames.py tf_buffer.py map_config_sync.py
                    the navigation part: TF modes with a robot, detections, occupancy/instance grids,
                    obstacle cloud, QueryInstances, the nav.* parameters, TF lookups; map.* parameters
                    following a loaded map
"""
