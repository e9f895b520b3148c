"""Whether freed CPU memory goes back to the system (`tsforge.train.allocator`): the automatic
threshold, its bounds in the config, and its effect on a fresh process's resident memory.

    pytest tests/unit/test_allocator.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tsforge.config.checks import compose_config
from tsforge.errors import UserError
from tsforge.train.allocator import FSDP_CPU_DEFAULT_KIB, threshold_kib

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)

# A heap hole: after one 8 MiB block is mapped and freed, glibc's default threshold rises past
# 7 MiB, so the next 7 MiB block comes from the heap; a 256 KiB block taken after it lies
# above it, so freeing the 7 MiB leaves a hole that stays resident. Under a fixed threshold
# below 7 MiB the block is mapped on its own and unmapped when freed. Prints the resident MiB
# that freeing it gave back.
HOLE = """
import sys
from tsforge.train.allocator import set_mmap_threshold
if int(sys.argv[1]):
    assert set_mmap_threshold(int(sys.argv[1]))
import torch
def resident_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20
a = torch.ones(2 * 2**20)
del a
b = torch.ones(7 * 2**18)
c = torch.ones(2**16)
before = resident_mib()
del b
print(before - resident_mib())
"""


def given_back_mib(kib: int) -> float:
    out = subprocess.run([sys.executable, "-c", HOLE, str(kib)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_the_threshold_is_fixed_for_fsdp_on_cpu_only_unless_configured():
    assert threshold_kib("fsdp", CPU, None) == FSDP_CPU_DEFAULT_KIB
    assert threshold_kib("ddp", CPU, None) == 0
    assert threshold_kib("fsdp", CUDA, None) == 0  # CUDA tensors: torch's caching allocator
    assert threshold_kib("fsdp", CPU, 0) == 0
    assert threshold_kib("ddp", CPU, 256) == 256


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, /proc")
def test_a_fixed_threshold_gives_a_freed_tensor_back_where_the_default_keeps_it():
    kept = given_back_mib(0)
    given = given_back_mib(FSDP_CPU_DEFAULT_KIB)
    assert kept < 1, f"glibc's default gave {kept:.1f} MiB back"
    assert given > 6, f"a {FSDP_CPU_DEFAULT_KIB} KiB threshold gave only {given:.1f} MiB back"
    assert given_back_mib(8192) < 1  # a threshold above the block: on the heap, kept


@pytest.mark.parametrize("value", ["-1", "40000"])
def test_a_threshold_out_of_glibcs_range_is_refused_naming_the_key(value):
    with pytest.raises(UserError, match=r"trainer.malloc_mmap_threshold_kb=.*32768"):
        compose_config(["model=nhits", f"trainer.malloc_mmap_threshold_kb={value}"])
    assert compose_config(["model=nhits"]).trainer.malloc_mmap_threshold_kb is None
