"""The error every message reader raises, and message byte data <-> buffers."""
from __future__ import annotations

import array

class ConversionError(ValueError):
    """A message could not be converted (the text says why)."""


def bytes_to_array(buffer: bytes) -> array.array:
    """bytes -> array.array('B'), the type rclpy gives uint8[] message fields."""
    out = array.array("B")
    out.frombytes(buffer)
    return out
