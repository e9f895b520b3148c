"""Forecast accuracy metrics that stay exact under DDP, and the M4 baselines they compare to.

Metrics are kept as sums and counts in one flat float64 tensor, never as averages of
averages, so summing that tensor over ranks (one all_reduce) gives the value a single process
would compute over the same windows (up to the order of float64 additions):

    acc = MetricAccumulator(quantiles=loss_levels, coverage=(0.8,), device=device)
    for batch in eval_loader:                       # every window visited once across ranks
        acc.update(y_hat_BHC, y_BHC, mask_BHC, mase_scale_BC=..., quantiles_BHCQ=...)
    torch.distributed.all_reduce(acc.state())       # in place, SUM
    acc.compute()   # {'mae':, 'mse':, 'rmse':, 'smape':, 'mase':, 'scaled_crps':, 'coverage_80':}

Definitions (pads and missing values, mask 0, are excluded everywhere):
    sMAPE   M4: 200 |y - y_hat| / (|y| + |y_hat|), 0 where both are 0, averaged over points.
    MASE    M4: |y - y_hat| / scale, scale = the in-sample MAE of the seasonal naive forecast
            (lag m) of the window's series; windows without a positive finite scale are left
            out of MASE (M4 would report infinity for a constant history).
    OWA     M4: (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2) / 2 on the dataset totals.
    scaled CRPS  neuralforecast's `scaled_crps` / GluonTS's mean weighted quantile loss:
            2 * sum over points of the level-averaged pinball loss / sum |y|.
    coverage_a   share of points with q_{(1-a)/2} <= y <= q_{(1+a)/2}.
With complete horizons (M4) the point averages equal M4's per-series-then-overall means.

Scoring forecasts of whole series as M4 does (`tsforge score`, benchmarks/m4_hourly.py):

    scale_N = np.array([mase_scale(y, season) for y in histories])   # lag 1 if too short
    base = baseline_forecasts(histories[0], horizon, season)         # naive1, snaive, naive2
    overall, per_step = score_panel(forecast_NH, truth_NH, scale_N)  # + quantiles, levels

Naive2 follows the M4 benchmarks code (Benchmarks and Evaluation.R): a seasonality test at
90% on the autocorrelation at lag m, R's classical multiplicative `decompose`, the naive
forecast of the seasonally adjusted series, re-seasonalised.

Shape legend:  B batch   L input steps   H horizon   C channels   Q quantile levels
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tsforge.errors import UserError
from tsforge.losses import pinball

__all__ = [
    "BASELINES", "MetricAccumulator", "baseline_forecasts", "coverage", "evaluate",
    "mase_scale", "naive2", "naive2_batch", "owa", "scaled_crps", "score_panel",
    "seasonal_indices", "seasonal_naive", "seasonal_naive_scale", "seasonality_test",
    "smape_terms",
]


# ----------------------------------------------------------------------------- point terms
def smape_terms(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """200 |y - y_hat| / (|y| + |y_hat|) elementwise, 0 where y = y_hat = 0."""
    denom = y.abs() + y_hat.abs()
    return torch.where(denom > 0, 200 * (y - y_hat).abs() / denom.clamp_min(1e-300), 0.0)


def _observed(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    return mask.expand_as(like) > 0


def seasonal_naive(insample_BLC: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """The seasonal naive forecast [B, H, C]: y_hat[L + h] = y[L - m + (h mod m)]."""
    L = insample_BLC.shape[1]
    if not 1 <= season <= L:
        raise UserError(f"season must be in [1, input steps = {L}], got {season}")
    idx = L - season + torch.arange(horizon, device=insample_BLC.device) % season
    return insample_BLC[:, idx]


def seasonal_naive_scale(
    insample_BLC: torch.Tensor, mask_BLC: torch.Tensor | None, season: int
) -> torch.Tensor:
    """MASE's scale [B, C]: mean |y_t - y_{t-m}| over pairs with both steps observed.

    NaN where a series has no such pair. M4 computes it over the whole history, so pass the
    whole observed history as the input part of an evaluation window.
    """
    diff = (insample_BLC[:, season:] - insample_BLC[:, :-season]).abs().double()
    both = _observed(mask_BLC, insample_BLC)
    both = both[:, season:] & both[:, :-season]
    count = both.sum(dim=1)
    total = torch.where(both, diff, 0.0).sum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), math.nan)


# --------------------------------------------------------------------------- accumulator
class MetricAccumulator:
    """Sums and counts of every metric in one float64 tensor: `state()` is all_reduce-able.

    `quantiles` are the levels CRPS averages over; `coverage` the central interval levels
    (0.8 -> [q0.1, q0.9]). `quantile_levels` is what `update` expects in `quantiles_BHCQ`
    (the union of both, sorted): get it from the loss with `loss.quantiles(y_hat, levels)`.
    """

    def __init__(
        self,
        quantiles: Sequence[float] = (),
        coverage: Sequence[float] = (),
        device: torch.device | str | None = None,
    ):
        for a in coverage:
            if not 0 < a < 1:
                raise UserError(f"coverage levels must be in (0, 1), got {a}")
        self.crps_levels = tuple(sorted(round(float(q), 10) for q in quantiles))
        self.coverage_levels = tuple(float(a) for a in coverage)
        ends = [round((1 - a) / 2, 10) for a in coverage]
        ends += [round((1 + a) / 2, 10) for a in coverage]
        self.quantile_levels = tuple(sorted(set(self.crps_levels) | set(ends)))
        self.keys = ["n", "abs_err", "sq_err", "smape", "mase_num", "mase_n"]
        if self.crps_levels:
            self.keys += ["crps_num", "abs_y"]
        self.keys += [f"cover_{a:g}" for a in self.coverage_levels]
        self._slot = {k: i for i, k in enumerate(self.keys)}
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64, device=device)

    # The trainer all_reduces this tensor in place (SUM) before compute().
    def state(self) -> torch.Tensor:
        return self.sums

    def load_state(self, sums: torch.Tensor) -> None:
        if sums.shape != self.sums.shape:
            raise UserError(f"metric state has {sums.numel()} sums, expected {len(self.keys)}")
        self.sums.copy_(sums)

    def merge(self, other: MetricAccumulator | torch.Tensor) -> MetricAccumulator:
        """Add another accumulator's sums (or a state tensor) into this one."""
        if isinstance(other, MetricAccumulator):
            if other.keys != self.keys:
                raise UserError("cannot merge metric accumulators built with different settings")
            other = other.sums
        self.sums += other.to(self.sums.device, torch.float64)
        return self

    def reset(self) -> None:
        self.sums.zero_()

    def update(
        self,
        y_hat_BHC: torch.Tensor,
        y_BHC: torch.Tensor,
        mask_BHC: torch.Tensor | None = None,
        *,
        mase_scale_BC: torch.Tensor | None = None,
        quantiles_BHCQ: torch.Tensor | None = None,
    ) -> None:
        y_hat, y = y_hat_BHC.detach().double(), y_BHC.detach().double()
        obs = _observed(mask_BHC, y)
        # where(), not a product with the mask: a NaN in a masked slot must not leak in.
        zero = y.new_zeros(())
        err = torch.where(obs, (y - y_hat).abs(), zero)
        parts = {
            "n": obs.sum(),
            "abs_err": err.sum(),
            "sq_err": err.square().sum(),
            "smape": torch.where(obs, smape_terms(y_hat, y), zero).sum(),
        }
        if mase_scale_BC is not None:
            scale_B1C = mase_scale_BC.detach().double().unsqueeze(1)
            ok = obs & torch.isfinite(scale_B1C) & (scale_B1C > 0)
            parts["mase_num"] = torch.where(ok, err / torch.where(ok, scale_B1C, 1.0), zero).sum()
            parts["mase_n"] = ok.sum()
        if self.crps_levels or self.coverage_levels:
            if quantiles_BHCQ is None:
                raise UserError(
                    "this accumulator tracks CRPS/coverage: pass quantiles_BHCQ at "
                    f"levels {self.quantile_levels}"
                )
            q = quantiles_BHCQ.detach().double()
            if q.shape[-1] != len(self.quantile_levels):
                raise UserError(
                    f"quantiles_BHCQ has {q.shape[-1]} levels, expected {self.quantile_levels}"
                )
            col = {lv: i for i, lv in enumerate(self.quantile_levels)}
            if self.crps_levels:
                idx = [col[lv] for lv in self.crps_levels]
                levels = torch.tensor(self.crps_levels, dtype=torch.float64, device=q.device)
                ql = pinball(q[..., idx], y, levels).mean(dim=-1)
                parts["crps_num"] = torch.where(obs, ql, zero).sum()
                parts["abs_y"] = torch.where(obs, y.abs(), zero).sum()
            for a in self.coverage_levels:
                lo = q[..., col[round((1 - a) / 2, 10)]]
                hi = q[..., col[round((1 + a) / 2, 10)]]
                parts[f"cover_{a:g}"] = (obs & (lo <= y) & (y <= hi)).sum()
        delta = torch.zeros_like(self.sums)
        for key, value in parts.items():
            delta[self._slot[key]] = value
        self.sums += delta.to(self.sums.device)

    def compute(self) -> dict[str, float]:
        s = dict(zip(self.keys, self.sums.tolist()))
        ratio = lambda a, b: a / b if b > 0 else math.nan  # noqa: E731
        out = {
            "mae": ratio(s["abs_err"], s["n"]),
            "mse": ratio(s["sq_err"], s["n"]),
            "smape": ratio(s["smape"], s["n"]),
            "mase": ratio(s["mase_num"], s["mase_n"]),
        }
        out["rmse"] = math.sqrt(out["mse"]) if s["n"] > 0 else math.nan
        if self.crps_levels:
            out["scaled_crps"] = 2 * ratio(s["crps_num"], s["abs_y"])
        for a in self.coverage_levels:
            out[f"coverage_{round(100 * a):d}"] = ratio(s[f"cover_{a:g}"], s["n"])
        return out


