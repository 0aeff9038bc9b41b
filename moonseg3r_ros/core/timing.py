"""Stage timing, the numpy BLAS thread limit around the pipeline's non-network stages and the torch single-thread
scope of its small networks."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch


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


@contextlib.contextmanager
def torch_single_thread(device: Optional["torch.device"] = None):
    """Run torch on one intra-op thread while held, on CPU (a no-op on CUDA).

    For the small networks of a keyframe (lifter, decoder, pixel head: NxD products with N ~ 10-100, D = 64):
    with two threads MKL/OpenMP hands each product to a second thread, and when another process holds the
    other core that hand-off stalls (measured on this 2-core machine with one core busy: a 8x96 @ 96x64 Linear
    median 0.1 ms, max 21.8 ms with 2 threads; max 0.55 ms with 1). CUT3R and the mask networks run outside
    and keep every thread. torch's OpenMP thread count belongs to the calling thread (test_timing): a network
    on another thread meanwhile (the masks.asynchronous worker) keeps its threads. `device` None = CPU."""
    import torch

    if device is not None and device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class stage_timer:
    """Context manager adding the elapsed seconds to timings[name]."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start
