"""core/timing.torch_single_thread: one torch thread inside, the count restored after; the setting belongs to the
calling thread (another thread keeps its own); nothing changes for a CUDA device."""
from __future__ import annotations

import threading

import torch

from moonseg3r_ros.core.timing import torch_single_thread


def test_single_thread_inside_restored_after_and_other_threads_keep_theirs():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def holder():
        with torch_single_thread(torch.device("cpu")):
            seen["holder"] = torch.get_num_threads()
            inside.set()
            leave.wait(5)

    try:
        worker = threading.Thread(target=holder)
        worker.start()
        inside.wait(5)
        seen["other thread meanwhile"] = torch.get_num_threads()
        leave.set()
        worker.join(5)
        with torch_single_thread():
            seen["here"] = torch.get_num_threads()
        assert seen == {"holder": 1, "other thread meanwhile": 2, "here": 1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cuda_device_leaves_the_cpu_threads_alone():
    before = torch.get_num_threads()
    with torch_single_thread(torch.device("cuda")):
        assert torch.get_num_threads() == before
