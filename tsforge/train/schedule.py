"""Learning-rate schedules: linear warm-up, then cosine, one-cycle or constant.

Each is a `torch.optim.lr_scheduler.LambdaLR` over optimizer steps, so its state is a step
count and it resumes exactly from a checkpoint.
"""

from __future__ import annotations

import math

import torch

from tsforge.config.schema import SCHEDULES
from tsforge.errors import UserError


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if schedule == "onecycle":
        # Up for the first 30% (or the warm-up if longer), then cosine down to min_ratio.
        warmup = max(warmup, int(0.3 * total))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in SCHEDULES:
        raise UserError(f"optim.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, total=total_steps, warmup=warmup_steps, schedule=schedule, min_ratio=min_lr_ratio
        ),
    )
