"""Target scalers: per window or per series; standard, robust or none; always invertible.

Legend: `B` windows, `L` input rows, `C` target channels of a window, `n` series.

A scaler gives each window a `loc` and a `scale` of shape [B, 1, C]; the loader puts
`(y - loc) / scale` in the batch together with `loc` and `scale`, so forecasts return to the
data's units with `inverse(y_hat, loc, scale)`.

- `scaling="standard"`: mean / standard deviation; `"robust"`: median / interquartile range;
  `"none"`: loc 0, scale 1.
- `scale_by="window"`: statistics of each window's observed (mask 1) input rows
  (`window_stats`), computed in the batch.
- `scale_by="series"`: statistics of each series' TRAIN rows only (`fit_series`), fitted once
  by a streaming pass over the store's chunks. Memory is O(n * C) for standard scaling; robust
  scaling also holds one series' train rows at a time, subsampled to at most
  `ROBUST_MAX_ROWS` rows, so a huge series never needs all its rows in memory.

A scale that is not finite or is negligible next to its loc (a constant input) becomes 1,
so scaling never divides by zero and stays invertible.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from tsforge.errors import UserError

METHODS = ("standard", "robust", "none")
SCALE_BY = ("window", "series")
ROBUST_MAX_ROWS = 1 << 20


def check(method: str, scale_by: str) -> None:
    if method not in METHODS:
        raise UserError(f"scaling '{method}' is not one of {', '.join(METHODS)}")
    if scale_by not in SCALE_BY:
        raise UserError(f"scale_by '{scale_by}' is not one of {', '.join(SCALE_BY)}")


def safe_scale(loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scale with non-finite or negligible entries replaced by 1 (float32)."""
    bad = ~(scale > np.maximum(np.abs(loc) * 1e-6, 1e-12))
    return np.where(bad, 1.0, scale).astype(np.float32)


