"""Decoded Zarr chunks kept in fixed slots of one array, least recently used evicted: the
window loader's read cache (`tsforge.data.loader` says how batches are cut from it).

    arena = ChunkArena(store.values, store.n_timesteps, store.chunk_rows, margin=W - 1,
                       n_channels=C, max_bytes=256 * 2**20)

Slot j holds chunk k's R rows plus the next W-1 rows, so every window whose reads start in
chunk k lies inside one slot and is cut with one strided gather.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


class ChunkArena:
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
