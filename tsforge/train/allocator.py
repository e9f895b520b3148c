"""Whether freed memory goes back to the operating system: glibc's mmap threshold.

    applied = set_mmap_threshold(4096)   # allocations of 4 MiB and more: mmap, given back
    threshold_kib("fsdp", torch.device("cpu"), None)   # -> 4096: trainer.malloc_mmap_threshold_kb

On CPUs torch takes its tensors from the C allocator. glibc serves a large allocation from
its own mapping (mmap) and returns it to the system when it is freed, but it raises that
threshold to the size of each mapped block freed, up to 32 MiB; after a few steps every
tensor under 32 MiB comes from the heap, whose freed holes are kept, not returned. FSDP2
allocates and frees a whole block's gathered parameters and gradients several times a step,
so under glibc's default its resident memory grows far past what it holds. A fixed threshold
(`mallopt(M_MMAP_THRESHOLD)`, which also stops the raising) gives that memory back, at the
cost of mapping and faulting in fresh pages for each large tensor. PatchDecoder base (100M
parameters), FSDP2 at 2 ranks on CPU, 10 steps: resident memory per rank 2.3-2.5 GB under
glibc's default, 1.1 GB at 4 MiB, 1.0 GB at 128 KiB; steps 2.9 s under the default, 4.2 s
at either threshold (the gathered blocks, 28 MB each, are faulted in afresh). The automatic
4 MiB leaves the activations of small models on the heap: 128 KiB made tiny FSDP2 steps a
third slower, 4 MiB costs them nothing measurable (benchmarks/sharding.py: `fsdp2` against
`fsdp-heap2`).

Linux with glibc only; elsewhere (macOS, musl) nothing is changed and `set_mmap_threshold`
says so by returning False. Not on GPUs: CUDA tensors have their own caching allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MAX_KIB = 32 * 1024  # glibc refuses a threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64 bits)
FSDP_CPU_DEFAULT_KIB = 4096


def threshold_kib(strategy: str, device: torch.device, configured: int | None) -> int:
    """The threshold to apply, in KiB: `configured` (0: leave glibc's default), or when None
    4096 for FSDP2 on CPU, whose point is memory, and 0 otherwise."""
    if configured is not None:
        return int(configured)
    return FSDP_CPU_DEFAULT_KIB if strategy == "fsdp" and device.type == "cpu" else 0


def set_mmap_threshold(kib: int) -> bool:
    """Fix glibc's mmap threshold at `kib` KiB for this process (0: change nothing). True when
    it took effect."""
    if kib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(kib) * 1024))