def window_stats(
    y_BLC: np.ndarray, mask_BLC: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """loc, scale [B, 1, C] of each window's observed input rows.

    `y_BLC` must hold 0 where `mask_BLC` is 0 (the loader's convention), which lets plain sums
    stand in for masked sums. Windows with no observed row get loc 0, scale 1.
    """
    B, _, C = y_BLC.shape
    if method == "none":
        return np.zeros((B, 1, C), np.float32), np.ones((B, 1, C), np.float32)
    if method == "standard":
        # einsum sums over L several times faster than ndarray.sum(axis=1) here
        count = np.einsum("blc->bc", mask_BLC)[:, None, :]
        n = np.maximum(count, 1.0)
        loc = np.einsum("blc->bc", y_BLC)[:, None, :] / n
        dev = (y_BLC - loc) * mask_BLC
        scale = np.sqrt(np.einsum("blc,blc->bc", dev, dev)[:, None, :] / n)
        loc = np.where(count > 0, loc, 0.0).astype(np.float32)
        return loc, safe_scale(loc, scale)
    if method == "robust":
        count = np.einsum("blc->bc", mask_BLC)[:, None, :]
        q25, q50, q75 = _masked_quantiles(y_BLC, mask_BLC, count, (0.25, 0.5, 0.75))
        loc = np.where(count > 0, q50, 0.0).astype(np.float32)
        return loc, safe_scale(loc, np.where(count > 0, q75 - q25, 1.0))
    raise UserError(f"scaling '{method}' is not one of {', '.join(METHODS)}")


def _masked_quantiles(y_BLC, mask_BLC, count_B1C, qs) -> list[np.ndarray]:
    """Quantiles [B, 1, C] over L of the observed entries (numpy's "linear" method).

    One sort with masked entries pushed to the end, then two gathers per quantile: many
    times faster than np.nanquantile over a batch.
    """
    x = np.where(mask_BLC > 0, y_BLC, np.inf)
    x.sort(axis=1)
    last = np.maximum(count_B1C.astype(np.int64) - 1, 0)
    out = []
    for q in qs:
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        a = np.take_along_axis(x, lo, axis=1)
        b = np.take_along_axis(x, np.minimum(lo + 1, last), axis=1)
        with np.errstate(invalid="ignore"):  # inf - inf where nothing is observed
            out.append(a + (b - a) * (pos - lo))
    return out


def apply(y: np.ndarray, loc: np.ndarray, scale: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(y - loc) / scale in place (y is float32), kept at 0 where `mask` is 0 (None: no
    masked entry)."""
    y -= loc
    y /= scale
    if mask is not None:
        y *= mask
    return y


def inverse(y: torch.Tensor | np.ndarray, loc, scale):
    """Back to the data's units: y * scale + loc (loc / scale broadcast, e.g. [B, 1, C])."""
    return y * scale + loc


@contextlib.contextmanager
def _quiet():
    """All-NaN slices are expected (windows or series with no observed row); their
    warnings are noise."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def fit_series(
    store, train_hi: np.ndarray, columns: list[int], method: str
) -> tuple[np.ndarray, np.ndarray]:
    """loc, scale [n, C] of each series' train rows `[0, train_hi[s])` in `columns`.

    One streaming pass over the chunks that hold train rows; series with no finite train
    value get loc 0, scale 1.
    """
    n, C = store.n_series, len(columns)
    if method == "none":
        return np.zeros((n, C), np.float32), np.ones((n, C), np.float32)
    indptr = store.indptr
    lo_row = indptr[:-1]
    hi_row = indptr[:-1] + np.minimum(np.asarray(train_hi, np.int64), np.diff(indptr))
    acc = _StandardAcc(n, C) if method == "standard" else _RobustAcc(n, C, lo_row, hi_row)
    R = store.chunk_rows
    for k in range(-(-store.n_timesteps // R)):
        a, b = k * R, min((k + 1) * R, store.n_timesteps)
        s0 = int(np.searchsorted(indptr, a, side="right")) - 1
        s1 = int(np.searchsorted(indptr, b - 1, side="right")) - 1
        seg_lo = np.maximum(lo_row[s0 : s1 + 1], a)
        seg_hi = np.minimum(hi_row[s0 : s1 + 1], b)
        keep = seg_hi > seg_lo
        if not keep.any():
            continue  # this chunk holds no train row
        chunk = store.values[a:b][:, columns]
        series = np.arange(s0, s1 + 1)[keep]
        acc.add(chunk, a, series, seg_lo[keep] - a, seg_hi[keep] - a)
    loc, scale = acc.result()
    loc = np.where(np.isfinite(loc), loc, 0.0).astype(np.float32)
    return loc, safe_scale(loc, scale)


class _StandardAcc:
    """Count / mean / sum of squared deviations, merged chunk by chunk (Chan et al.), float64."""

    def __init__(self, n: int, C: int):
        self.count = np.zeros((n, C))
        self.mean = np.zeros((n, C))
        self.m2 = np.zeros((n, C))

    def add(self, chunk_RC, chunk_start, series, lo, hi) -> None:
        rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])
        x = chunk_RC[rows].astype(np.float64)
        finite = np.isfinite(x)
        x = np.where(finite, x, 0.0)
        starts = np.concatenate([[0], np.cumsum(hi - lo)[:-1]])
        n_b = np.add.reduceat(finite, starts, axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.add.reduceat(x, starts, axis=0) / n_b
            dev = np.where(finite, x - np.repeat(np.nan_to_num(mean_b), hi - lo, axis=0), 0.0)
            m2_b = np.add.reduceat(dev * dev, starts, axis=0)
            n_a, mean_a = self.count[series], self.mean[series]
            total = n_a + n_b
            delta = np.nan_to_num(mean_b) - mean_a
            share = np.where(total > 0, n_b / total, 0.0)
            self.mean[series] = mean_a + delta * share
            self.m2[series] += m2_b + delta * delta * n_a * share
            self.count[series] = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2 / self.count)
        loc = np.where(self.count > 0, self.mean, 0.0)
        return loc, np.where(self.count > 0, std, 1.0)


class _RobustAcc:
    """Median / IQR per series: a series' train rows (every `step`-th for long series) are
    gathered across chunks and summarised as soon as its last train row has been read."""

    def __init__(self, n: int, C: int, lo_row: np.ndarray, hi_row: np.ndarray):
        self.loc = np.zeros((n, C))
        self.scale = np.ones((n, C))
        self.lo_row, self.hi_row = lo_row, hi_row
        self.step = np.maximum(1, -(-(hi_row - lo_row) // ROBUST_MAX_ROWS))
        self.parts: dict[int, list[np.ndarray]] = {}

    def add(self, chunk_RC, chunk_start, series, lo, hi) -> None:
        for s, a, b in zip(series.tolist(), lo.tolist(), hi.tolist()):
            step = int(self.step[s])
            first = a + (-(a + chunk_start - int(self.lo_row[s])) % step)  # keep the row grid
            self.parts.setdefault(s, []).append(chunk_RC[first:b:step])
            if chunk_start + b == self.hi_row[s]:  # the series' last train row was read
                self._finish(s)

    def _finish(self, s: int) -> None:
        x = np.concatenate(self.parts.pop(s)).astype(np.float64)
        x[~np.isfinite(x)] = np.nan
        with _quiet():
            q25, q50, q75 = np.nanquantile(x, [0.25, 0.5, 0.75], axis=0)
        ok = np.isfinite(q50)
        self.loc[s] = np.where(ok, q50, 0.0)
        self.scale[s] = np.where(ok, q75 - q25, 1.0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        for s in list(self.parts):
            self._finish(s)
        return self.loc, self.scale
