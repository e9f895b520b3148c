"""Temporary files that regroup input rows by series with bounded memory.

Ingest cannot hold its input in memory, and input rows may come in any order. A `Spill`
takes the parsed rows piece by piece as fixed-size records

    code int32 (series number) | row int64 (input row) | ts int64 | v float32[C]

and appends them to a temporary file (pass 1). `arrange(order)` then makes every series one
contiguous run of records (pass 2): it streams the spill in blocks, sorts each block by series
and writes each run at its series' offset in a second file with `os.pwrite`. Plain reads and
positioned writes keep memory at one block; a memory map would not, since its touched pages
count toward the process's resident memory. When the input is already grouped by series
(each series' rows consecutive, the usual case), pass 2 is skipped and series are read where
they lie. `batches(order)` reads them back in the requested order, several at a time (pass 3).

Records of a series keep their input order. The files live beside the output (the same file
system, so no surprise disk is filled) and `close()` removes them; use a Spill as a context
manager.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def record_dtype(n_channels: int) -> np.dtype:
    """The packed record of one input row."""
    return np.dtype([("code", "<i4"), ("row", "<i8"), ("ts", "<i8"), ("v", "<f4", (n_channels,))])


def _grow(arr: np.ndarray, size: int, fill) -> np.ndarray:
    if size <= len(arr):
        return arr
    out = np.full(max(size, 2 * len(arr)), fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class Spill:
    """Records of every input row, regrouped by series on disk."""

    def __init__(
        self, directory: str | os.PathLike, stem: str, n_channels: int, block_rows: int = 1_000_000
    ):
        self.dtype = record_dtype(n_channels)
        self.block_rows = max(1, int(block_rows))
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        self.paths = [directory / f".{stem}.spill-{tag}", directory / f".{stem}.sorted-{tag}"]
        self.n_records = 0
        self.counts = np.zeros(1024, dtype=np.int64)
        # Grouped-input tracking: the spill position of each series' first record, while
        # every series seen so far came as one consecutive run.
        self.grouped = True
        self._first = np.full(1024, -1, dtype=np.int64)
        self._last_code = -1
        self._offsets: np.ndarray | None = None
        self._file: Path | None = None
        # Pass 1's file descriptor, made by the first write: inside the `with` block, so that
        # a signal at any moment leaves close() to remove the file (a bare descriptor, unlike
        # a file object, cannot be left half-owned by an exception).
        self._fd: int | None = None

    # -- pass 1 ---------------------------------------------------------------------------
    def append(self, rec: np.ndarray) -> None:
        """Append records (of `self.dtype`) in input order."""
        if not len(rec):
            return
        code = rec["code"]
        top = int(code.max()) + 1
        self.counts = _grow(self.counts, top, 0)
        self.counts[:top] += np.bincount(code, minlength=top)
        if self.grouped:
            self._track_runs(code)
        # Plain writes: ndarray.tofile turns an exception raised by a signal handler during
        # its internal flush into an unrelated TypeError.
        data = np.ascontiguousarray(rec).data.cast("B")
        _pwrite_all(self._pass1(), data, self.n_records * self.dtype.itemsize)
        self.n_records += len(rec)

    def _pass1(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.paths[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return self._fd

    def _track_runs(self, code: np.ndarray) -> None:
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        run_codes = code[starts]
        if run_codes[0] == self._last_code:  # the previous piece's last series goes on
            starts, run_codes = starts[1:], run_codes[1:]
        self._last_code = int(code[-1])
        if not len(run_codes):
            return
        self._first = _grow(self._first, int(run_codes.max()) + 1, -1)
        if np.any(self._first[run_codes] >= 0) or len(np.unique(run_codes)) < len(run_codes):
            self.grouped = False  # a series came back after another one: pass 2 is needed
            return
        self._first[run_codes] = self.n_records + starts

    def finish(self) -> None:
        fd, self._fd = self._pass1(), -1
        os.close(fd)

    # -- pass 2 ---------------------------------------------------------------------------
    def arrange(self, order: np.ndarray) -> None:
        """Make each series contiguous; `order` (series codes) is the order series are read in."""
        n_codes = len(order)
        counts = _grow(self.counts, n_codes, 0)[:n_codes]
        if self.grouped:
            self._offsets = _grow(self._first, n_codes, -1)[:n_codes].copy()
            self._file = self.paths[0]
            return
        offsets = np.zeros(n_codes, dtype=np.int64)
        offsets[order] = np.r_[0, np.cumsum(counts[order])[:-1]]
        self._offsets = offsets
        self._file = self.paths[1]
        size = self.dtype.itemsize
        fill = offsets.copy()  # the next free record of each series
        fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, self.n_records * size)
            with open(self.paths[0], "rb") as src:
                while True:
                    block = np.fromfile(src, dtype=self.dtype, count=self.block_rows)
                    if not len(block):
                        break
                    block = block[np.argsort(block["code"], kind="stable")]
                    code = block["code"]
                    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
                    ends = np.r_[starts[1:], len(block)]
                    run_codes = code[starts]
                    dest = fill[run_codes]
                    fill[run_codes] += ends - starts
                    raw = memoryview(block.view(np.uint8))
                    for s, e, d in zip(starts.tolist(), ends.tolist(), dest.tolist()):
                        _pwrite_all(fd, raw[s * size : e * size], d * size)
        finally:
            os.close(fd)
        # The unsorted spill is no longer needed: free its disk space now.
        self.paths[0].unlink(missing_ok=True)

    # -- pass 3 ---------------------------------------------------------------------------
    def batches(self, order, max_rows: int) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """(codes, counts, records) of consecutive series of `order`: the records of the
        series one after another, up to `max_rows` of them per batch (or one whole series
        when it is longer)."""
        assert self._offsets is not None, "arrange() first"
        counts = _grow(self.counts, len(self._offsets), 0)
        size = self.dtype.itemsize
        order = [int(c) for c in order]
        with open(self._file, "rb") as f:
            i = 0
            while i < len(order):
                # Take the following series while they lie next to each other on disk.
                j, start = i + 1, int(self._offsets[order[i]])
                total = int(counts[order[i]])
                while (
                    j < len(order)
                    and total + counts[order[j]] <= max_rows
                    and (counts[order[j]] == 0 or self._offsets[order[j]] == start + total)
                ):
                    total += int(counts[order[j]])
                    j += 1
                if total:
                    f.seek(start * size)
                    block = np.fromfile(f, dtype=self.dtype, count=total)
                    if len(block) != total:
                        raise OSError(f"{self._file} was truncated while ingesting")
                else:
                    block = np.zeros(0, dtype=self.dtype)
                yield order[i:j], counts[order[i:j]].copy(), block
                i = j

    # -- cleanup --------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if self._fd is not None and self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)
        finally:
            for path in self.paths:
                path.unlink(missing_ok=True)

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
