"""A trained run evaluated on a split of its own store: `tsforge evaluate RUN_DIR`.

    from tsforge.runs.evaluate import evaluate_run
    from tsforge.runs.load import load_run
    report = evaluate_run(load_run("runs/mine"), split="test")

Overall and per-horizon-step metrics of the model and its baselines, computed by the run's
own evaluator (`tsforge.train.evaluate`) on the run's own loaders, so the test split gives
the `test` block of the run's `metrics.json` again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tsforge.errors import UserError
from tsforge.runs.load import TrainedRun
from tsforge.train import builders


# ---------------------------------------------------------------------------- evaluation
class _PerStep:
    """Sums of |e|, e^2 and counts per horizon step of the model and the baseline (float64),
    fed by `Evaluator.evaluate(observe=...)` one batch at a time."""

    def __init__(self, horizon: int, device: torch.device):
        self.sums = torch.zeros(2, 3, horizon, dtype=torch.float64, device=device)

    def __call__(self, point_BHC, y_BHC, mask_BHC, naive_BHC) -> None:
        observed = mask_BHC > 0
        count_H = observed.sum(dim=(0, 2)).double()
        for k, f_BHC in enumerate((point_BHC, naive_BHC)):
            if f_BHC is None:
                continue
            err = torch.where(observed, f_BHC.double() - y_BHC.double(), 0.0)
            self.sums[k, 0] += err.abs().sum(dim=(0, 2))
            self.sums[k, 1] += err.square().sum(dim=(0, 2))
            self.sums[k, 2] += count_H

    def result(self) -> dict[str, dict[str, list[float | None]]]:
        out = {}
        for k, name in enumerate(("model", "seasonal_naive")):
            abs_H, sq_H, n_H = self.sums[k].cpu().numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = {"mae": _floats(abs_H / n_H), "mse": _floats(sq_H / n_H)}
        return out


def _floats(x: np.ndarray) -> list[float | None]:
    """JSON-safe: NaN (a step with no observed point) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in x]


def evaluate_run(run: TrainedRun, split: str = "test") -> dict[str, Any]:
    """Metrics of the run's model and of the seasonal-naive baseline on every window of
    `split`, overall and per horizon step (`mae`, `mse` lists of H values)."""
    if split not in ("val", "test"):
        raise UserError(f"--split {split!r}: use test or val")
    cfg = run.cfg
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, run.store, run.env)
    if split not in loaders:
        raise UserError(
            f"the {split} split of {cfg.data.name} has no window of input_size="
            f"{cfg.data.input_size} + horizon={cfg.data.horizon}: evaluate another split "
            "(--split val|test)"
        )
    evaluator = builders.evaluator(cfg, loaders, run.loss, run.env)
    per_step = _PerStep(cfg.data.horizon, run.env.device)
    metrics = evaluator.evaluate(run.model, split, with_baseline=True, observe=per_step)
    return {
        "run_dir": str(run.run_dir),
        "split": split,
        "checkpoint": run.checkpoint,
        "step": run.step,
        "windows": loaders[split].n_windows,
        "model_name": run.model_name,
        "model": {k: v for k, v in metrics.items() if "/" not in k},
        "seasonal_naive": {k[6:]: v for k, v in metrics.items() if k.startswith("naive/")},
        "naive1": {k[7:]: v for k, v in metrics.items() if k.startswith("naive1/")},
        "per_step": per_step.result(),
    }


