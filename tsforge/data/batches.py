"""Batch assembly: item (epoch, batch) of a map-style dataset is this rank's part of that
global batch of windows, cut from the chunk arena, padded, masked and scaled
(`tsforge.data.loader` builds it and documents the batch's tensors).

    batches = WindowBatches(store, loader, order, cache_bytes)
    batch = batches[(epoch, k, slot)]      # dict of tensors (written into a slab in a worker)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from tsforge.data import scaling as scaling_mod
from tsforge.data.arena import ChunkArena
from tsforge.data.order import rank_positions
from tsforge.data.store import Store
from tsforge.data.transport import pack_message
from tsforge.errors import UserError

if TYPE_CHECKING:
    from tsforge.data.loader import WindowLoader


class WindowBatches(torch.utils.data.Dataset):
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
        self._arena: ChunkArena | None = None
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
        return pack_message(self.build(epoch, batch), self.slabs, slot)

    def batch_nbytes(self) -> int:
        """Bytes of one packed batch (for sizing the slabs)."""
        B, L, H = self.G // self.world, self.spec.input_size, self.spec.horizon
        Cy = self.Ct if self.spec.multivariate else 1
        f32 = [B * L * Cy] * 2 + [B * H * Cy] * 2 + [B * L * self.Ch, B * (L + H) * self.Cf,
                                                     B * self.static.shape[1], B * Cy, B * Cy]
        sizes = [4 * n for n in f32] + [8 * B] * 3 + [B]
        return sum(-(-n // 8) * 8 for n in sizes)

    def arena(self) -> ChunkArena:
        if self._arena is None or self._pid != os.getpid():
            if self._store is None or self._pid != os.getpid():
                self._store = Store(self.path)
                if self._store.fingerprint != self.fingerprint:
                    raise UserError(f"store {self.path} changed while being read: restart the run")
            s = self._store
            self._arena = ChunkArena(s.values, s.n_timesteps, s.chunk_rows,
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
