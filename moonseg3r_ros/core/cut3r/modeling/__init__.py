"""CUT3R building blocks, one file per block of the figure; `cut3r.py` assembles them."""
from .cut3r import Cut3r, build_cut3r

__all__ = ["Cut3r", "build_cut3r"]
