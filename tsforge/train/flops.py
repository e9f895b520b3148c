"""Model FLOPs per window and the device's peak FLOP/s: the two halves of MFU.

    fwd = forward_flops_per_window(model_on_meta, example_inputs(2, L, H, C))
    peak, source = peak_flops(device, dtype, override_tflops=None)
    mfu = TRAIN_FLOPS_PER_FORWARD * fwd * windows_per_s_per_rank / peak

Convention: the model FLOPs of a training window are 3x its forward FLOPs (the backward
pass costs about twice the forward: gradients for the activations and for the weights), as
in the PaLM paper's MFU; FLOPs are those of the matmuls and attention (2 per multiply-add),
counted by torch's `FlopCounterMode` on one forward pass of a few windows, the model built
on the meta device (no memory, no arithmetic), with SDPA's math path so that attention is
counted too. Elementwise work (norms, activations) is left out, as MFU does. Rolled-out
forecasts (several forward passes of the stack) are counted as they run.

The peak is the device's dense peak for the autocast dtype: a table of CUDA cards (bf16 on
tensor cores, fp32 without TF32, which torch does not use for matmuls by default), or on a
CPU a measured one, since no spec sheet says what the threads given to one rank can do: the
best fp32 (or bf16) matmul throughput of one thread over about 0.2 s, times this rank's
threads. One thread, best of many short matmuls, because on a shared machine a measurement
over several threads swings tenfold with the other processes' load (seen: 5 to 186 GFLOP/s
for 2 threads, 92 to 97 for one); the product is the threads' ideal, as a spec sheet's peak
is. `trainer.peak_tflops` overrides both.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FLOPS_PER_FORWARD = 3

# Dense peak TFLOP/s by device name (first match wins: specific names before general ones),
# from the vendors' data sheets: (bf16 tensor core, fp32).
CUDA_PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.0, 51.2),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9),  # SXM
    ("H200", 989.4, 66.9),
    ("GH200", 989.4, 66.9),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("A800", 312.0, 19.5),
    ("L40S", 362.1, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("A6000", 154.8, 38.7),
    ("V100", 0.0, 15.7),  # no bf16 tensor cores
    ("T4", 0.0, 8.1),
)


def example_inputs(
    n_windows: int, input_size: int, horizon: int, n_channels: int = 1, hist: int = 0,
    futr: int = 0, stat: int = 0, device: torch.device | str = "meta",
) -> dict[str, torch.Tensor]:  # fmt: skip
    """A batch of the loader's shapes (zero-width covariates when there are none)."""
    B, L, C = n_windows, input_size, n_channels
    return {
        "insample_y": torch.zeros(B, L, C, device=device),
        "insample_mask": torch.ones(B, L, C, device=device),
        "hist_exog": torch.zeros(B, L, hist, device=device),
        "futr_exog": torch.zeros(B, L + horizon, futr, device=device),
        "stat_exog": torch.zeros(B, stat, device=device),
    }


def forward_flops_per_window(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Forward FLOPs of one window: one counted pass over `inputs`, divided by its windows."""
    was_training = model.training
    model.eval()  # no dropout draws, no running statistics updated
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), \
                FlopCounterMode(display=False) as counter:  # fmt: skip
            model(**inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / inputs["insample_y"].shape[0]


def measured_matmul_flops(dtype: torch.dtype = torch.float32, seconds: float = 0.2,
                          n: int = 256) -> float:  # fmt: skip
    """FLOP/s of square matmuls on one CPU thread, the best of repeats over `seconds`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)  # not the global stream: training's stays as it was
        a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
        torch.mm(a, b)  # warm-up: caches, packing buffers
        best, end = 0.0, time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            torch.mm(a, b)
            elapsed = time.perf_counter() - t0
            best = max(best, 2 * n**3 / max(elapsed, 1e-9))
            if t0 + elapsed >= end:
                return best
    finally:
        torch.set_num_threads(threads)


def cuda_peak_tflops(name: str, dtype: torch.dtype | None) -> float | None:
    for key, bf16, fp32 in CUDA_PEAK_TFLOPS:
        if key in name:
            peak = bf16 if dtype in (torch.bfloat16, torch.float16) else fp32
            return peak or None
    return None


def peak_flops(device: torch.device, dtype: torch.dtype | None,
               override_tflops: float | None = None) -> tuple[float | None, str]:  # fmt: skip
    """(peak FLOP/s of this rank's device for `dtype` (None: fp32), where it comes from).
    None when the card is not in the table: set `trainer.peak_tflops`."""
    precision = "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "fp32"
    if override_tflops is not None:
        return override_tflops * 1e12, "trainer.peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tflops = cuda_peak_tflops(name, dtype)
        if tflops is None:
            return None, f"unknown: {name} is not in the table, set trainer.peak_tflops"
        return tflops * 1e12, f"table: {name} dense {precision}"
    threads = torch.get_num_threads()
    one = measured_matmul_flops(dtype or torch.float32)
    return one * threads, (f"measured: {precision} matmul, {one / 1e9:.0f} GFLOP/s on one CPU "
                           f"thread x {threads} thread(s)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    """What MFU needs: the model's forward FLOPs per window and this rank's peak FLOP/s."""

    forward_per_window: float | None  # None: the model could not be counted (no MFU)
    peak: float | None  # None: unknown device (no MFU)
    peak_source: str

    @property
    def per_window(self) -> float | None:
        """Training FLOPs of one window (forward and backward)."""
        if self.forward_per_window is None:
            return None
        return TRAIN_FLOPS_PER_FORWARD * self.forward_per_window

    def mfu(self, windows_per_s_per_rank: float) -> float | None:
        """Model FLOPs utilisation of one rank: achieved training FLOP/s over the peak."""
        if not self.peak or self.per_window is None:
            return None
        return self.per_window * windows_per_s_per_rank / self.peak
