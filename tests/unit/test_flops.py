"""Model FLOPs per window (FlopCounterMode), the patch decoder's analytic count, the device's
peak and MFU. CPU, meta device, a few seconds.

    pytest tests/unit/test_flops.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tsforge.models import build_model
from tsforge.train.flops import (
    TRAIN_FLOPS_PER_FORWARD,
    ModelFlops,
    cuda_peak_tflops,
    example_inputs,
    forward_flops_per_window,
    peak_flops,
)


class LinearForecaster(nn.Module):
    def __init__(self, input_size: int, horizon: int):
        super().__init__()
        self.linear = nn.Linear(input_size, horizon)

    def forward(self, insample_y, insample_mask=None, hist_exog=None, futr_exog=None,
                stat_exog=None):  # fmt: skip
        return self.linear(insample_y[..., 0])[..., None, None]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_linear_forecaster_costs_two_flops_per_weight_and_window(device):
    with torch.device(device):
        model = LinearForecaster(96, 24)
    flops = forward_flops_per_window(model, example_inputs(5, 96, 24, device=device))
    assert flops == 2 * 96 * 24  # the bias add is elementwise: not counted
    assert model.training  # the count leaves the mode as it was


@pytest.mark.parametrize(
    "input_size, horizon, n_channels",
    [(512, 96, 1), (96, 24, 1), (100, 300, 2), (48, 640, 1)],  # padded; rolled out to 5 patches
)
def test_patch_decoder_analytic_flops_match_the_counter(input_size, horizon, n_channels):
    with torch.device("meta"):
        model = build_model("patch_decoder", input_size=input_size, horizon=horizon,
                            n_channels=n_channels, n_outputs=9)  # fmt: skip
    inputs = example_inputs(3, input_size, horizon, n_channels)
    counted = forward_flops_per_window(model, inputs)
    analytic = model.flops_per_window(input_size, horizon)
    assert abs(analytic - counted) <= 0.02 * counted, (analytic, counted)


def test_patch_decoder_attention_is_counted_on_cpu_too():
    """SDPA's fused CPU kernel is not in FlopCounterMode's table: the count uses the math path."""
    torch.manual_seed(0)
    model = build_model("patch_decoder", input_size=512, horizon=256, d_model=32, n_heads=2,
                        n_layers=2, d_ff=64)  # fmt: skip
    counted = forward_flops_per_window(model, example_inputs(2, 512, 256, device="cpu"))
    assert counted == model.flops_per_window()


def test_peak_flops_table_override_and_measurement():
    assert cuda_peak_tflops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.4
    assert cuda_peak_tflops("NVIDIA H200", torch.bfloat16) == 989.4
    assert cuda_peak_tflops("NVIDIA H100 PCIe", torch.bfloat16) == 756.0
    assert cuda_peak_tflops("NVIDIA A100-SXM4-80GB", None) == 19.5
    assert cuda_peak_tflops("NVIDIA L40S", torch.bfloat16) == 362.1
    assert cuda_peak_tflops("Tesla V100-SXM2-16GB", torch.bfloat16) is None  # no bf16 cores
    assert cuda_peak_tflops("Some Future Card", torch.bfloat16) is None
    assert peak_flops(torch.device("cpu"), None, 2.5) == (2.5e12, "trainer.peak_tflops")
    peak, source = peak_flops(torch.device("cpu"), None)
    assert peak > 0 and source.startswith("measured: fp32 matmul")


def test_mfu_is_training_flops_over_the_peak():
    flops = ModelFlops(forward_per_window=1e6, peak=1e10, peak_source="test")
    assert TRAIN_FLOPS_PER_FORWARD == 3 and flops.per_window == 3e6
    assert flops.mfu(1000.0) == pytest.approx(0.3)
    assert ModelFlops(1e6, None, "unknown").mfu(1000.0) is None


def _builder_parts():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from tsforge.config.schema import Config
    from tsforge.train.distributed import DistEnv

    cfg = OmegaConf.structured(Config)
    store = SimpleNamespace(roles=SimpleNamespace(target=("y",), hist_exog=(), futr_exog=(),
                                                  static=()))  # fmt: skip
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    return cfg, store, env


class DataDependent(LinearForecaster):
    def forward(self, insample_y, *args, **kwargs):
        return super().forward(insample_y) * insample_y.abs().max().item()  # no meta kernel


def test_a_model_that_cannot_be_counted_still_trains_without_mfu(monkeypatch):
    from tsforge.losses import build_loss
    from tsforge.train import builders

    cfg, store, env = _builder_parts()
    cfg.model = {"name": "dlinear"}
    monkeypatch.setattr(builders, "model", lambda *a: DataDependent(96, 24))
    flops = builders.model_flops(cfg, store, build_loss("mae"), env)
    assert flops.forward_per_window is None and flops.per_window is None
    assert flops.peak > 0 and flops.mfu(100.0) is None


def test_counting_in_the_builder_leaves_the_rng_alone():
    from tsforge.losses import build_loss
    from tsforge.train import builders

    small = dict(patch_len=8, output_patch_len=16, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                 dropout=0.1)  # fmt: skip
    cfg, store, env = _builder_parts()
    cfg.model = {"name": "patch_decoder", **small}
    torch.manual_seed(0)
    before = torch.get_rng_state()
    flops = builders.model_flops(cfg, store, build_loss("mae"), env)  # measures the CPU too
    assert torch.equal(torch.get_rng_state(), before)
    assert flops.peak > 0 and flops.peak_source.startswith("measured")
    cfg.trainer.peak_tflops = 1.0
    flops = builders.model_flops(cfg, store, build_loss("mae"), env)
    assert flops.peak == 1e12 and flops.peak_source == "trainer.peak_tflops"
    model = build_model("patch_decoder", input_size=cfg.data.input_size,
                        horizon=cfg.data.horizon, **small)  # fmt: skip
    assert flops.forward_per_window == model.flops_per_window()
