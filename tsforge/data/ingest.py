"""Validated, streaming ingest of CSV / Parquet input into a tsforge store.

    from tsforge.data.ingest import ingest
    summary = ingest("data.csv", "data.zarr", freq="h", on_gap="nan")
    summary = ingest("ETTh1.csv", "etth1.zarr", format="wide", time_col="date", split="ett_hour")
    summary = ingest("Hourly-train.csv", "m4h.zarr", format="rows", id_col="V1", split="holdout:48")

(`tsforge data ingest SRC --out STORE ...` on the command line.)

Input is long (`unique_id, ds, y` plus covariate columns; one row per series and time),
wide (a time column and one column per channel: one series with C value columns), or rows
(an id column, then one series per row, its values in time order, ragged: see
`tsforge.data.rows`, which hands on its rows as long records). It is read
in pieces and never held whole, in three passes over temporary files beside the output
(see `tsforge.data.spill`):

1. read: parse each piece, check ids, timestamps, numbers, missing values (`on_nan`) and
   static columns, number the series, and append the rows to a spill file;
2. arrange: regroup the spill by series (skipped when the input is already grouped);
3. write: series by series, in sorted id order, sort by time, refuse duplicate timestamps,
   infer or check the frequency, refuse or fill gaps (`on_gap`), drop series shorter than
   `min_length`, and append to a `StoreWriter`, which renames its folder into place at the end.

Memory is one piece, O(n_series) metadata and the longest series (a store's series is written
whole). Every problem in the input is a `UserError` naming the file and the row or series and
the fix; on any failure (Ctrl-C included) nothing is left at `out`, temporary files and the
folders made for `out` are removed, and a store that `overwrite` was to replace is untouched.
`overwrite` replaces only a store, never an input or the current folder
(`tsforge.data.outputs.check_target`). A fault of the disk written to (full, read-only) is an
`OSError` that names `out`.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from pathlib import Path

import numpy as np

from tsforge.data import splits as splits_mod
from tsforge.data.freq import Freq, format_time
from tsforge.data.outputs import check_target, missing_parents, writing
from tsforge.data.readers import Piece, open_source
from tsforge.data.rows import TARGET as ROWS_TARGET
from tsforge.data.rows import RowsSource
from tsforge.data.spill import Spill, record_dtype
from tsforge.data.store import Codec, ColumnRoles, StoreWriter, is_store
from tsforge.errors import UserError

FORMATS = ("long", "wide", "rows")
# Options of long and wide input that rows input (an id, then values) has no use for.
NOT_FOR_ROWS = {"time_col": "--time-col", "target": "--target", "hist_exog": "--hist-exog",
                "futr_exog": "--futr-exog", "static": "--static", "series_id": "--series-id"}
ON_GAP = ("error", "nan", "ffill")
ON_NAN = ("error", "keep", "drop")
# Filling gaps must not turn a wrong --freq into a store many times the input's size.
MAX_FILL_FACTOR = 10
# The longest span int64 nanoseconds (or integer steps) can hold: about 292 years.
MAX_SPAN = 2**63 - 1


@dataclasses.dataclass
class IngestSummary:
    """What `ingest` wrote; `tsforge data ingest` prints it."""

    n_series: int
    n_rows: int  # rows written, filled gaps included
    n_dropped_short: int  # series dropped for being shorter than min_length
    n_gaps_filled: int  # rows inserted by on_gap="nan" | "ffill"
    n_nan_dropped: int  # input rows removed by on_nan="drop"
    freq: str
    fingerprint: str
    path: str
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def ingest(
    src,
    out,
    *,
    format="long",
    id_col=None,
    time_col=None,
    target=None,
    hist_exog=(),
    futr_exog=(),
    static=(),
    freq=None,
    on_gap="error",
    on_nan="error",
    min_length=1,
    split=None,
    codec=Codec(),  # noqa: B008 - a frozen dataclass, never mutated
    chunk_rows=None,
    overwrite=False,
    series_id=None,
    piece_rows=1_000_000,
    ignore_cols=(),
    time_format=None,
    start=None,
) -> IngestSummary:
    """Read `src` (.csv, .csv.gz, .parquet or a folder of .parquet) into the store `out`.

    `id_col` defaults to `unique_id` (long) or the first column (rows); `time_col` to `ds`.
    `target` defaults to `["y"]` (long) or every column without another role (wide).
    `freq` is a string ("h", "15min", "MS", ...) or an integer step for integer time; when
    None it is inferred: the most common step of each series, which must agree.
    `on_nan` decides what a missing or non-finite value (in any value column) does: refuse
    it, keep it as NaN, or drop its row (the gap it leaves then meets `on_gap`).
    `on_gap` decides what a missing step does: refuse it, insert NaN rows, or repeat the
    previous row. `min_length` counts a series' input rows (after `on_nan="drop"`, before
    gaps are filled); shorter series are dropped and counted. `split` is what
    `tsforge.data.splits.parse` reads: a preset name, `holdout:H`, JSON text or a spec dict.
    `ignore_cols` names long-format columns to leave out; any other column without a role
    is refused. `time_format` is a strptime format for text timestamps (default: detected
    from the first row). `series_id` names the one series of wide input (default: the file
    name without its extensions). `piece_rows` bounds the rows held in memory at once (rows
    format: the values). Rows input takes no time column, target, covariates or series id: its
    time counts from 0 by `freq` (an integer step, 1 by default), or from `start` (a date/time,
    read with `time_format` when given) by `freq` (required then).
    `overwrite` lets an existing store at `out` be replaced (only a store; see the module's
    docstring); folders missing above `out` are made, and removed again on failure.
    """
    t0 = time.perf_counter()
    target = None if target is None else _names(target)
    hist_exog, futr_exog, static, ignore_cols = map(
        _names, (hist_exog, futr_exog, static, ignore_cols)
    )
    _check_choice("--format", format, FORMATS)
    _check_layout_options(format, time_col=time_col, target=target, hist_exog=hist_exog,
                          futr_exog=futr_exog, static=static, series_id=series_id, start=start,
                          time_format=time_format)  # fmt: skip
    if format != "rows":
        id_col = "unique_id" if id_col is None else id_col
        time_col = "ds" if time_col is None else time_col
    _check_choice("--on-gap", on_gap, ON_GAP)
    _check_choice("--on-nan", on_nan, ON_NAN)
    min_length = _at_least_one("--min-length", min_length)
    piece_rows = _at_least_one("--piece-rows", piece_rows)
    if chunk_rows is not None:
        chunk_rows = _at_least_one("--chunk-rows", chunk_rows)
    split_spec = splits_mod.parse(split, "--split")
    codec.build()  # an invalid codec fails now, not after reading the whole input
    out = Path(out)
    check_target(out, flag="--out", overwrite=overwrite, inputs=[src], replaceable=is_store,
                 what="a tsforge store")  # fmt: skip
    made = missing_parents(out, "--out")

    source = open_source(src, time_format=time_format)
    if format == "rows":
        source = RowsSource(source, id_col=id_col, ignore_cols=ignore_cols, start=start,
                            freq=freq, time_format=time_format)  # fmt: skip
        id_col, time_col = source.id_col, "time"
        roles = ColumnRoles(target=(ROWS_TARGET,))
        user_freq = source.freq
    else:
        roles = _roles(
            source, format, id_col, time_col, target, hist_exog, futr_exog, static, ignore_cols
        )
    tspec = source.time_spec(time_col)
    if format != "rows":
        user_freq = Freq.parse(freq, tspec.unit) if freq is not None else None
    if series_id is None:
        series_id = _stem(Path(src))
    job = _Job(
        source=source,
        roles=roles,
        id_col=id_col if format != "wide" else None,
        time_col=time_col,
        time_unit=tspec.unit,
        on_gap=on_gap,
        on_nan=on_nan,
        min_length=min_length,
        piece_rows=piece_rows,
        series_id=str(series_id),
    )
    with writing(out, "--out", made=made, reads=source.reads):
        out.parent.mkdir(parents=True, exist_ok=True)
        with Spill(out.parent, out.name, len(roles.value_columns), block_rows=piece_rows) as spill:
            job.read(
                spill,
                source.pieces(
                    id_col=job.id_col,
                    time_col=time_col,
                    numeric=list(roles.value_columns + roles.static),
                    time=tspec,
                    piece_rows=piece_rows,
                ),
            )
            order = np.array(sorted(range(len(job.ids)), key=job.ids.__getitem__), dtype=np.int64)
            spill.arrange(order)
            with StoreWriter(
                out,
                roles=roles,
                freq=user_freq.name if user_freq else "",
                time_unit=tspec.unit,
                codec=codec,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
            ) as writer:
                found = job.write(spill, order, writer, user_freq)
                # The frequency is known only once the series are read; the writer keeps it
                # for commit().
                writer.freq = found.name
                store = writer.commit(splits=split_spec)
    return IngestSummary(
        n_series=store.n_series,
        n_rows=store.n_timesteps,
        n_dropped_short=job.n_dropped_short,
        n_gaps_filled=job.n_gaps_filled,
        n_nan_dropped=job.n_nan_dropped,
        freq=found.name,
        fingerprint=store.fingerprint,
        path=str(out),
        seconds=round(time.perf_counter() - t0, 3),
    )


# -- options ----------------------------------------------------------------------------------
def _check_choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise UserError(f"{flag} '{value}' is not one of {', '.join(choices)}")


def _check_layout_options(format: str, *, start, time_format, **options) -> None:
    """Refuse options the input's layout has no use for, naming them."""
    if format != "rows":
        if start is not None:
            raise UserError(f"--start is for --format rows (series without a time column); "
                            f"--format {format} reads time from --time-col: leave --start "
                            "out")  # fmt: skip
        return
    for key, flag in NOT_FOR_ROWS.items():
        if options[key] not in (None, (), []):
            raise UserError(f"{flag} does not apply to --format rows (an id column, then the "
                            "values in time order; time counts from --start by --freq): "
                            f"leave {flag} out")  # fmt: skip
    if time_format is not None and start is None:
        raise UserError("--time-format reads --start with --format rows: give --start too, or "
                        "leave --time-format out")  # fmt: skip


