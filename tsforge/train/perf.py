"""Step timing and memory readings for the dashboard.

`StepTimer` splits each step into waiting for data and computing, so the share of time the
loader costs is visible (`perf/data_wait_frac`), and reports windows/s over the interval
since the last read.
"""

from __future__ import annotations

import resource
import sys
import time

import torch


def rss_mb() -> float:
    """Current resident memory of this process in MiB (peak where current is unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


class StepTimer:
    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.windows = 0
        self.wait_s = 0.0
        self.total_s = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def fetch(self, batches):
        """next(batches), with the time spent waiting counted as data wait."""
        t0 = time.perf_counter()
        batch = next(batches)
        self.wait_s += time.perf_counter() - t0
        return batch

    def stop(self, windows: int) -> float:
        """End the step; returns its duration in seconds."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._t0
        self.total_s += seconds
        self.windows += windows
        self.steps += 1
        return seconds

    def read(self) -> dict[str, float]:
        total = max(self.total_s, 1e-9)
        out = {
            "windows_per_s": self.windows / total,
            "step_time_ms": 1000 * total / max(1, self.steps),
            "data_wait_frac": self.wait_s / total,
        }
        self._reset()
        return out

    def memory(self) -> dict[str, float]:
        out = {"mem/cpu_rss_mb": rss_mb()}
        if self.device.type == "cuda":
            out["mem/gpu_allocated_mb"] = torch.cuda.memory_allocated(self.device) / 2**20
        return out
