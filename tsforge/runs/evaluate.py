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
from tsforge.metrics import MetricAccumulator
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


class _PointCrps:
    """GIFT-Eval's CRPS (GluonTS's mean weighted quantile loss) of point forecasts, the model's
    and the seasonal naive's: every quantile at `levels` equal to the point forecast."""

    def __init__(self, levels: tuple[float, ...], device: torch.device):
        self.levels = levels
        self.accs = [MetricAccumulator(quantiles=levels, device=device) for _ in range(2)]

    def __call__(self, point_BHC, y_BHC, mask_BHC, naive_BHC) -> None:
        for acc, f_BHC in zip(self.accs, (point_BHC, naive_BHC)):
            if f_BHC is not None:
                q_BHCQ = f_BHC.unsqueeze(-1).expand(*f_BHC.shape, len(self.levels))
                acc.update(f_BHC, y_BHC, mask_BHC, quantiles_BHCQ=q_BHCQ)

    def result(self) -> tuple[float, float]:
        return tuple(acc.compute()["scaled_crps"] for acc in self.accs)


# GIFT-Eval's quantile levels, for the CRPS of forecasts that have none of their own.
POINT_CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def evaluate_run(
    run: TrainedRun,
    split: str = "test",
    *,
    crps: bool = False,
    short_hint: str = "evaluate another split (--split val|test)",
) -> dict[str, Any]:
    """Metrics of the run's model and of the seasonal-naive baseline on every window of
    `split`, overall and per horizon step (`mae`, `mse` lists of H values). With `crps`, both
    also get `crps`: the model's own over its quantile levels when it has them, else that of
    its point forecast with every quantile equal to it (and so the seasonal naive's, at the
    model's levels or GIFT-Eval's 0.1..0.9). `short_hint` ends the error for a split without
    a window."""
    if split not in ("val", "test"):
        raise UserError(f"--split {split!r}: use test or val")
    cfg = run.cfg
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, run.store, run.env, train=False)
    if split not in loaders:
        raise UserError(
            f"the {split} split of {cfg.data.name} has no window of input_size="
            f"{cfg.data.input_size} + horizon={cfg.data.horizon}: {short_hint}"
        )
    evaluator = builders.evaluator(cfg, loaders, run.loss, run.env)
    per_step = _PerStep(cfg.data.horizon, run.env.device)
    points = _PointCrps(evaluator.levels or POINT_CRPS_LEVELS, run.env.device) if crps else None

    def observe(*batch) -> None:
        per_step(*batch)
        if points is not None:
            points(*batch)

    metrics = evaluator.evaluate(run.model, split, with_baseline=True, observe=observe)
    report = {
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
    if points is not None:
        model_crps, naive_crps = points.result()
        report["model"]["crps"] = metrics.get("scaled_crps", model_crps)
        report["seasonal_naive"]["crps"] = naive_crps
    return report
