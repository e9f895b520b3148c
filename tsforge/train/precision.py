"""Mixed precision: bf16 autocast on GPUs (no grad scaler needed), full fp32 on CPUs."""

from __future__ import annotations

import torch

from tsforge.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


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