def evaluate(y_hat_BHC, y_BHC, mask_BHC=None, **kwargs) -> dict[str, float]:
    """One-shot metrics of a single batch (an accumulator updated once)."""
    acc = MetricAccumulator(
        quantiles=kwargs.pop("quantiles", ()), coverage=kwargs.pop("coverage", ())
    )
    acc.update(y_hat_BHC, y_BHC, mask_BHC, **kwargs)
    return acc.compute()


def scaled_crps(
    quantiles_BHCQ: torch.Tensor, y_BHC: torch.Tensor, levels: Sequence[float], mask_BHC=None
) -> float:
    """neuralforecast's scaled CRPS of quantile forecasts at `levels` (0 for a perfect one)."""
    order = sorted(range(len(levels)), key=lambda i: levels[i])
    q_BHCQ = quantiles_BHCQ[..., order]
    return evaluate(
        q_BHCQ[..., 0], y_BHC, mask_BHC, quantiles=levels, quantiles_BHCQ=q_BHCQ
    )["scaled_crps"]


def coverage(lo_BHC: torch.Tensor, hi_BHC: torch.Tensor, y_BHC: torch.Tensor, mask_BHC=None):
    """Share of observed points inside [lo, hi]."""
    obs = _observed(mask_BHC, y_BHC)
    inside = obs & (lo_BHC <= y_BHC) & (y_BHC <= hi_BHC)
    return (inside.sum() / obs.sum().clamp_min(1)).item()


