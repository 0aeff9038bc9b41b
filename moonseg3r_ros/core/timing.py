"""Stage timing and the numpy BLAS thread limit around the pipeline's non-network stages."""
from __future__ import annotations

import contextlib
import logging
import time


def numpy_blas_limiter(threads: int = 1):
    """A context-manager factory that limits numpy/scipy's OpenBLAS to `threads` threads while held.

    The non-network stages only multiply small matrices (100x64 by 64x500); OpenBLAS still splits them over
    every core, and on a loaded 2-core machine waking the second thread costs 10-20 ms per product (measured:
    cosine_matrix 0.1 ms single-threaded, 14 ms with 2 threads under load). torch's own thread pool
    (the networks) is not touched. Without threadpoolctl this is a no-op."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        logging.getLogger("moonseg3r").warning("threadpoolctl not installed: numpy BLAS threads not limited")
        return contextlib.nullcontext
    controller = ThreadpoolController()
    prefixes = sorted({lib.prefix for lib in controller.lib_controllers if lib.internal_api == "openblas"
                       and ("numpy" in lib.filepath or "scipy" in lib.filepath)})  # not a BLAS torch brings
    if not prefixes:
        return contextlib.nullcontext
    selected = controller.select(prefix=prefixes)
    return lambda: selected.limit(limits=threads)


class stage_timer:
    """Context manager adding the elapsed seconds to timings[name]."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start
