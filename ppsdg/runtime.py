"""What every process of a run sets up the same way: torch threads, the device, seeds, and quiet
libraries.

A gloo rank, the vantage6 central and partial functions and the researcher's side all start here,
so that the same options give the same arithmetic on every backend.
"""
import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator

import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, round, worker, ...): the same on every machine and every backend."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_up(threads: int, use_cuda: bool, local_rank: int = 0) -> torch.device:
    """Torch threads and the device of one process; `local_rank` is its index on this host.

    The thread count is part of the result (CPU kernels sum in another order with other counts),
    so it comes from the options, never from the machine.
    """
    torch.set_num_threads(threads)
    quiet_jax()
    return device_for(use_cuda, local_rank)


def quiet_jax() -> None:
    """Keep JAX's warnings from the user: a table's graphical model is fitted with JAX, whose CPU-only
    jaxlib (the one ppsdg installs) warns at its first use on a machine with a GPU that it falls back
    to the CPU, which is what ppsdg means it to do. Its errors still show."""
    logging.getLogger("jax").setLevel(logging.ERROR)


def device_for(use_cuda: bool, local_rank: int = 0) -> torch.device:
    """CUDA when asked for and present (this host's GPU `local_rank`, modulo the count), else the CPU.

    On CUDA, kernels are chosen for reproducible results (cuDNN and cuBLAS otherwise pick by
    speed, and some of their picks sum in a varying order), so that a run, its rerun and the other
    backend give the same model from the same seed.
    """
    if not (use_cuda and torch.cuda.is_available()):
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def every_core() -> Iterator[None]:
    """Torch threads on every core this process may use, for the server's test: the workers wait
    for the next round meanwhile, so the cores are free. The test's figures do not depend on the
    thread count, so the backends still agree (tested)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, cores()))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
