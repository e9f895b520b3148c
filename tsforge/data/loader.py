"""The streaming window loader: this rank's batches of windows from a store.

    store = Store("data.zarr")
    spec = WindowSpec(input_size=96, horizon=96)
    train = WindowLoader(store, spec, global_batch_size=1024, rank=rank, world_size=world,
                         seed=0, num_workers=2)
    for batch in train:            # one epoch; the next `for` continues with the next epoch
        ...
    state = train.state_dict()     # a handful of integers, saved with the checkpoint
    val = WindowLoader(store, spec, split="val", global_batch_size=1024, rank=rank,
                       world_size=world)  # ordered, every window once across ranks

API (typed arguments, no config objects):

    WindowSpec(input_size, horizon, stride=1, min_input_size=None, multivariate=False)
    WindowLoader(store, spec, *, split="train", split_spec=None, mode=None,
                 global_batch_size=1024, rank=0, world_size=1, seed=0, num_steps=None,
                 sample_by="window", series_weights=None, shuffle_group_blocks=16,
                 scaling="standard", scale_by="window", series_stats=None, num_workers=0,
                 cache_mb=256, pin_memory=False)
      iter(loader) -> batches (dicts of tensors); len(loader) = batches per epoch
      .n_windows  .batches_per_epoch  .epoch  .index (windows.WindowIndex)
      .state_dict() -> dict   .load_state_dict(state)
    train_series_stats(store, split_spec, scaling) -> (loc, scale) [n_series, Cy] of the
      train rows of each series, the statistics of scale_by="series"
    scaling.inverse(y, loc, scale) -> y in the data's units

Legend: `B` windows in this rank's part of a batch, `L` input_size, `H` horizon,
`W = L + H`, `Cy` target channels of a window (1 univariate), `Ch` historical covariates,
`Cf` future-known covariates, `S` static covariates, `R` rows of a Zarr chunk.

A batch is a dict of tensors:

    insample_y [B, L, Cy] float32    outsample_y [B, H, Cy] float32   (scaled targets)
    insample_mask [B, L, Cy] float32 outsample_mask [B, H, Cy] float32 (0: pad or missing)
    hist_exog [B, L, Ch]  futr_exog [B, W, Cf]  stat_exog [B, S]       (float32, NaN -> 0)
    loc, scale [B, 1, Cy] float32    (y = scaling.inverse(y_scaled, loc, scale))
    series, channel, t [B] int64     (channel -1 for multivariate; t = forecast start row)
    valid [B] bool                   (False for the pads of an evaluation's last batch)

Modes (`mode=`):
- "epoch" (default for split="train"): exhaustive epochs without replacement, shuffled
  with bounded locality (order.EpochOrder); the last partial global batch is dropped.
- "sampled": `num_steps` batches per epoch drawn with replacement, uniform over windows
  (`sample_by="window"`), over series (`"series"`), or by `series_weights`.
- "eval" (default for val/test): windows in order, each exactly once across ranks; the last
  global batch is padded with masked pads (`valid=False`).

Every rank gets `len(loader)` batches. Global batch k is positions [k*G, (k+1)*G) of an order
that depends only on (seed, epoch, store fingerprint, settings); rank r takes the r-th of
`world_size` equal parts. So batches do not depend on the world size (at the same global
batch size) nor on `num_workers`: a worker builds whole batches (a map-style dataset indexed
by (epoch, batch) with `batch_size=None`), each a pure function of its index.

State: `state_dict()` is {epoch, batches_consumed, seed, fingerprint, settings_hash};
`load_state_dict()` continues with exactly the batches an uninterrupted run would have seen
(with any num_workers / world size), refusing a state of another store or other settings.

Reading: each process keeps an arena of decoded chunk "slots" (at most `cache_mb` per
process, LRU). Slot j holds chunk k's R rows plus the next W-1 rows, so every window whose
reads start in chunk k lies inside one slot, and a batch is cut from the arena with one
strided gather per array (numpy fancy indexing of a sliding-window view), never one Zarr
read per window. In epoch mode a shuffle block is exactly the windows that start in one
chunk, so a group's many batches share `shuffle_group_blocks` slots: `cache_mb` should hold
at least that many chunks (otherwise batches are split by chunk, correct but slower).
Workers hand whole batches to the main process through a ring of shared-memory slabs made
once (see "worker transport" below), not a fresh shared segment per tensor.
Windows of series shorter than L (`min_input_size`) read from the series' first row and
are shifted right; their leading pads are masked. Memory: the arena, one group's
permutation and O(n_series), never O(n_windows).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided

from tsforge.data import scaling as scaling_mod
from tsforge.data import splits as splits_mod
from tsforge.data.order import EpochOrder, EvalOrder, SampledOrder, rank_positions
from tsforge.data.store import Store
from tsforge.data.windows import WindowIndex, WindowSpec
from tsforge.errors import UserError

__all__ = ["WindowLoader", "WindowSpec", "train_series_stats"]

MODES = ("epoch", "sampled", "eval")
STATE_KEYS = ("epoch", "batches_consumed", "seed", "fingerprint", "settings_hash")


class _ChunkArena:
    """Decoded chunks with their W-1 row margin, in fixed slots of one array, LRU-evicted."""

    def __init__(self, values, n_rows: int, chunk_rows: int, window_rows: int, cache_bytes: int):
        self.values = values
        self.n_rows, self.R, self.C = n_rows, chunk_rows, values.shape[1]
        self.slot_rows = chunk_rows + window_rows - 1
        n_chunks = max(1, -(-n_rows // chunk_rows))
        slot_bytes = self.slot_rows * self.C * 4
        self.n_slots = int(max(2, min(n_chunks, cache_bytes // slot_bytes)))
        # np.empty only reserves address space: pages are committed as slots fill
        self.data = np.empty((self.n_slots * self.slot_rows, self.C), dtype=np.float32)
        self.slot_of_chunk = np.full(n_chunks, -1, dtype=np.int64)
        self.chunk_of_slot = np.full(self.n_slots, -1, dtype=np.int64)
        self.last_use = np.zeros(self.n_slots, dtype=np.int64)
        self.tick = 0
        self._views: dict[tuple, np.ndarray] = {}

    def slots(self, chunks: np.ndarray) -> np.ndarray | None:
        """Slot of each chunk, reading the missing ones; None if they do not all fit at once."""
        self.tick += 1
        slot = self.slot_of_chunk[chunks]
        hit = slot >= 0
        self.last_use[slot[hit]] = self.tick  # protect this batch's slots from eviction
        if not hit.all():
            missing = np.unique(chunks[~hit])
            free = np.flatnonzero(self.last_use < self.tick)
            if len(missing) > len(free):
                return None
            victims = free[np.argsort(self.last_use[free], kind="stable")[: len(missing)]]
            for k, j in zip(missing.tolist(), victims.tolist()):
                self._fill(int(j), int(k))
            slot = self.slot_of_chunk[chunks]
            self.last_use[slot] = self.tick
        return slot

    def _fill(self, j: int, k: int) -> None:
        old = self.chunk_of_slot[j]
        if old >= 0:
            self.slot_of_chunk[old] = -1
        a = k * self.R
        rows = self.values[a : min(a + self.slot_rows, self.n_rows)]
        dst = self.data[j * self.slot_rows : (j + 1) * self.slot_rows]
        dst[: len(rows)] = rows
        dst[len(rows) :] = np.nan  # past the store's end: reads there are masked anyway
        self.slot_of_chunk[k], self.chunk_of_slot[j] = j, k

    def windows(self, col0: int, n_cols: int, n: int) -> np.ndarray:
        """View [rows-n+1, n, n_cols]: item i is arena rows i..i+n-1, columns col0..+n_cols."""
        key = ("w", col0, n_cols, n)
        if key not in self._views:
            rows = len(self.data) - n + 1
            s = self.data.strides[0]
            flat = self.data.reshape(-1)[col0:]
            self._views[key] = as_strided(flat, (rows, n, n_cols), (s, s, 4), writeable=False)
        return self._views[key]

    def column_windows(self, n: int) -> np.ndarray:
        """View [(rows-n+1)*C, n]: item i*C + c is column c of arena rows i..i+n-1."""
        key = ("c", n)
        if key not in self._views:
            items = (len(self.data) - n + 1) * self.C
            flat = self.data.reshape(-1)
            self._views[key] = as_strided(flat, (items, n), (4, self.data.strides[0]),
                                          writeable=False)
        return self._views[key]


class _Batches(torch.utils.data.Dataset):
    """Map-style dataset: item (epoch, batch) is this rank's part of that global batch.

    Picklable for spawned workers: the store and the arena are reopened lazily per process.
    """

    def __init__(self, store: Store, loader: WindowLoader, order, cache_bytes: int):
        self.path, self.fingerprint = store.path, store.fingerprint
        self.index, self.order, self.cache_bytes = loader.index, order, cache_bytes
        self.spec, self.mode = loader.spec, loader.mode
        self.n_batches = loader.batches_per_epoch
        self.G, self.rank, self.world = loader.global_batch_size, loader.rank, loader.world_size
        self.indptr = store.indptr
        self.static = np.ascontiguousarray(store.static, dtype=np.float32)
        roles = store.roles
        self.Ct, self.Ch, self.Cf = len(roles.target), len(roles.hist_exog), len(roles.futr_exog)
        self.scaling, self.scale_by = loader.scaling, loader.scale_by
        self.series_loc, self.series_scale = loader._series_loc, loader._series_scale
        self._store: Store | None = store
        self._arena: _ChunkArena | None = None
        self.slabs: torch.Tensor | None = None  # shared batch buffers, made with the workers
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_arena": None, "_pid": None}

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[int | torch.Tensor, tuple, int]:
        """In a DataLoader worker: batch (epoch, batch) written into shared slab `slot`, as
        (slot, layout, bytes); a batch that does not fit goes in a buffer of its own."""
        epoch, batch, slot = item
        out = self.build(epoch, batch)
        layout, nbytes = _layout(out)
        if self.slabs is not None and nbytes <= self.slabs.shape[1]:
            _pack_into(self.slabs[slot], out, layout)
            return slot, layout, nbytes
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        _pack_into(buffer, out, layout)
        return buffer, layout, nbytes

    def batch_nbytes(self) -> int:
        """Bytes of one packed batch (for sizing the slabs)."""
        B, L, H = self.G // self.world, self.spec.input_size, self.spec.horizon
        Cy = self.Ct if self.spec.multivariate else 1
        f32 = [B * L * Cy] * 2 + [B * H * Cy] * 2 + [B * L * self.Ch, B * (L + H) * self.Cf,
                                                     B * self.static.shape[1], B * Cy, B * Cy]
        sizes = [4 * n for n in f32] + [8 * B] * 3 + [B]
        return sum(-(-n // 8) * 8 for n in sizes)

    def arena(self) -> _ChunkArena:
        if self._arena is None or self._pid != os.getpid():
            if self._store is None or self._pid != os.getpid():
                self._store = Store(self.path)
                if self._store.fingerprint != self.fingerprint:
                    raise UserError(f"store {self.path} changed while being read: restart the run")
            s = self._store
            self._arena = _ChunkArena(s.values, s.n_timesteps, s.chunk_rows,
                                      self.spec.window_size, self.cache_bytes)
            self._pid = os.getpid()
        return self._arena

    def build(self, epoch: int, batch: int) -> dict[str, torch.Tensor]:
        positions = rank_positions(batch, self.G, self.rank, self.world)
        ids = self.order.ids(epoch, positions)
        valid = positions < self.index.n_windows if self.mode == "eval" else None
        return self.gather(*self.index.locate(ids), valid)

    # -- reading ------------------------------------------------------------------------
    def _read(self, read_row, out_shift, channel) -> tuple[np.ndarray, ...]:
        """Raw (unmasked, unscaled) arrays of windows whose reads start at `read_row`."""
        arena = self.arena()
        chunk = read_row // arena.R
        slot = arena.slots(chunk)
        if slot is None:  # more chunks than slots: halve the batch by chunk and retry
            if len(read_row) == 1:
                raise UserError("cache_mb is too small to hold one chunk: raise cache_mb")
            order = np.argsort(chunk, kind="stable")
            half = len(order) // 2
            parts = [self._read(read_row[o], out_shift[o], channel[o])
                     for o in (order[:half], order[half:])]
            inverse = np.argsort(order, kind="stable")
            # hist / futr are None in both halves when the store has no such covariates
            return tuple(None if p[0] is None else np.concatenate(p)[inverse]
                         for p in zip(*parts))  # fmt: skip
        L, H, W = self.spec.input_size, self.spec.horizon, self.spec.window_size
        base = slot * arena.slot_rows + (read_row - chunk * arena.R)  # arena row of 1st read
        out_base = base + out_shift
        if self.spec.multivariate:
            y_in = arena.windows(0, self.Ct, L)[base]
            y_out = arena.windows(0, self.Ct, H)[out_base]
        else:
            C = arena.C
            y_in = arena.column_windows(L)[base * C + channel][:, :, None]
            y_out = arena.column_windows(H)[out_base * C + channel][:, :, None]
        hist = arena.windows(self.Ct, self.Ch, L)[base] if self.Ch else None
        futr = arena.windows(self.Ct + self.Ch, self.Cf, W)[base] if self.Cf else None
        return y_in, y_out, hist, futr

    def gather(self, series, channel, t, valid=None) -> dict[str, torch.Tensor]:
        """The batch of windows (series, channel, t); `valid` False marks pads."""
        L, W = self.spec.input_size, self.spec.window_size
        B = len(series)
        row0 = self.indptr[series]
        in_start = row0 + t - L
        read_row = np.maximum(in_start, row0)  # padded windows read from the series' start
        shift = read_row - in_start
        y_in, y_out, hist, futr = self._read(read_row, L - shift, np.maximum(channel, 0))
        if hist is None:
            hist = np.zeros((B, L, 0), np.float32)
        if futr is None:
            futr = np.zeros((B, W, 0), np.float32)
        padded = np.flatnonzero(shift)
        if len(padded):  # rare: only the first windows of series shorter than L
            for x in (y_in, hist, futr):
                _shift_right(x, padded, shift[padded])
        if valid is not None and not valid.all():
            for x in (y_in, y_out, hist, futr):
                x[~valid] = np.nan
        (m_in, in_full), (m_out, out_full) = _mask(y_in), _mask(y_out)
        for x in (hist, futr):
            if not np.isfinite(x).all():
                x[~np.isfinite(x)] = 0.0
        loc, scale = self._scaling(y_in, m_in, series, channel)
        if self.scaling != "none":
            scaling_mod.apply(y_in, loc, scale, None if in_full else m_in)
            scaling_mod.apply(y_out, loc, scale, None if out_full else m_out)
        batch = {
            "insample_y": y_in, "insample_mask": m_in,
            "outsample_y": y_out, "outsample_mask": m_out,
            "hist_exog": hist, "futr_exog": futr, "stat_exog": self.static[series],
            "loc": loc, "scale": scale,
            "series": series, "channel": channel, "t": t,
            "valid": np.ones(B, bool) if valid is None else valid,
        }
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def _scaling(self, y_in, m_in, series, channel):
        if self.scale_by == "window" or self.scaling == "none":
            return scaling_mod.window_stats(y_in, m_in, self.scaling)
        at = series if self.spec.multivariate else (series, np.maximum(channel, 0))
        loc, scale = self.series_loc[at], self.series_scale[at]  # [B, Cy] or [B]
        shape = (len(series), 1, -1)
        return loc.reshape(shape), scale.reshape(shape)


def _shift_right(x_BNC: np.ndarray, rows: np.ndarray, shift: np.ndarray) -> None:
    """Move rows' windows right by `shift` steps (in place), NaN in front (masked later)."""
    src = np.arange(x_BNC.shape[1])[None, :] - shift[:, None]
    moved = np.take_along_axis(x_BNC[rows], np.maximum(src, 0)[:, :, None], axis=1)
    moved[src < 0] = np.nan
    x_BNC[rows] = moved


