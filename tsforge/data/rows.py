"""Input with one row per series: an id column, then the series' values in time order.

    id,V2,V3,V4,V5
    a,1.5,2.0,2.5,3.0
    b,7.0,8.0,,

(`tsforge data ingest SRC --format rows --id-col id [--freq F --start T]`.) This is how M4's
and Monash's files ship. Rows are padded with empty cells to the longest series: a series ends
at its last non-empty cell, and an empty cell before it is a missing value (`--on-nan`). A row
without any value is a series of length 0, dropped and counted with the short series. Time is
an integer index 0, 1, 2, ... by `--freq` (an integer step, 1 by default), or, with `--start`, a
date/time where every series starts, stepping by `--freq` (h, D, MS, ...).

`RowsSource` wraps a CSV or Parquet source (`tsforge.data.readers`) and yields the same
`Piece`s as long input does, one record per value, with the id, the time and the value, and
an `Origin` that keeps each record's input row and column for messages; ingest's passes then
check and write them as they do long input. Memory is one piece: `piece_rows` values, that is
about piece_rows / columns input rows. An empty id, an id on two rows, and a cell that is not a
number are `UserError`s naming the file, the row (and the column).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from tsforge.data.freq import Freq, format_time
from tsforge.data.readers import (
    CsvSource,
    Origin,
    ParquetSource,
    Piece,
    TimeSpec,
    numbers,
    read_time,
    text,
)
from tsforge.errors import UserError

TARGET = "y"  # the one value column of the store
_INT = re.compile(r"\s*[+-]?\d+\s*")


class RowsSource:
    """A CSV or Parquet source read as one row per series (see the module's docstring)."""

    def __init__(
        self,
        source: CsvSource | ParquetSource,
        *,
        id_col: str | None,
        ignore_cols: tuple[str, ...] = (),
        start: str | None = None,
        freq: str | int | None = None,
        time_format: str | None = None,
    ):
        self.source = source
        self.display = source.display
        self.columns = list(source.columns)
        self.reads = source.reads
        shown = ", ".join(self.columns[:12]) + (", ..." if len(self.columns) > 12 else "")
        self.id_col = self.columns[0] if id_col is None else id_col
        for col, flag in [(self.id_col, "--id-col"), *((c, "--ignore-cols") for c in ignore_cols)]:
            if col not in self.columns:
                raise UserError(f"{self.display} has no column '{col}' (its columns: {shown}): "
                                f"pass {flag} with the right name")  # fmt: skip
        if self.id_col in ignore_cols:
            raise UserError(f"column '{self.id_col}' is the id column: leave it out of "
                            "--ignore-cols")  # fmt: skip
        self.value_cols = [c for c in self.columns if c != self.id_col and c not in ignore_cols]
        if not self.value_cols:
            raise UserError(f"{self.display} has no value column beside the id column "
                            f"'{self.id_col}': give one column per time step")  # fmt: skip
        self.time, self.start, self.freq = _time_axis(start, freq, time_format)
        self.grid = self._grid(len(self.value_cols))
        self._seen: dict[str, tuple[str, int]] = {}  # id -> (file, data row) where it was

    def time_spec(self, time_col: str | None = None) -> TimeSpec:
        return self.time

    def _grid(self, n: int) -> np.ndarray:
        """The times of steps 0..n-1 from the start, refused if they run past int64."""
        months = self.freq.is_calendar
        wraps = not months and abs(self.start + (n - 1) * self.freq.n) >= 2**63  # Python ints
        with np.errstate(over="ignore"):
            grid = np.asarray(self.freq.step(self.start, np.arange(n)), dtype=np.int64)
        if wraps or np.any(grid[1:] <= grid[:-1]):
            raise UserError(
                f"{self.display}: {n} steps of {self.freq} from "
                f"{format_time(self.start, self.time.unit)} run past the times that can be "
                "counted (about the year 2262): check --start and --freq"
            )
        return grid

    # -- reading ----------------------------------------------------------------------------
    def pieces(self, *, piece_rows: int, **_) -> Iterator[Piece]:
        """The input as long-format pieces (ingest's other arguments do not apply)."""
        rows = max(1, piece_rows // len(self.value_cols))
        for file, first_row, ids, values, valid in self._tables(rows):
            yield self._piece(file, first_row, ids, values, valid)

    def series(self, piece_rows: int = 1_000_000) -> Iterator[tuple[str, np.ndarray, int]]:
        """(id, values, data row) of every row in input order, the padding dropped: values
        float64, NaN for an empty cell inside the series (for readers of their own, as M4's)."""
        rows = max(1, piece_rows // len(self.value_cols))
        for file, first_row, ids, values, valid in self._tables(rows):
            self._check_ids(file, first_row, ids)
            for i, (uid, n) in enumerate(zip(ids.to_pylist(), _lengths(valid).tolist())):
                yield uid, values[i, :n], first_row + i

    def _tables(self, rows: int):
        """(file, first row, ids, values [r, c] float64, valid [r, c]) per run of rows."""
        cols = self.value_cols
        if isinstance(self.source, CsvSource):
            types = {self.id_col: pa.string(), **{c: pa.float64() for c in cols}}
            roles = {c: "number" for c in cols}
            for first_row, table in self.source.tables(types, roles, rows):
                arrays = [table.column(c).combine_chunks() for c in cols]
                yield (self.display, first_row, table.column(self.id_col).combine_chunks(),
                       *_matrix(arrays))  # fmt: skip
        else:
            for file, first_row, batch in self.source.tables([self.id_col, *cols], rows):
                arrays = [numbers(batch.column(c), file, c, first_row) for c in cols]
                yield file, first_row, text(batch.column(self.id_col)), *_matrix(arrays)

    def _piece(self, file, first_row, ids: pa.Array, values, valid) -> Piece:
        self._check_ids(file, first_row, ids)
        n_rows, n_cols = valid.shape
        length = _lengths(valid)
        r, k = np.nonzero(np.arange(n_cols) < length[:, None])  # row by row, time in order
        present = valid[r, k]
        return Piece(
            file=file,
            first_row=first_row,
            ids=pa.DictionaryArray.from_arrays(pa.array(r.astype(np.int32)), ids),
            time=pa.array(self.grid[k]),
            columns={TARGET: pa.array(values[r, k], mask=~present)},
            origin=Origin(rows=r, cols=k, names=self.value_cols, n_rows=n_rows,
                          n_empty=int((length == 0).sum())),  # fmt: skip
        )

    def _check_ids(self, file: str, first_row: int, ids: pa.Array) -> None:
        """Every row has an id, and no id is on two rows (in any file)."""
        if ids.null_count:
            i = int(np.flatnonzero(~ids.is_valid().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{file} row {first_row + i}: {self.id_col} is empty: give every "
                            "row its series id")  # fmt: skip
        for i, uid in enumerate(ids.to_pylist()):
            where = self._seen.setdefault(uid, (file, first_row + i))
            if where != (file, first_row + i):
                at = (f"rows {where[1]} and {first_row + i}" if where[0] == file
                      else f"row {first_row + i} (and {where[0]} row {where[1]})")  # fmt: skip
                raise UserError(
                    f"{file} {at} both hold series {uid!r}: one row per series; remove or "
                    f"rename one of them"
                )


def _lengths(valid: np.ndarray) -> np.ndarray:
    """Each row's series length: up to its last non-empty cell (0 for a row of empty cells)."""
    n_cols = valid.shape[1]
    return np.where(valid.any(axis=1), n_cols - np.argmax(valid[:, ::-1], axis=1), 0)


def _matrix(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Columns of float64 (nulls for empty cells) as values [r, c] and validity [r, c]."""
    values = np.stack([a.to_numpy(zero_copy_only=False) for a in arrays], axis=1)
    valid = np.stack([a.is_valid().to_numpy(zero_copy_only=False) for a in arrays], axis=1)
    return values, valid


def _time_axis(start, freq, time_format) -> tuple[TimeSpec, int, Freq]:
    """How time counts: integers from 0 (or an integer --start), or dates from --start."""
    if start is None or _INT.fullmatch(str(start)):
        at = 0 if start is None else int(start)
        if freq is not None and not _INT.fullmatch(str(freq)):
            raise UserError(
                f"--freq {freq} is a duration, but without a date/time --start, time is an "
                f"integer index ({at}, {at + 1}, ...): give --start as the date/time every "
                "series starts (e.g. 2020-01-01), or leave --freq out"
            )
        if not -(2**62) <= at <= 2**62:
            raise UserError(f"--start {at} is beyond the integer times that can be counted: "
                            "give a smaller --start")  # fmt: skip
        return TimeSpec("index"), at, Freq.parse(1 if freq is None else freq, "index")
    found = read_time(str(start), time_format)
    if found is None:
        why = f"does not match --time-format {time_format}" if time_format else "is not a date/time"
        raise UserError(f"--start '{start}' {why}: write it as 2020-01-01 or "
                        "2020-01-01 00:00:00")  # fmt: skip
    if freq is None:
        raise UserError(f"--start {start} needs --freq: the step between values (h, D, W, MS, "
                        "...)")  # fmt: skip
    spec, ns = found
    return spec, ns, Freq.parse(freq, "ns")
