"""Running a model on a batch: bf16 autocast on GPUs (no grad scaler needed), fp32 on CPUs.

`forecast(model, batch, device, dtype)` is the one place that maps a loader batch onto a
model's inputs, for training, evaluation and prediction alike.
"""

from __future__ import annotations

import torch

from tsforge.config.schema import PRECISIONS
from tsforge.errors import UserError


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `trainer.precision` on this device (None: no autocast)."""
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


MODEL_INPUTS = ("insample_y", "insample_mask", "hist_exog", "futr_exog", "stat_exog")


def forecast(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """The model's output [B, H, C, O] in float32 for a loader batch (moved to `device`)."""
    x = {k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS}
    with autocast(device, dtype):
        y_hat_BHCO = model(
            x["insample_y"], insample_mask=x["insample_mask"], hist_exog=x["hist_exog"],
            futr_exog=x["futr_exog"], stat_exog=x["stat_exog"],
        )  # fmt: skip
    return y_hat_BHCO.float()