def owa(smape: float, mase: float, smape_naive2: float, mase_naive2: float) -> float:
    """M4's overall weighted average of a method's sMAPE and MASE relative to Naive2."""
    return 0.5 * (smape / smape_naive2 + mase / mase_naive2)


# ------------------------------------------------------------------------- Naive2 (numpy)
def _acf(y: np.ndarray, max_lag: int) -> np.ndarray:
    """R's acf(y)$acf[2:(max_lag + 1)]: demeaned, normalised by the lag-0 sum."""
    d = y - y.mean()
    denom = float(d @ d)
    return np.array([float(d[k:] @ d[:-k]) / denom for k in range(1, max_lag + 1)])


def seasonality_test(y: np.ndarray, season: int) -> bool:
    """M4's test: |acf_m| > 1.645 * sqrt((1 + 2 * sum_{k<m} acf_k^2) / n).

    Like the R code, a series shorter than 3 m, or an m beyond R's default acf lag.max
    (floor(10 log10 n)), or a constant series, is not seasonal.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if season <= 1 or n < 3 * season:
        return False
    if season > min(int(np.floor(10 * np.log10(n))), n - 1) or np.all(y == y[0]):
        return False
    r = _acf(y, season)
    limit = 1.645 / math.sqrt(n) * math.sqrt(1 + 2 * float(np.sum(r[: season - 1] ** 2)))
    return bool(abs(r[season - 1]) > limit)


def seasonal_indices(y: np.ndarray, season: int) -> np.ndarray:
    """R's decompose(ts(y, frequency=m), "multiplicative")$seasonal, one index per step."""
    y = np.asarray(y, dtype=np.float64)
    n, m = len(y), season
    if n < 2 * m:
        raise UserError(f"decomposition needs at least 2 seasons ({2 * m} steps), got {n}")
    # Centred moving average: length m for odd m, the 2 x m average (m + 1 taps) for even m.
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    half = len(w) // 2
    trend = np.full(n, np.nan)
    trend[half : n - half] = np.convolve(y, w, mode="valid")
    ratio = np.full(-(-n // m) * m, np.nan)
    ratio[:n] = y / trend
    figure = np.nanmean(ratio.reshape(-1, m), axis=0)
    figure = figure / figure.mean()
    return figure[np.arange(n) % m]


def naive2(y: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """M4's Naive2 forecast [H] of one series' history `y` with seasonality `season`."""
    y = np.asarray(y, dtype=np.float64)
    if season > 1 and seasonality_test(y, season):
        si = seasonal_indices(y, season)
        out_si = si[len(y) - season + np.arange(horizon) % season]
        return y[-1] / si[-1] * out_si
    return np.full(horizon, y[-1])


def naive2_batch(
    insample_BLC: torch.Tensor, mask_BLC: torch.Tensor | None, horizon: int, season: int
) -> torch.Tensor:
    """Naive2 [B, H, C] of each window's observed input steps (one series at a time: it is
    a baseline computed once per dataset, and series histories differ in length)."""
    y = insample_BLC.detach().double().cpu().numpy()
    obs = _observed(mask_BLC, insample_BLC).cpu().numpy()
    B, _, C = y.shape
    out = np.zeros((B, horizon, C))
    for b in range(B):
        for c in range(C):
            series = y[b, obs[b, :, c], c]
            if len(series):
                out[b, :, c] = naive2(series, horizon, season)
    return torch.as_tensor(out, dtype=insample_BLC.dtype, device=insample_BLC.device)


# ------------------------------------------------------------- M4 scoring of whole series
BASELINES = ("naive1", "seasonal_naive", "naive2")


def _lag(n: int, season: int) -> int:
    """The season, or 1 where a history of n steps holds no pair a season apart."""
    return season if n > season else 1


def mase_scale(y: np.ndarray, season: int) -> float:
    """M4's MASE scale of one history: the in-sample MAE of the seasonal naive forecast,
    mean |y_t - y_{t-m}| over the whole history (non-finite values left out); m = 1 where
    the history is too short for m. NaN without a pair, 0 for a constant history."""
    # torch.tensor copies: y may be read-only memory (a pandas column)
    y_1L1 = torch.tensor(np.asarray(y, dtype=np.float64)).view(1, -1, 1)
    if y_1L1.shape[1] < 2:
        return math.nan
    lag = _lag(y_1L1.shape[1], season)
    return float(seasonal_naive_scale(y_1L1, torch.isfinite(y_1L1).double(), lag))


def baseline_forecasts(y: np.ndarray, horizon: int, season: int) -> dict[str, np.ndarray]:
    """Naive1 (the last value), seasonal naive (the last season repeated; Naive1 where the
    history is shorter than a season) and M4's Naive2 forecasts [H] of one history."""
    y = np.array(y, dtype=np.float64)  # a copy: torch needs writable memory
    y_1L1 = torch.from_numpy(y).view(1, -1, 1)
    lag = season if len(y) >= season else 1
    return {
        "naive1": np.full(horizon, y[-1]),
        "seasonal_naive": seasonal_naive(y_1L1, horizon, lag)[0, :, 0].numpy(),
        "naive2": naive2(y, horizon, season),
    }


def score_panel(
    forecast_NH: np.ndarray,
    truth_NH: np.ndarray,
    scale_N: np.ndarray,
    quantiles_NHQ: np.ndarray | None = None,
    levels: Sequence[float] = (),
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """M4's figures of N series forecast H steps each: (overall, per horizon step).

    Keys `smape`, `mase` (series without a positive finite scale left out), `mae`, `mse`,
    and with quantiles at `levels` (sorted) `crps` (the scaled CRPS) and `coverage_80` where
    0.1 and 0.9 are among the levels. Every series has H points, so the point means are
    M4's per-series means averaged over series.
    """
    def acc_for() -> MetricAccumulator:
        cover = (0.8,) if {0.1, 0.9} <= {round(q, 10) for q in levels} else ()
        return MetricAccumulator(quantiles=levels if quantiles_NHQ is not None else (),
                                 coverage=cover if quantiles_NHQ is not None else ())

    f = torch.tensor(np.asarray(forecast_NH, dtype=np.float64)).unsqueeze(-1)
    y = torch.tensor(np.asarray(truth_NH, dtype=np.float64)).unsqueeze(-1)
    scale_N1 = torch.tensor(np.asarray(scale_N, dtype=np.float64)).view(-1, 1)
    q = None
    if quantiles_NHQ is not None:
        q = torch.tensor(np.asarray(quantiles_NHQ, dtype=np.float64)).unsqueeze(2)

    def run(sl: slice) -> dict[str, float]:
        acc = acc_for()
        acc.update(f[:, sl], y[:, sl], mase_scale_BC=scale_N1,
                   quantiles_BHCQ=None if q is None else q[:, sl])
        out = acc.compute()
        out.pop("rmse")
        if "scaled_crps" in out:
            out["crps"] = out.pop("scaled_crps")
        return out

    overall = run(slice(None))
    steps = [run(slice(h, h + 1)) for h in range(f.shape[1])]
    return overall, {k: [s[k] for s in steps] for k in overall}
