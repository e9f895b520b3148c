"""The global window order: which window sits at each position of an epoch, and which
positions each rank takes.

An order maps `(epoch, positions) -> window ids`. It is a pure function of the seed, the
epoch, the store fingerprint and the settings (folded into `key`), never of the world size
or the number of workers, so every process computes the same order on its own and only the
positions it needs, in O(batch) time.

- `EpochOrder`: exhaustive epochs without replacement, shuffled with bounded locality. The
  windows `0..N-1` are cut into blocks of consecutive ids (the loader makes a block of the
  windows whose reads start in one Zarr chunk); the blocks are permuted, consecutive runs
  of `group_blocks` permuted blocks form a group, and windows are shuffled within each
  group. A batch thus reads at most a group's chunks, and a worker keeps reusing them for
  the group's many batches. Memory is O(n_blocks) for the block permutation plus one
  permutation of a group (`group_blocks` blocks of int32), never O(N).
- `SampledOrder`: with replacement, uniform over windows, uniform over series or weighted per
  series (O(n_series)). Draws come in fixed blocks of positions, each from its own generator.
- `EvalOrder`: positions in id order; positions past the end are padding (`valid=False`).

`rank_positions(batch, global_batch_size, rank, world_size)` is rank r's part of global
batch `batch`: a fixed slice, so the union of the ranks' parts is the global batch whatever
the world size.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from tsforge.errors import UserError

SAMPLE_BLOCK = 4096  # positions per generator in sampled mode; part of the order's definition


def generator(key: tuple[int, ...], *more: int) -> np.random.Generator:
    """A generator seeded by the order's key and further integers (epoch, group, block)."""
    return np.random.default_rng(np.random.SeedSequence([*key, *more]))