def _at_least_one(flag: str, value) -> int:
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < 1:
        raise UserError(f"{flag} must be a whole number of at least 1, got {value}")
    return n


def _names(cols) -> tuple[str, ...]:
    """Column names from a list, or from one name given as a string."""
    return (cols,) if isinstance(cols, str) else tuple(cols)


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".bz2", ".csv", ".parquet", ".pq"):
        name = name[: -len(ext)] if name.lower().endswith(ext) else name
    return name or path.name


def _roles(
    source, format, id_col, time_col, target, hist_exog, futr_exog, static, ignore_cols
) -> ColumnRoles:
    """The column roles, after checking that every named column exists and every column of
    long input has a role (or is ignored)."""
    cols = source.columns
    shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "")
    flags = {
        "--hist-exog": hist_exog,
        "--futr-exog": futr_exog,
        "--static": static,
        "--ignore-cols": ignore_cols,
        "--target": target or (),
    }
    named = [(time_col, "--time-col")]
    if format == "long":
        named.insert(0, (id_col, "--id-col"))
    named += [(c, flag) for flag, names in flags.items() for c in names]
    if format == "long" and target is None:
        named.append(("y", "--target"))
    for col, flag in named:
        if col not in cols:
            raise UserError(
                f"{source.display} has no column '{col}' (its columns: {shown}): "
                f"pass {flag} with the right name"
            )
    if format == "long" and id_col == time_col:
        raise UserError(f"--id-col and --time-col are both '{id_col}': give each its own column")
    keys = {time_col} | ({id_col} if format == "long" else set())
    for flag, names in flags.items():
        for c in names:
            if c in keys:
                raise UserError(f"column '{c}' is the id or time column: leave it out of {flag}")
    others = set(hist_exog) | set(futr_exog) | set(static) | set(ignore_cols)
    if target is None:
        if format == "long":
            target = ["y"]
        else:
            target = [c for c in cols if c not in keys and c not in others]
    roles = ColumnRoles(
        target=tuple(target),
        hist_exog=tuple(hist_exog),
        futr_exog=tuple(futr_exog),
        static=tuple(static),
    )
    if format == "long":
        used = keys | set(roles.value_columns) | set(roles.static) | set(ignore_cols)
        free = [c for c in cols if c not in used]
        if free:
            listed = ", ".join(free)
            raise UserError(
                f"{source.display} has columns without a role: {listed}: pass them with "
                f"--hist-exog, --futr-exog or --static, or leave them out with "
                f"--ignore-cols {','.join(free)}"
            )
    return roles


