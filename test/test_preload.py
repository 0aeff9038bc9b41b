"""Sources load the libraries they call lazily when they are built (the node's on_configure), not in the first
keyframe: checked in a fresh interpreter, where nothing else imported them yet."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from moonseg3r_ros.core.features import ColorFeatures
from moonseg3r_ros.core.masks_rgbd import RgbdSegmentMasks
assert "cv2" not in sys.modules and "open3d" not in sys.modules, "imported before any source was built"
ColorFeatures()
assert "cv2" in sys.modules, "ColorFeatures() did not load cv2"
RgbdSegmentMasks()
assert "open3d" in sys.modules and "scipy.ndimage" in sys.modules, "RgbdSegmentMasks() did not load open3d/scipy"
print("ok")
"""


def test_building_a_source_loads_its_lazy_libraries():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
