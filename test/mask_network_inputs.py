"""Inputs shared by the mask-network tests (test_masks_fastsam, test_masks_sam2): a small image with two
coloured blocks on noise, and a pickle payload that would create a marker file if anything unpickled it."""
import os

import numpy as np


def two_block_image() -> np.ndarray:
    """96x128x3 uint8: seeded noise with a red and a green block."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    image[20:60, 30:90] = (200, 40, 40)
    image[60:90, 5:40] = (20, 200, 40)
    return image


class TouchMarker:
    """Unpickling this runs `touch path` (os.system): the marker file must never appear."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)