# -- the passes -------------------------------------------------------------------------------
@dataclasses.dataclass
class _Job:
    source: object
    roles: ColumnRoles
    id_col: str | None
    time_col: str
    time_unit: str
    on_gap: str
    on_nan: str
    min_length: int
    piece_rows: int
    series_id: str
    n_dropped_short: int = 0
    n_gaps_filled: int = 0
    n_nan_dropped: int = 0
    n_written: int = 0

    def __post_init__(self):
        self.codes: dict[str, int] = {}
        self.ids: list[str] = []
        self.n_static = len(self.roles.static)
        self.static = np.zeros((0, self.n_static))
        self.static_row = np.zeros(0, dtype=np.int64)  # where each series' static was read
        self._files: list[str] = []  # input files in order, for row numbers in messages
        self._file_starts: list[int] = []  # global row index of each file's first row
        self._rows = 0

    # -- rows in messages -----------------------------------------------------------------
    def at(self, global_row: int) -> str:
        """`data.csv row 17` for a global row index."""
        i = int(np.searchsorted(self._file_starts, global_row, side="right")) - 1
        return f"{self._files[i]} row {global_row - self._file_starts[i] + 1}"

    def at_two(self, a: int, b: int) -> str:
        a, b = sorted((int(a), int(b)))
        first, second = self.at(a), self.at(b)
        file_a, _, row_a = first.rpartition(" row ")
        file_b, _, row_b = second.rpartition(" row ")
        return f"{file_a} rows {row_a} and {row_b}" if file_a == file_b else f"{first} and {second}"

    # -- pass 1 ---------------------------------------------------------------------------
    def read(self, spill: Spill, pieces) -> None:
        dtype = record_dtype(len(self.roles.value_columns))
        for piece in pieces:
            if not self._files or self._files[-1] != piece.file:
                self._files.append(piece.file)
                self._file_starts.append(self._rows - piece.first_row + 1)
            base = self._rows
            self._rows += piece.n_rows
            if piece.origin is not None:  # rows input: a row without values is a short series
                self.n_dropped_short += piece.origin.n_empty
            if len(piece):
                spill.append(self._records(piece, base, dtype))
        spill.finish()
        if self._rows == 0:
            raise UserError(
                f"{self.source.display} has no data rows: "
                "give a file with a header and at least one row"
            )

    def _records(self, piece: Piece, base: int, dtype: np.dtype) -> np.ndarray:
        n = len(piece)
        code = self._codes(piece, base)
        if piece.time.null_count:
            i = int(np.flatnonzero(~_valid(piece.time))[0])
            raise UserError(
                f"{self.at(base + piece.row(i))}: {self.time_col} is empty: fix the value or "
                "drop the row"
            )
        values = np.empty((n, len(self.roles.value_columns)), dtype=np.float32)
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by on_nan
            for j, col in enumerate(self.roles.value_columns):
                values[:, j] = piece.columns[col].to_numpy(zero_copy_only=False)
        if self.n_static:
            self._check_static(piece, code, base)
        rec = np.empty(n, dtype=dtype)
        rec["code"] = code
        rec["row"] = base + (np.arange(n) if piece.origin is None else piece.origin.rows)
        rec["ts"] = piece.time.to_numpy(zero_copy_only=False)
        rec["v"] = values
        finite = np.isfinite(values)
        if not finite.all():
            rec = self._missing(rec, finite, piece, base)
        return rec

    def _codes(self, piece: Piece, base: int) -> np.ndarray:
        if piece.ids is None:
            self.codes.setdefault(self.series_id, 0)
            if not self.ids:
                self.ids.append(self.series_id)
            return np.zeros(len(piece), dtype=np.int32)
        ids = piece.ids
        if ids.null_count:
            i = int(np.flatnonzero(~_valid(ids))[0])
            raise UserError(
                f"{self.at(base + piece.row(i))}: {self.id_col} is empty: give every row its "
                "series id"
            )
        index = ids.indices.to_numpy(zero_copy_only=False)
        used = np.bincount(index, minlength=len(ids.dictionary)) > 0
        lut = np.full(len(ids.dictionary), -1, dtype=np.int32)
        for k, name in zip(np.flatnonzero(used).tolist(), ids.dictionary.filter(used).to_pylist()):
            code = self.codes.get(name)
            if code is None:
                code = self.codes[name] = len(self.ids)
                self.ids.append(name)
            lut[k] = code
        return lut[index]

    def _check_static(self, piece: Piece, code: np.ndarray, base: int) -> None:
        """Static columns must hold one value per series; keep that value."""
        s = np.stack(
            [piece.columns[c].to_numpy(zero_copy_only=False) for c in self.roles.static], axis=1
        )
        n_codes = len(self.ids)
        if len(self.static) < n_codes:
            grown = np.full((max(n_codes, 2 * len(self.static)), self.n_static), np.nan)
            grown[: len(self.static)] = self.static
            rows = np.full(len(grown), -1, dtype=np.int64)
            rows[: len(self.static_row)] = self.static_row
            self.static, self.static_row = grown, rows
        uniq, first = np.unique(code, return_index=True)
        new = self.static_row[uniq] < 0
        self.static[uniq[new]] = s[first[new]]
        self.static_row[uniq[new]] = base + first[new]
        ref = self.static[code]
        same = (s == ref) | (np.isnan(s) & np.isnan(ref))
        if not same.all():
            i, j = (int(x[0]) for x in np.nonzero(~same))
            col, c = self.roles.static[j], int(code[i])
            raise UserError(
                f"{self.at(base + i)}: static column {col} is {s[i, j]:g} but "
                f"{ref[i, j]:g} at {self.at(self.static_row[c])} for series '{self.ids[c]}': "
                "a static column holds one value per series; pass it with --hist-exog or "
                "--futr-exog if it changes over time"
            )

    def _missing(self, rec: np.ndarray, finite: np.ndarray, piece: Piece, base: int):
        """Apply on_nan to rows with a missing or non-finite value."""
        bad_rows = ~finite.all(axis=1)
        if self.on_nan == "error":
            i = int(np.flatnonzero(bad_rows)[0])
            j = int(np.flatnonzero(~finite[i])[0])
            col = self.roles.value_columns[j]
            raw = piece.columns[col][i].as_py()
            where, col = self.at(base + piece.row(i)), piece.column(i, col)
            if raw is None:
                what = "empty or NaN"
            elif math.isinf(raw) or math.isnan(raw):
                what = str(raw)
            else:
                what = f"{raw:g}, beyond the float32 range"
            series = f" (series '{self.ids[rec['code'][i]]}')" if self.id_col else ""
            raise UserError(
                f"{where}: {col} is {what}{series}: fill it, or pass "
                "--on-nan keep to store NaN or --on-nan drop to remove such rows"
            )
        # "keep" stores NaN; "drop" removes the rows in pass 3, after their timestamps
        # have served to infer the frequency.
        rec["v"][~finite] = np.nan
        return rec

    # -- pass 3 ---------------------------------------------------------------------------
    def write(
        self, spill: Spill, order: np.ndarray, writer: StoreWriter, freq: Freq | None
    ) -> Freq:
        """Validate each series, fill its gaps and append it; returns the frequency."""
        self._freq, self._freq_from = freq, None  # inferred: from which series
        self._longest = 0
        for codes, counts, block in spill.batches(order, max_rows=self.piece_rows):
            starts = np.r_[0, np.cumsum(counts)[:-1]]
            regular = None
            for i, code in enumerate(codes):
                if regular is None and self._freq is not None and not self._freq.is_calendar:
                    regular = self._regular(block, counts, starts, self._freq)
                rec = block[starts[i] : starts[i] + counts[i]]
                if regular is not None and regular[i]:
                    # Nothing to check or fill: sorted, on the grid, without gaps.
                    self._longest = max(self._longest, len(rec))
                    self._add(writer, code, int(rec["ts"][0]), rec["v"])
                else:
                    self._series(writer, code, rec)
        if not self.n_written:
            if self.n_dropped_short:
                raise UserError(
                    f"{self.source.display}: all {self.n_dropped_short} series are shorter than "
                    f"--min-length {self.min_length} (the longest has {self._longest} rows): "
                    "lower --min-length"
                )
            raise UserError(
                f"{self.source.display} has no usable rows: every row was dropped "
                "by --on-nan drop; fill the values or pass --on-nan keep"
            )
        if self._freq is None:
            raise UserError(
                f"{self.source.display}: every series has a single row, so the "
                "frequency cannot be inferred: pass --freq"
            )
        return self._freq

    def _regular(self, block, counts, starts, freq: Freq) -> np.ndarray:
        """Which series of a batch are long enough, in time order and step by exactly `freq`
        (and, with on_nan="drop", have no row to drop): the common case, checked at once."""
        ok = counts >= self.min_length
        some = counts > 0
        if not some.any():
            return ok
        ts = block["ts"]
        steps = np.ones(len(ts), dtype=bool)
        steps[:-1] = np.diff(ts) == freq.n
        steps[(starts + counts - 1)[some]] = True  # a series' last row has no next row
        ok[some] &= np.logical_and.reduceat(steps, starts[some])
        if self.on_nan == "drop":
            ok[some] &= ~np.logical_or.reduceat(np.isnan(block["v"]).any(axis=1), starts[some])
        return ok

    def _add(self, writer: StoreWriter, code: int, start: int, values: np.ndarray) -> None:
        static = self.static[code].astype(np.float32) if self.n_static else None
        writer.add_series(self.ids[code], start, values, static)
        self.n_written += 1

    def _series(self, writer: StoreWriter, code: int, rec: np.ndarray) -> None:
        """Validate one series in full, fill its gaps and append it (or drop it if short)."""
        uid = self.ids[code]
        ts, rows, values = rec["ts"], rec["row"], rec["v"]
        all_ts = None  # with rows dropped for missing values: every timestamp, sorted
        if self.on_nan == "drop":
            keep = ~np.isnan(values).any(axis=1)
            if not keep.all():
                self.n_nan_dropped += int((~keep).sum())
                all_ts = np.sort(ts)
                ts, rows, values = ts[keep], rows[keep], values[keep]
        self._longest = max(self._longest, len(ts))
        if len(ts) < self.min_length:
            self.n_dropped_short += 1
            return
        if np.any(ts[1:] < ts[:-1]):
            o = np.argsort(ts, kind="stable")
            ts, rows, values = ts[o], rows[o], values[o]
        self._check_duplicates(uid, ts, rows)
        if int(ts[-1]) - int(ts[0]) > MAX_SPAN:  # steps between them would overflow int64
            raise UserError(
                f"{self.at_two(rows[0], rows[-1])}: series '{uid}' runs from "
                f"{format_time(ts[0], self.time_unit)} to {format_time(ts[-1], self.time_unit)}, "
                f"further apart than {self.time_col} can count steps: fix the timestamps"
            )
        if self._freq_from is not None or self._freq is None:
            # Rows dropped for missing values still show the series' step.
            found = Freq.infer(ts if all_ts is None else all_ts, self.time_unit)
            if found is not None and self._freq is None:
                self._freq, self._freq_from = found, uid
            elif found is not None and found != self._freq:
                raise UserError(
                    f"{self.source.display}: series '{uid}' steps by {found} but series "
                    f"'{self._freq_from}' steps by {self._freq}: pass --freq to choose the "
                    "frequency (with --on-gap nan|ffill if some series skip steps)"
                )
        if self._freq is not None and len(ts) > 1:
            values = self._fill_gaps(uid, self._freq, ts, rows, values)
        self._add(writer, code, int(ts[0]), values)

    def _check_duplicates(self, uid: str, ts: np.ndarray, rows: np.ndarray) -> None:
        dup = np.flatnonzero(ts[1:] == ts[:-1])
        if len(dup):
            i = int(dup[0])
            raise UserError(
                f"{self.at_two(rows[i], rows[i + 1])}: series '{uid}' has two rows at "
                f"{self.time_col} {format_time(ts[i], self.time_unit)}: remove one of them"
            )

    def _fill_gaps(self, uid: str, freq: Freq, ts, rows, values) -> np.ndarray:
        k, on_grid = freq.position(ts[0], ts)
        if not on_grid.all():
            i = int(np.flatnonzero(~on_grid)[0])
            raise UserError(
                f"{self.at(rows[i])}: series '{uid}' {self.time_col} "
                f"{format_time(ts[i], self.time_unit)} is not on the {freq} grid that starts at "
                f"{format_time(ts[0], self.time_unit)}: fix the timestamp or pass the right --freq"
            )
        steps = np.diff(k)
        gaps = np.flatnonzero(steps > 1)
        if not len(gaps):
            return values
        if self.on_gap == "error":
            i = int(gaps[0])
            raise UserError(
                f"{self.at_two(rows[i], rows[i + 1])}: series '{uid}' skips {int(steps[i]) - 1} "
                f"step(s) of {freq} between {format_time(ts[i], self.time_unit)} and "
                f"{format_time(ts[i + 1], self.time_unit)}: pass --on-gap nan or --on-gap ffill "
                "to fill gaps, or the right --freq"
            )
        total = int(k[-1]) + 1
        if total > MAX_FILL_FACTOR * len(ts) and total - len(ts) > 1_000_000:
            raise UserError(
                f"{self.source.display}: filling the gaps of series '{uid}' at {freq} would grow "
                f"it from {len(ts)} to {total} rows: check --freq"
            )
        if self.on_gap == "nan":
            full = np.full((total, values.shape[1]), np.nan, dtype=np.float32)
            full[k] = values
        else:  # ffill: each inserted row repeats the last present row before it
            full = values[np.searchsorted(k, np.arange(total), side="right") - 1]
        self.n_gaps_filled += total - len(ts)
        return full


def _valid(arr) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False)
