"""ROS-free core of moonseg3r: models, memory, association, instance map and the pipeline."""
