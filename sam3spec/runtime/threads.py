"""TVM's CPU thread pool, sized like PyTorch's: left alone, TVM halves the logical CPU count on x86
(it assumes hyper-threading), so on a 2-vCPU machine every compiled kernel ran on one thread."""

from __future__ import annotations

import os


def configure(threads: int | None = None) -> int:
    """Give TVM's thread pool `threads` workers (default: torch's thread count) unless TVM_NUM_THREADS
    is set; call before the first TVM kernel runs. Returns the count TVM reports."""
    if "TVM_NUM_THREADS" not in os.environ:
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        os.environ["TVM_NUM_THREADS"] = str(threads)
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())
