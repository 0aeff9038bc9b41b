"""Self-supervised training of MoonSeg3R's query refinement (eta, phi, psi); ROS-free. See docs/training.md."""
