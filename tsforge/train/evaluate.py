"""Evaluation: exact metrics over every window of a split, beside the seasonal-naive baseline.

Every evaluation window is visited once across ranks (the loader pads the last global batch
and marks pads `valid=False`), metrics are kept as sums and counts and summed over ranks with
one all_reduce, so a 2-rank evaluation gives the 1-rank numbers. Metrics are computed in the
data's own units (forecasts and targets are un-scaled with the window's loc/scale first), or
on the scaled values when `unscale=False` (the long-horizon protocol's standardized MSE).

Shape legend:  B batch   L input steps   H horizon   C channels   O outputs per point
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tsforge.data.scaling import inverse
from tsforge.metrics import MetricAccumulator, seasonal_naive, seasonal_naive_scale
from tsforge.train.distributed import DistEnv, sum_over_ranks
from tsforge.train.plots import forecast_image, window_label
from tsforge.train.precision import forecast


class Evaluator:
    """Evaluates a model on the loaders of named splits (`val`, `test`)."""

    def __init__(
        self,
        *,
        loaders: dict[str, Any],
        loss,
        env: DistEnv,
        season: int,
        plot_windows: int = 4,
        autocast_dtype: torch.dtype | None = None,
        unscale: bool = True,
        mase_scale_SC: np.ndarray | None = None,
    ):
        self.loaders = loaders
        self.loss = loss
        self.env = env
        self.season = season
        self.plot_windows = plot_windows
        self.autocast_dtype = autocast_dtype
        self.unscale = unscale
        self.levels = tuple(getattr(loss, "levels", ()) or ())
        # MASE's scale per series and target channel (S series, C targets) from the train
        # rows, in the data's units: windows shorter than a season have no scale of their own.
        self.mase_scale_SC = None if mase_scale_SC is None else torch.as_tensor(
            mase_scale_SC, dtype=torch.float64, device=env.device)

    def _mase_scale(self, batch: dict, x_BLC: torch.Tensor) -> torch.Tensor:
        """[B, C] the series' in-sample scale (in the metrics' units), else the window's."""
        window_BC = seasonal_naive_scale(x_BLC, batch["insample_mask"], self.season)
        if self.mase_scale_SC is None:
            return window_BC
        s_BC = self.mase_scale_SC[batch["series"].long()]
        if s_BC.shape[1] != x_BLC.shape[-1]:  # one channel a window: that window's
            s_BC = s_BC.gather(1, batch["channel"].long().clamp_min(0).unsqueeze(1))
        if not self.unscale:  # metrics on train-standardized values: the scale follows
            s_BC = s_BC / batch["scale"][:, 0, :].double()
        ok = torch.isfinite(s_BC) & (s_BC > 0)
        return torch.where(ok, s_BC, window_BC.double())

    def _accumulator(self, probabilistic: bool) -> MetricAccumulator:
        levels = self.levels if probabilistic else ()
        cover = (0.8,) if probabilistic and {0.1, 0.9} <= set(self.levels) else ()
        return MetricAccumulator(quantiles=levels, coverage=cover, device=self.env.device)

    def metric_names(self) -> list[str]:
        """The names `evaluate` reports for a split (`mae`, `mse`, ..., `loss`)."""
        return [*self._accumulator(bool(self.levels)).compute(), "loss"]

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str, *, step: int = 0, logger=None,
                 with_baseline: bool = False, observe=None) -> dict[str, float]:
        """Metrics of `model` on `split` (`loss` included); with_baseline adds the seasonal
        naive's `naive/<m>` and Naive1's (the last input value) `naive1/<m>`.

        `observe(point_BHC, y_BHC, mask_BHC, naive_BHC)`, if given, sees every batch in the
        metrics' units (naive_BHC is None without the baseline), for breakdowns beyond these
        totals such as `tsforge evaluate`'s per-horizon-step table. It is not all-reduced.
        """
        model.eval()
        probabilistic = bool(self.levels)
        acc = self._accumulator(probabilistic)
        base = MetricAccumulator(device=self.env.device)
        naive1 = MetricAccumulator(device=self.env.device)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=self.env.device)
        plotted = False
        for batch in self.loaders[split]:
            batch = {k: v.to(self.env.device) for k, v in batch.items()}
            y_hat_BHCO = forecast(model, batch, self.env.device, self.autocast_dtype)
            valid_B11 = batch["valid"].view(-1, 1, 1).to(batch["outsample_mask"].dtype)
            mask_BHC = batch["outsample_mask"] * valid_B11
            n = mask_BHC.sum()
            loss_sum += torch.stack(
                [self.loss(y_hat_BHCO, batch["outsample_y"], mask_BHC).double() * n, n.double()]
            )
            loc, scale = batch["loc"], batch["scale"]
            if not self.unscale:  # metrics on the scaled values: an identity transform
                loc, scale = torch.zeros_like(loc), torch.ones_like(scale)
            y_BHC = inverse(batch["outsample_y"], loc, scale)
            x_BLC = inverse(batch["insample_y"], loc, scale)
            point_BHC = inverse(self.loss.point(y_hat_BHCO), loc, scale)
            mase_scale = self._mase_scale(batch, x_BLC)
            quantiles = None
            if probabilistic:
                q_BHCQ = self.loss.quantiles(y_hat_BHCO, acc.quantile_levels)
                quantiles = inverse(q_BHCQ, loc.unsqueeze(-1), scale.unsqueeze(-1))
            acc.update(point_BHC, y_BHC, mask_BHC, mase_scale_BC=mase_scale,
                       quantiles_BHCQ=quantiles)
            naive = None
            if with_baseline:
                naive = seasonal_naive(x_BLC, y_BHC.shape[1], min(self.season, x_BLC.shape[1]))
                base.update(naive, y_BHC, mask_BHC, mase_scale_BC=mase_scale)
                last = seasonal_naive(x_BLC, y_BHC.shape[1], 1)
                naive1.update(last, y_BHC, mask_BHC, mase_scale_BC=mase_scale)
            if observe is not None:
                observe(point_BHC, y_BHC, mask_BHC, naive)
            if logger is not None and not plotted and self.plot_windows:
                self._plot(logger, step, split, x_BLC, y_BHC, point_BHC, quantiles, batch)
                plotted = True
        sums = sum_over_ranks(self.env, torch.cat([acc.state(), base.state(), naive1.state(),
                                                   loss_sum]))  # fmt: skip
        n_acc, n_base = len(acc.state()), len(base.state())
        acc.load_state(sums[:n_acc])
        base.load_state(sums[n_acc : n_acc + n_base])
        naive1.load_state(sums[n_acc + n_base : n_acc + 2 * n_base])
        out = acc.compute()
        out["loss"] = float(sums[-2] / sums[-1]) if sums[-1] > 0 else float("nan")
        if with_baseline:
            out.update({f"naive/{k}": v for k, v in base.compute().items()})
            out.update({f"naive1/{k}": v for k, v in naive1.compute().items()})
        return out

    def _plot(self, logger, step, split, x_BLC, y_BHC, point_BHC, q_BHCQ, batch) -> None:
        """Forecast images of up to `plot_windows` windows of this batch, distinct series
        first; each titled and tagged with its series id and forecast start."""
        store = self.loaders[split].store
        valid = batch["valid"].nonzero().flatten().tolist()
        series = batch["series"].tolist()
        first_of_series = {series[i]: i for i in reversed(valid)}
        chosen = sorted(first_of_series.values())[: self.plot_windows]
        chosen += [i for i in valid if i not in chosen][: self.plot_windows - len(chosen)]
        for k, i in enumerate(chosen):
            band = None
            if q_BHCQ is not None and q_BHCQ.shape[-1] >= 2:
                band = (q_BHCQ[i, :, 0, 0].cpu().numpy(), q_BHCQ[i, :, 0, -1].cpu().numpy())
            title, tag = window_label(store, series[i], int(batch["channel"][i]),
                                      int(batch["t"][i]))  # fmt: skip
            image = forecast_image(
                history=x_BLC[i, :, 0].cpu().numpy(),
                truth=y_BHC[i, :, 0].cpu().numpy(),
                forecast=point_BHC[i, :, 0].cpu().numpy(),
                band=band,
                title=title,
            )
            logger.images(step, f"{split}_forecast/{k}_{tag}", image)
