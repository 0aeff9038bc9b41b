"""The one instance palette: a stable, well-spread rgb colour per instance id (golden-ratio hue steps)."""
from __future__ import annotations

import colorsys

import numpy as np

GOLDEN_RATIO_FRACTION = 0.618033988749895
UNASSIGNED_GREY = (0.5, 0.5, 0.5)
SATURATION = 0.65
VALUE = 0.95


def instance_color(instance_id: int) -> np.ndarray:
    """float64[3] rgb in [0, 1] for an id; consecutive ids are a golden-ratio hue step apart; id 0 is grey."""
    if instance_id == 0:
        return np.array(UNASSIGNED_GREY)
    hue = (instance_id * GOLDEN_RATIO_FRACTION) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, SATURATION, VALUE))