def _mask(y: np.ndarray) -> tuple[np.ndarray, bool]:
    """(1.0 where y is finite, whether all is); non-finite y set to 0 in place."""
    finite = np.isfinite(y)
    full = bool(finite.all())
    if not full:
        np.copyto(y, 0.0, where=~finite)
    return finite.astype(np.float32), full


# -- worker transport -------------------------------------------------------------------
# A DataLoader worker's tensors reach the main process through shared memory: a new segment
# per tensor storage, faulted in page by page on both sides. Measured here that cost several
# times the batch's build, so workers write each batch into one of a ring of shared "slabs"
# made once, and send only (slot, layout, bytes); the main process copies the batch out
# (one memcpy, into pinned memory when asked). The DataLoader keeps at most
# PREFETCH * num_workers batches in flight, so a ring of PREFETCH * num_workers + 2 slabs
# never overwrites a batch before it is copied out.
PREFETCH = 2


def _layout(batch: dict[str, torch.Tensor]) -> tuple[tuple, int]:
    """((key, dtype, shape, byte offset), ...) of a packed batch, and its bytes."""
    layout, offset = [], 0
    for key, value in batch.items():
        layout.append((key, value.dtype, tuple(value.shape), offset))
        offset += -(-value.numel() * value.element_size() // 8) * 8  # 8-byte aligned
    return tuple(layout), offset


def _pack_into(buffer: torch.Tensor, batch: dict[str, torch.Tensor], layout: tuple) -> None:
    for (_, dtype, shape, start), value in zip(layout, batch.values()):
        _view(buffer, dtype, shape, start).copy_(value)


def _unpack(buffer: torch.Tensor, layout: tuple) -> dict[str, torch.Tensor]:
    """The batch's tensors, as views of the buffer."""
    return {key: _view(buffer, dtype, shape, start) for key, dtype, shape, start in layout}


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple, start: int) -> torch.Tensor:
    n = math.prod(shape) * dtype.itemsize
    return buffer[start : start + n].view(dtype).view(shape)