def rank_positions(batch: int, global_batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """Positions of rank `rank`'s part of global batch `batch` (int64)."""
    if global_batch_size % world_size:
        raise UserError(
            f"global batch size {global_batch_size} is not divisible by world size {world_size}: "
            f"choose a global batch size that is a multiple of {world_size}"
        )
    per_rank = global_batch_size // world_size
    start = batch * global_batch_size + rank * per_rank
    return np.arange(start, start + per_rank, dtype=np.int64)


def _runs(labels: np.ndarray):
    """(label, selector) for each distinct label; the common single-label case costs two
    reductions and selects everything."""
    if not len(labels):
        return []
    first, last = labels.min(), labels.max()
    if first == last:
        return [(int(first), slice(None))]
    return [(int(v), labels == v) for v in np.unique(labels)]


class EpochOrder:
    """Exhaustive epochs: each epoch is a permutation of all window ids (see module doc).

    `block_starts` [n_blocks + 1] cuts the ids 0..N-1 into blocks of consecutive ids
    (blocks may be empty); the loader makes one block per chunk of rows.
    """

    def __init__(self, block_starts: np.ndarray, group_blocks: int, key: tuple[int, ...]):
        if group_blocks < 1:
            raise UserError(f"shuffle_group_blocks must be >= 1, got {group_blocks}")
        self.block_starts = np.asarray(block_starts, dtype=np.int64)
        self.n_windows = int(self.block_starts[-1])
        self.n_blocks = len(self.block_starts) - 1
        self.group_blocks = int(group_blocks)
        self.key = tuple(key)
        self._layouts: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._groups: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    @staticmethod
    def uniform_blocks(n_windows: int, block_windows: int) -> np.ndarray:
        """Block starts for blocks of `block_windows` ids (the last one shorter)."""
        return np.append(np.arange(0, n_windows, max(1, block_windows)), n_windows)

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's block permutation and each permuted block's first position."""
        if epoch not in self._layouts:
            perm = generator(self.key, epoch).permutation(self.n_blocks)
            starts = np.zeros(self.n_blocks + 1, dtype=np.int64)
            np.cumsum(np.diff(self.block_starts)[perm], out=starts[1:])
            self._layouts[epoch] = (perm, starts)
            if len(self._layouts) > 2:
                self._layouts.popitem(last=False)
        return self._layouts[epoch]

    def _group_perm(self, epoch: int, group: int, size: int) -> np.ndarray:
        # A group's shuffle is drawn once per process and reused for its many batches.
        if (epoch, group) not in self._groups:
            perm = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64)
            generator(self.key, epoch, 1 + group).shuffle(perm)
            self._groups[(epoch, group)] = perm
            if len(self._groups) > 2:
                self._groups.popitem(last=False)
        return self._groups[(epoch, group)]

    def ids(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Window ids at `positions` (each in [0, N)) of epoch `epoch`."""
        positions = np.asarray(positions, dtype=np.int64)
        perm, starts = self._layout(epoch)
        G = self.group_blocks
        group = (np.searchsorted(starts, positions, side="right") - 1) // G
        out = np.empty_like(positions)
        for g, sel in _runs(group):  # a batch spans one group, rarely two
            b0, b1 = g * G, min(g * G + G, self.n_blocks)
            g_starts = starts[b0 : b1 + 1] - starts[b0]
            q = self._group_perm(epoch, g, int(g_starts[-1]))[positions[sel] - starts[b0]]
            j = np.searchsorted(g_starts, q, side="right") - 1  # skips empty blocks
            out[sel] = self.block_starts[perm[b0 + j]] + (q - g_starts[j])
        return out


class SampledOrder:
    """Sampling with replacement: position p's window is drawn by the generator of block
    p // SAMPLE_BLOCK, so any position is computed without the ones before it."""

    def __init__(
        self,
        offsets: np.ndarray,
        key: tuple[int, ...],
        *,
        sample_by: str = "window",
        series_weights: np.ndarray | None = None,
    ):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.counts = np.diff(self.offsets)
        self.n_windows = int(self.offsets[-1])
        self.key = tuple(key)
        self.sample_by = sample_by
        if self.n_windows == 0:
            raise UserError("the split holds no windows to sample: lower input_size or horizon")
        if sample_by == "window":
            if series_weights is not None:
                raise UserError("series_weights need sample_by='series'")
            self.cdf = None
        elif sample_by == "series":
            n = len(self.counts)
            w = np.ones(n) if series_weights is None else np.asarray(series_weights, np.float64)
            if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise UserError(
                    f"series_weights must be {n} finite, non-negative numbers (one per series), "
                    f"got shape {w.shape}"
                )
            self.cdf = np.cumsum(np.where(self.counts > 0, w, 0.0))
            if not self.cdf[-1] > 0:
                raise UserError("series_weights put no weight on a series that has windows")
        else:
            raise UserError(f"sample_by '{sample_by}' is not one of window, series")
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _draws(self, epoch: int, block: int) -> np.ndarray:
        if (epoch, block) not in self._cache:
            rng = generator(self.key, epoch, block)
            if self.cdf is None:
                ids = rng.integers(0, self.n_windows, SAMPLE_BLOCK, dtype=np.int64)
            else:
                u = rng.random((2, SAMPLE_BLOCK))
                series = np.searchsorted(self.cdf, u[0] * self.cdf[-1], side="right")
                series = np.minimum(series, len(self.counts) - 1)
                within = np.minimum((u[1] * self.counts[series]).astype(np.int64),
                                    self.counts[series] - 1)
                ids = self.offsets[series] + within
            self._cache[(epoch, block)] = ids
            if len(self._cache) > 4:
                self._cache.popitem(last=False)
        return self._cache[(epoch, block)]

    def ids(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        block = positions // SAMPLE_BLOCK
        out = np.empty_like(positions)
        for b, sel in _runs(block):
            out[sel] = self._draws(epoch, b)[positions[sel] - b * SAMPLE_BLOCK]
        return out


class EvalOrder:
    """Windows in id order; positions at or past N are padding."""

    def __init__(self, n_windows: int):
        self.n_windows = int(n_windows)

    def ids(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return np.where(positions < self.n_windows, positions, 0)
