"""Loading the libraries a source imports lazily, at the time the source is built."""
from __future__ import annotations

import importlib


def preload(*modules: str) -> None:
    """Import the libraries a source calls lazily (kept out of module import so `--help` stays fast) when the
    source is built, i.e. in the node's on_configure: otherwise the first keyframe pays for them (cv2 ~0.13 s,
    open3d ~1 s on this machine) and every frame queued behind it waits."""
    for name in modules:
        importlib.import_module(name)