def _as_is(message):
    """The DataLoader's collate function: messages need no conversion."""
    return message


class _BatchNumbers(torch.utils.data.Sampler):
    """(epoch, batch, slab slot) items from where the loader stands when an iteration starts.

    It holds a small mutable cursor, not the loader: a loader -> DataLoader -> sampler ->
    loader cycle would leave the workers to the garbage collector, which may close their
    queues before telling them to stop (each then idles out its 5 s status timeout).
    """

    def __init__(self, cursor: list[int], ring: int):
        self.cursor = cursor  # [epoch, first batch, batches per epoch]
        self.ring, self.sent = ring, 0

    def __iter__(self):
        epoch, start, stop = self.cursor
        for k in range(start, stop):
            self.sent += 1
            yield epoch, k, self.sent % self.ring

    def __len__(self) -> int:
        return self.cursor[2] - self.cursor[1]


class WindowLoader:
    """This rank's batches of windows of one split of a store (see the module docstring).

    store: a Store or its path; spec: the window shape. split / split_spec: which forecast
    ranges (default: the store's split spec). mode: "epoch" | "sampled" | "eval" (default
    "epoch" for train, "eval" otherwise). global_batch_size: windows per step over all ranks,
    a multiple of world_size. num_steps: batches per epoch in sampled mode (default N // G).
    sample_by / series_weights: sampled mode's distribution. shuffle_group_blocks: chunk-sized
    blocks shuffled together in epoch mode (more: better mixing, more chunks per batch).
    scaling: "standard" | "robust" | "none"; scale_by: "window" | "series" (train rows only).
    series_stats: with scale_by="series", each series' (loc, scale) [n_series, Cy] computed
    elsewhere (`train_series_stats` of the training store, for forecasts of new input); default:
    those of this store's train rows.
    num_workers: DataLoader worker processes (0: build batches in this process); cache_mb:
    decoded chunk cache per process; pin_memory: page-locked batches for faster GPU copies.
    drop_last_of: keep whole batches of N forecast starts per series only (see WindowIndex).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike,
        spec: WindowSpec,
        *,
        split: str = "train",
        split_spec: dict | None = None,
        mode: str | None = None,
        global_batch_size: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_steps: int | None = None,
        sample_by: str = "window",
        series_weights: np.ndarray | None = None,
        shuffle_group_blocks: int = 16,
        scaling: str = "standard",
        scale_by: str = "window",
        series_stats: tuple[np.ndarray, np.ndarray] | None = None,
        num_workers: int = 0,
        cache_mb: float = 256,
        pin_memory: bool = False,
        drop_last_of: int = 0,
    ):
        store = store if isinstance(store, Store) else Store(store)
        rank, world_size, global_batch_size = int(rank), int(world_size), int(global_batch_size)
        mode = mode or ("epoch" if split == "train" else "eval")
        if mode not in MODES:
            raise UserError(f"loader mode '{mode}' is not one of {', '.join(MODES)}")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise UserError(f"rank {rank} / world size {world_size}: need 0 <= rank < world size")
        if global_batch_size < 1:
            raise UserError(
                f"global batch size must be a positive integer, got {global_batch_size!r}"
            )
        if global_batch_size % world_size:
            raise UserError(
                f"global batch size {global_batch_size} is not divisible by world size "
                f"{world_size}: choose a global batch size that is a multiple of {world_size}"
            )
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        if drop_last_of < 0:
            raise UserError(f"the legacy drop-last batch must be >= 0 (0: off), got {drop_last_of}")
        scaling_mod.check(scaling, scale_by)
        self.store, self.spec, self.split, self.mode = store, spec, split, mode
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.scaling, self.scale_by = scaling, scale_by
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.split_spec = splits_mod.validate(store.splits if split_spec is None else split_spec)
        lo, hi = splits_mod.resolve(self.split_spec, store.lengths, split)
        self.index = WindowIndex(lo, hi, spec, len(store.roles.target), drop_last_of)
        N, G = self.n_windows, global_batch_size

        if mode == "epoch":
            self.batches_per_epoch = N // G
            if self.batches_per_epoch == 0:
                raise UserError(
                    f"split '{split}' holds {N} windows, fewer than the global batch size {G}: "
                    "lower the global batch size, input_size or horizon"
                )
        elif mode == "sampled":
            self.batches_per_epoch = int(num_steps) if num_steps else max(1, N // G)
        else:
            self.batches_per_epoch = -(-N // G)
        weights = None if series_weights is None else np.asarray(series_weights, np.float64)
        # The order depends on what decides which windows come in which sequence; the state
        # also pins what decides a batch's content (batch size, epoch length, scaling).
        weights_hash = None if weights is None else hashlib.blake2b(weights.tobytes()).hexdigest()
        order_settings = {
            "spec": spec.to_dict(), "split": split, "split_spec": self.split_spec, "mode": mode,
            "sample_by": sample_by if mode == "sampled" else None,
            "series_weights": weights_hash if mode == "sampled" else None,
            "shuffle_group_blocks": shuffle_group_blocks if mode == "epoch" else None,
            **({"drop_last_of": drop_last_of} if drop_last_of else {}),
        }
        self.order_hash = _hash_int(json.dumps(order_settings, sort_keys=True, default=str))
        settings = {**order_settings, "global_batch_size": G, "scaling": scaling,
                    "scale_by": scale_by, "batches_per_epoch": self.batches_per_epoch}
        self.settings_hash = _hash_int(json.dumps(settings, sort_keys=True, default=str))
        self._fingerprint_int = _hash_int(store.fingerprint)
        self._order_args = dict(sample_by=sample_by, series_weights=weights,
                                group_blocks=int(shuffle_group_blocks))
        self._series_loc = self._series_scale = None
        if scale_by == "series" and scaling != "none":
            if series_stats is None:
                series_stats = train_series_stats(store, self.split_spec, scaling)
            self._series_loc, self._series_scale = _checked_stats(series_stats, store)
        self._cache_bytes = int(cache_mb * 2**20)
        self.seed = int(seed)
        self._epoch, self._consumed = 0, 0
        self._cursor = [0, 0, self.batches_per_epoch]  # what the DataLoader's sampler reads
        self._build(self.seed)

    def _build(self, seed: int) -> None:
        """(Re)make the order and the batch dataset for `seed`; workers restart with them."""
        self.seed = int(seed)
        key = (self.seed, self._fingerprint_int, self.order_hash)
        a = self._order_args
        if self.mode == "epoch":
            # one block per chunk: the windows whose reads start in it (all in its slot)
            R, rows = self.store.chunk_rows, self.store.n_timesteps
            borders = np.append(np.arange(0, rows, R), rows)
            block_starts = self.index.first_ids_at_rows(self.store.indptr, borders)
            order = EpochOrder(block_starts, a["group_blocks"], key)
        elif self.mode == "sampled":
            order = SampledOrder(self.index.offsets, key, sample_by=a["sample_by"],
                                 series_weights=a["series_weights"])
        else:
            order = EvalOrder(self.n_windows)
        self._batches = _Batches(self.store, self, order, self._cache_bytes)
        self._dataloader = None

    # -- sizes --------------------------------------------------------------------------
    @property
    def n_windows(self) -> int:
        """Windows of the split (univariate: one per target channel and forecast start)."""
        return self.index.n_windows

    @property
    def epoch(self) -> int:
        return self.state_dict()["epoch"]

    def __len__(self) -> int:
        return self.batches_per_epoch

    def gather(self, series, channel, t) -> dict[str, torch.Tensor]:
        """The batch of the given windows (series, target channel or -1, forecast start row),
        cut and scaled as training batches are; for windows no split names (forecasts)."""
        return self._batches.gather(np.asarray(series), np.asarray(channel), np.asarray(t))

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches from the current state to the end of the epoch; the epoch
        then advances. In eval mode every iteration is one complete ordered pass."""
        if self.mode != "eval":
            self._normalize()
        epoch, start = self._epoch, 0 if self.mode == "eval" else self._consumed
        self._cursor[:] = [epoch, start, self.batches_per_epoch]
        if self.num_workers == 0:
            pin = self.pin_memory and torch.cuda.is_available()
            source = (self._batches.build(epoch, k) for k in range(start, self.batches_per_epoch))
            if pin:
                source = ({k: v.pin_memory() for k, v in b.items()} for b in source)
        else:
            source = (self._receive(*message) for message in self._make_dataloader())
        for batch in source:
            if self.mode != "eval":
                self._consumed += 1
            yield batch
        if self.mode != "eval":
            self._normalize()

    def _make_dataloader(self) -> torch.utils.data.DataLoader:
        if self._dataloader is None:
            ring = PREFETCH * self.num_workers + 2
            nbytes = self._batches.batch_nbytes()
            self._batches.slabs = torch.empty((ring, nbytes), dtype=torch.uint8).share_memory_()
            self._dataloader = torch.utils.data.DataLoader(
                self._batches,
                batch_size=None,
                sampler=_BatchNumbers(self._cursor, ring),
                num_workers=self.num_workers,
                collate_fn=_as_is,
                prefetch_factor=PREFETCH,
                persistent_workers=True,  # keeps each worker's chunk cache across epochs
            )
        return self._dataloader

    def _receive(self, where: int | torch.Tensor, layout: tuple, nbytes: int) -> dict:
        """A worker's batch, copied out of its slab (the slab is reused soon after)."""
        pin = self.pin_memory and torch.cuda.is_available()
        if isinstance(where, int):
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
            buffer.copy_(self._batches.slabs[where, :nbytes])
        else:
            buffer = where.pin_memory() if pin else where
        return _unpack(buffer, layout)

    def _normalize(self) -> None:
        if self._consumed >= self.batches_per_epoch:
            self._epoch, self._consumed = self._epoch + 1, 0

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{epoch, batches_consumed, seed, fingerprint, settings_hash}: where to resume."""
        epoch, consumed = self._epoch, self._consumed
        if consumed >= self.batches_per_epoch and self.mode != "eval":
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "batches_consumed": consumed, "seed": self.seed,
                "fingerprint": self.store.fingerprint, "settings_hash": self.settings_hash}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; its seed replaces this loader's (the run's order goes on)."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise UserError(
                f"loader state lacks {', '.join(missing)}: it is not a WindowLoader state"
            )
        if state["fingerprint"] != self.store.fingerprint:
            raise UserError(
                f"loader state belongs to store fingerprint {state['fingerprint']}, but "
                f"{self.store.path} has {self.store.fingerprint}: resume with the store the "
                "run was trained on, or start a new run"
            )
        if int(state["settings_hash"]) != self.settings_hash:
            raise UserError(
                "loader state was saved with other loader settings (window spec, split, mode, "
                "global batch size, sampling or scaling): resume with the run's settings, "
                "or start a new run"
            )
        consumed = int(state["batches_consumed"])
        if not 0 <= consumed <= self.batches_per_epoch:
            raise UserError(f"loader state has {consumed} batches consumed, "
                            f"outside 0..{self.batches_per_epoch}")
        if int(state["seed"]) != self.seed:
            self._build(int(state["seed"]))
        self._epoch, self._consumed = int(state["epoch"]), consumed


_SERIES_STATS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def train_series_stats(
    store: Store, split_spec: dict, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series loc / scale of the train rows, remembered for the process's last few
    stores, so the train, val and test loaders of a run share one pass over the store."""
    key = (store.fingerprint, json.dumps(split_spec, sort_keys=True), method)
    if key not in _SERIES_STATS:
        _, train_hi = splits_mod.resolve(split_spec, store.lengths, "train")
        targets = store.column_index(store.roles.target)
        _SERIES_STATS[key] = scaling_mod.fit_series(store, train_hi, targets, method)
        if len(_SERIES_STATS) > 4:
            _SERIES_STATS.popitem(last=False)
    return _SERIES_STATS[key]


def _checked_stats(stats, store: Store) -> tuple[np.ndarray, np.ndarray]:
    """Given (loc, scale), float32 [n_series, Cy]: one row per series of `store`."""
    want = (store.n_series, len(store.roles.target))
    loc, scale = (np.ascontiguousarray(x, dtype=np.float32) for x in stats)
    if loc.shape != want or scale.shape != want:
        raise ValueError(f"series_stats must be two arrays of shape {want} (series, targets), "
                         f"got {loc.shape} and {scale.shape}")
    return loc, scale


def _hash_int(text: str) -> int:
    """A stable non-negative 63-bit integer of a string."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
