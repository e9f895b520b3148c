"""Window index maths: how many windows each series holds, and where window `i` lies.

Legend: `n` series, `N` windows, `L` input_size, `H` horizon, `W = L + H`, `Cw` windows per
forecast start (the number of targets for univariate windows, 1 for multivariate ones).

A window of series `s` with forecast start `t` (a row number within the series) reads input
rows `[t-L, t)` and forecast rows `[t, t+H)`. For a split's forecast range `[lo, hi)` (from
`splits.resolve`) the valid starts are

    t_first = max(lo, L - pad),  t_first <= t <= hi - H,  t = t_first + k * stride

with `pad = L - min_input_size` (0 unless the loader left-pads short inputs). Window counts
per series follow from these bounds, a cumulative sum gives per-series offsets, and a global
window id maps to `(series, channel, t)` with one `np.searchsorted` over those offsets.
Ids run series-major, then `t`, then channel fastest, so consecutive ids share rows: a run
of consecutive ids is a run of consecutive rows of one series (what locality-aware shuffling
and block reads rely on). Memory is O(n): no per-window array is ever built.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tsforge.errors import UserError


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """The shape of a training window.

    input_size      L, rows of history the model sees
    horizon         H, rows to forecast
    stride          distance between consecutive forecast starts of one series
    min_input_size  fewest real input rows; below `input_size` the input is left-padded
                    (masked) so short series still yield windows. None means `input_size`.
    multivariate    True: one window holds all target channels; False: each target channel
                    is its own univariate series (window id -> (series, channel, t)).
    """

    input_size: int
    horizon: int
    stride: int = 1
    min_input_size: int | None = None
    multivariate: bool = False

    def __post_init__(self):
        for name in ("input_size", "horizon", "stride"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        m = self.min_input_size
        if m is not None and not (isinstance(m, (int, np.integer)) and 1 <= m <= self.input_size):
            raise UserError(
                f"min_input_size must be between 1 and input_size={self.input_size}, got {m!r}"
            )

    @property
    def window_size(self) -> int:
        """W = L + H rows."""
        return self.input_size + self.horizon

    @property
    def pad(self) -> int:
        """Most input rows that may be padding (L - min_input_size)."""
        if self.min_input_size is None:
            return 0
        return self.input_size - self.min_input_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class WindowIndex:
    """Window counts and id <-> (series, channel, t) maps for one split of one store.

    `lo`, `hi` are each series' forecast range [lo, hi) (int64, shape [n]); `n_targets` is the
    number of target channels. `drop_last_of=N` keeps the first multiple of N forecast starts
    of each series and drops the rest, as the published long-horizon code did by evaluating
    with `drop_last=True` batches of N time steps; 0 keeps every window. Everything held is O(n).
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, spec: WindowSpec, n_targets: int,
                 drop_last_of: int = 0):  # fmt: skip
        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError(f"lo and hi must be 1-D of one length, got {lo.shape}, {hi.shape}")
        self.spec = spec
        self.n_targets = int(n_targets)
        self.per_start = 1 if spec.multivariate else self.n_targets  # Cw
        self.t_first = np.maximum(lo, spec.input_size - spec.pad)
        t_last = hi - spec.horizon
        n_starts = np.where(
            t_last >= self.t_first, (t_last - self.t_first) // spec.stride + 1, 0
        ).astype(np.int64)
        if drop_last_of > 0:  # the legacy drop-last: whole batches of forecast starts only
            n_starts -= n_starts % drop_last_of
        self.counts = n_starts * self.per_start
        self.offsets = np.zeros(len(lo) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.offsets[1:])

    @property
    def n_series(self) -> int:
        return len(self.counts)

    @property
    def n_windows(self) -> int:
        return int(self.offsets[-1])

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series, channel, t) of window ids (int64 arrays); channel is -1 for multivariate.

        Series with no windows repeat an offset; `side="right"` skips past them to the
        series that owns the id.
        """
        ids = np.asarray(ids, dtype=np.int64)
        series = np.searchsorted(self.offsets, ids, side="right") - 1
        local = ids - self.offsets[series]
        if self.per_start == 1:
            k = local
            channel = np.full_like(ids, 0 if not self.spec.multivariate else -1)
        else:
            k, channel = np.divmod(local, self.per_start)
        t = self.t_first[series] + k * self.spec.stride
        return series, channel, t

    def first_ids_at_rows(self, indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each global store row r, the first window id whose reads start at or after r.

        A window reads from row `indptr[s] + max(t - L, 0)` on (padded windows from the
        series' start). Ids are in row order, so the windows whose reads start in rows
        [r0, r1) are the ids [first_ids_at_rows(r0), first_ids_at_rows(r1)): with chunk
        borders as rows, that cuts the ids into one block per chunk.
        """
        rows = np.asarray(rows, dtype=np.int64)
        indptr = np.asarray(indptr, dtype=np.int64)
        s = np.clip(np.searchsorted(indptr, rows, side="right") - 1, 0, self.n_series - 1)
        local = rows - indptr[s]
        # windows k with max(t_k - L, 0) < local, t_k = t_first + k * stride
        reach = local + self.spec.input_size - self.t_first[s]
        before = np.where(local > 0, -(-reach // self.spec.stride), 0)
        before = np.clip(before, 0, self.counts[s] // self.per_start)
        return np.where(rows >= indptr[-1], self.n_windows,
                        self.offsets[s] + before * self.per_start)

    def window_id(self, series: np.ndarray, channel: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The inverse of `locate` (for checks and reports)."""
        series = np.asarray(series, dtype=np.int64)
        k = (np.asarray(t, dtype=np.int64) - self.t_first[series]) // self.spec.stride
        c = np.maximum(np.asarray(channel, dtype=np.int64), 0)
        return self.offsets[series] + k * self.per_start + c
