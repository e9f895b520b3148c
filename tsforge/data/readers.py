"""Streaming readers of CSV and Parquet input, in pieces of bounded size.

`open_source(path)` gives a `CsvSource` (.csv, .csv.gz) or a `ParquetSource` (.parquet, or a
folder of .parquet files). A source knows its columns, decides how its time column is read
(`time_spec`), and yields `Piece`s of about `piece_rows` rows with the id column
dictionary-encoded, the time column as int64 (ns since the epoch, or an integer index), and
numeric columns as float64 with nulls for missing cells. Memory is one piece (for Parquet, one
row group), whatever the input size.

Only regular files are read: a pipe or a device (`/dev/zero`) could block or never end. Bytes
that do not decode (a truncated .csv.gz, a corrupt Parquet page, binary junk, text that is not
UTF-8) are `UserError`s naming the file; a fault of the system while reading (errno set) stays
an `OSError`, naming the file. Bad cells become `UserError`s that name the file, the 1-based
data row and the fix. CSV is
cut into chunks of whole lines here and each chunk is parsed by Arrow with the final types
(fast, multi-threaded); when Arrow refuses a cell, that chunk is parsed again as text to find
the row of the cell, so that the message can name it.

Text timestamps are read with one strptime format for the whole column: the format is taken
from the first row (or `--time-format`), and a later row written in another format is refused
as mixed. Integers in the time column make an integer index ("index" time).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tsforge.errors import UserError

# Tried in order on the first timestamp; the first that reads it is the column's format.
TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y-%m",
)
# Arrow's ISO 8601 reader, used only when the first timestamp has fractional seconds, which
# strptime cannot read; it accepts any ISO 8601 precision, so mixed precisions pass.
ISO8601 = "ISO8601"
_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_ID_TYPE = pa.dictionary(pa.int32(), pa.string())
_TIME_FIX = "fix the value or pass --time-col with the right column"
_HEAD_BYTES = 1 << 20  # read to find the header, the row width and the time format
# A longer line is not a CSV row of a time series: refuse it before it fills the memory.
MAX_LINE_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class TimeSpec:
    """How the time column is read: `unit` "ns" or "index"; `fmt` for text timestamps."""

    unit: str
    fmt: str | None = None


@dataclasses.dataclass
class Origin:
    """Where the records of a piece of rows-layout input come from (`tsforge.data.rows`):
    there an input row holds a whole series, one record per value."""

    rows: np.ndarray  # each record's data row, counted from the piece's first row (0, 1, ...)
    cols: np.ndarray  # each record's input column, as an index into `names`
    names: list[str]
    n_rows: int  # input rows the piece covers
    n_empty: int  # of them, rows without any value


@dataclasses.dataclass
class Piece:
    """A run of consecutive input rows, converted: one record per row (long and wide input),
    or per value of a row (rows input, with its `origin`)."""

    file: str  # as shown in messages
    first_row: int  # 1-based data row (header excluded) of the piece's first row in `file`
    ids: pa.DictionaryArray | None  # None in wide format
    time: pa.Array  # int64, nulls for empty cells
    columns: dict[str, pa.Array]  # float64, nulls for empty cells
    origin: Origin | None = None

    def __len__(self) -> int:
        return len(self.time)

    @property
    def n_rows(self) -> int:
        """Input rows the piece covers."""
        return len(self) if self.origin is None else self.origin.n_rows

    def row(self, i: int) -> int:
        """The data row of record `i`, counted from the piece's first row (0, 1, ...)."""
        return i if self.origin is None else int(self.origin.rows[i])

    def column(self, i: int, col: str) -> str:
        """The input column of record `i`'s value in column `col`."""
        return col if self.origin is None else self.origin.names[int(self.origin.cols[i])]


def open_source(src, *, time_format: str | None = None) -> CsvSource | ParquetSource:
    """The reader for a .csv / .csv.gz / .parquet path, or a folder of .parquet files."""
    path = Path(src)
    name = path.name.lower()
    if not path.exists():
        raise UserError(f"{src} does not exist: check the path")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            raise UserError(
                f"{src} is a folder without .parquet files: give a file or such a folder"
            )
        for file in files:
            _regular(file)
        return ParquetSource(src, files, time_format)
    _regular(path)
    if name.endswith((".csv", ".csv.gz", ".csv.bz2")):
        return CsvSource(src, time_format)
    if name.endswith((".parquet", ".pq")):
        return ParquetSource(src, [path], time_format)
    raise UserError(
        f"{src}: unknown input type '{''.join(path.suffixes) or name}': "
        "give a .csv, .csv.gz or .parquet file (or a folder of .parquet files)"
    )


def _regular(path: Path) -> None:
    """Refuse what is not a plain file: reading a pipe blocks, a device may never end."""
    if not path.is_file():
        raise UserError(
            f"{path} is not a regular file (a pipe, a device or a socket): save the data to a "
            "file and give that file"
        )


@contextlib.contextmanager
def _reading(file: str, kind: str) -> Iterator[None]:
    """Arrow's complaints about the bytes of `file` (errno unset: truncated, corrupt) become
    a `UserError`; a fault of the system (errno set) stays an `OSError`, naming `file`."""
    try:
        yield
    except (OSError, pa.ArrowInvalid) as err:
        if getattr(err, "errno", None) is None:
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{file} cannot be read as {kind} ({why}): it is truncated or damaged; "
                "replace it with an intact copy"
            ) from None
        raise OSError(err.errno, os.strerror(err.errno), file) from None


# -- time -------------------------------------------------------------------------------------
def detect_time(
    value: str | None, *, file: str, col: str, row: int, time_format: str | None
) -> TimeSpec:
    """The `TimeSpec` of a text time column, from its first value."""
    if value is None or not value.strip():
        raise UserError(f"{file} row {row}: {col} is empty: {_TIME_FIX}")
    if time_format:
        if _strptime_ok(value, time_format):
            return TimeSpec("ns", time_format)
        raise UserError(
            f"{file} row {row}: {col} '{value}' does not match --time-format {time_format}"
        )
    if _INT_RE.fullmatch(value):
        return TimeSpec("index")
    fmt = _format_of(value)
    if fmt:
        return TimeSpec("ns", fmt)
    raise UserError(
        f"{file} row {row}: {col} '{value}' is not a timestamp: {_TIME_FIX}, "
        "or give its format with --time-format (e.g. %d.%m.%Y)"
    )


def read_time(value: str, time_format: str | None = None) -> tuple[TimeSpec, int] | None:
    """One text date/time as (its spec, ns since the epoch), read with `time_format` or a
    format of `TIME_FORMATS` (ISO 8601 with fractions too); None if it is not one."""
    value = value.strip()
    if time_format:
        fmt = time_format if _strptime_ok(value, time_format) else None
    else:
        fmt = _format_of(value)
    if fmt is None:
        return None
    if fmt == ISO8601:
        ns = pc.cast(pa.array([value]), pa.timestamp("ns"))
    else:
        ns = pc.strptime(pa.array([value]), format=fmt, unit="ns")
    return TimeSpec("ns", fmt), int(ns.cast(pa.int64())[0].as_py())


def _strptime_ok(value: str, fmt: str) -> bool:
    if fmt == ISO8601:
        try:
            pc.cast(pa.array([value]), pa.timestamp("ns"))
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False
    parsed = pc.strptime(pa.array([value]), format=fmt, unit="ns", error_is_null=True)
    return parsed[0].is_valid


def _format_of(value: str) -> str | None:
    for fmt in TIME_FORMATS:
        if _strptime_ok(value, fmt):
            return fmt
    if "." in value and _strptime_ok(value, ISO8601):
        return ISO8601
    return None


def _time_error(file: str, row: int, col: str, value: str, spec: TimeSpec) -> UserError:
    """Why `value` (at `row`) is refused by a column read as `spec`: mixed formats or junk."""
    other = "integers" if _INT_RE.fullmatch(value) else _format_of(value)
    used = "integers" if spec.unit == "index" else spec.fmt
    if other and other != used:
        return UserError(
            f"{file} row {row}: {col} '{value}' is written as {other} but earlier rows use "
            f"{used}: write every timestamp in one format"
        )
    what = "an integer time index" if spec.unit == "index" else f"a timestamp ({spec.fmt})"
    return UserError(f"{file} row {row}: {col} '{value}' is not {what}: {_TIME_FIX}")


def _number_error(file: str, row: int, col: str, value) -> UserError:
    return UserError(
        f"{file} row {row}: {col} '{value}' is not a number: fix the value "
        "(leave the cell empty for a missing value)"
    )


def _not_utf8(file: str, col: str) -> UserError:
    return UserError(f"{file}: column {col} holds bytes that are not UTF-8 text: save the file "
                     "as UTF-8")  # fmt: skip


# -- CSV --------------------------------------------------------------------------------------
class CsvSource:
    """A comma-separated file (optionally .gz / .bz2 compressed) with a header row.

    The file is cut into chunks of whole lines by this class, and each chunk is parsed by
    Arrow on its own. Arrow's streaming CSV reader is not used: it reads far ahead of the
    consumer (most of a 1 GB file in tests), so its memory grows with the input. Like
    Arrow's default, values must not contain newlines.
    """

    def __init__(self, display, time_format: str | None = None):
        self.display = str(display)
        self.path = Path(display)
        self.time_format = time_format
        with _reading(self.display, "CSV"), self._open() as f:
            self._head = f.read(_HEAD_BYTES)
        self.columns, self._header_bytes = self._header()
        body = self._head[self._header_bytes :]
        self._bytes_per_row = len(body) / max(1, body.count(b"\n"))

    def _open(self):
        return pa.input_stream(str(self.path), compression="detect")

    def reads(self, err: OSError) -> bool:
        """Whether `err` is a fault of reading this source (see `_reading`)."""
        return err.filename == self.display

    def _header(self) -> tuple[list[str], int]:
        head = self._head
        if not head.strip():
            raise UserError(f"{self.display} is empty: give a file with a header and data rows")
        end = head.find(b"\n")
        if end < 0 and b"\r" in head:
            raise UserError(
                f"{self.display} ends its lines with a carriage return alone: save it with "
                "\\n (or \\r\\n) line ends"
            )
        if end < 0 and len(head) == _HEAD_BYTES:
            raise UserError(
                f"{self.display} has no line break in its first {_HEAD_BYTES >> 20} MiB, so it "
                "has no CSV header: give a CSV file (a header line, then one line per row)"
            )
        size = len(head) if end < 0 else end + 1
        try:
            text = head[:size].decode("utf-8-sig").strip("\r\n")
            names = next(csv.reader([text]))
        except (UnicodeDecodeError, csv.Error) as err:
            why = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else str(err)
            raise UserError(
                f"{self.display}: the first line is not a CSV header ({why}): give a CSV file "
                "saved as UTF-8, with a header line"
            ) from None
        seen = set()
        for i, n in enumerate(names):
            if not n.strip():
                raise UserError(
                    f"{self.display}: column {i + 1} of the header has no name: name it "
                    "(or remove the extra comma)"
                )
            if n in seen:
                raise UserError(f"{self.display} has two columns named '{n}': rename one of them")
            seen.add(n)
        return names, size

    def _chunks(self, size: int) -> Iterator[pa.Buffer]:
        """The data rows as buffers of whole lines, about `size` bytes each."""
        with _reading(self.display, "CSV"), self._open() as f:
            data = f.read(size + self._header_bytes)[self._header_bytes :]
            carry = b""
            while data:
                if carry:
                    data = carry + data
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield pa.py_buffer(memoryview(data)[:cut])
                carry = data[cut:]
                if len(carry) > MAX_LINE_BYTES:
                    raise UserError(
                        f"{self.display} has a line longer than {MAX_LINE_BYTES >> 20} MiB: "
                        "it is not a CSV file of rows; give one"
                    )
                data = f.read(size)
            if carry.strip():
                yield pa.py_buffer(carry + b"\n")

    def _parse(
        self,
        chunk: pa.Buffer,
        types: dict[str, pa.DataType],
        *,
        time_fmt: str | None = None,
        handler=None,
    ) -> pa.Table:
        # Single-threaded on purpose: when a threaded parse fails on a bad cell, Arrow's pool
        # threads are still converting as the process exits after the one-line error, and
        # the process then aborts ("terminate called without an active exception") about one
        # time in five instead of exiting with code 2.
        convert = pacsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),
            strings_can_be_null=True,
            timestamp_parsers=[pacsv.ISO8601 if time_fmt == ISO8601 else time_fmt]
            if time_fmt
            else None,
        )
        read = pacsv.ReadOptions(column_names=self.columns, block_size=4 << 20, use_threads=False)
        parse = pacsv.ParseOptions(invalid_row_handler=handler)
        return pacsv.read_csv(
            pa.BufferReader(chunk), read_options=read, parse_options=parse, convert_options=convert
        )

    def time_spec(self, time_col: str) -> TimeSpec:
        """Reads the first rows as text to see how the time column is written."""
        first = next(self._chunks(_HEAD_BYTES), None)
        if first is None:
            raise UserError(
                f"{self.display} has no data rows: give a file with a header and at least one row"
            )
        try:
            table = self._parse(first, {time_col: pa.string()})
        except pa.ArrowInvalid as err:
            raise self._diagnose(err, first, 1, {}) from None
        value = table.column(0)[0].as_py() if table.num_rows else None
        return detect_time(
            value, file=self.display, col=time_col, row=1, time_format=self.time_format
        )

    def pieces(
        self,
        *,
        id_col: str | None,
        time_col: str,
        numeric: list[str],
        time: TimeSpec,
        piece_rows: int,
    ) -> Iterator[Piece]:
        types: dict[str, pa.DataType] = {}
        if id_col is not None:
            types[id_col] = _ID_TYPE
        types[time_col] = pa.int64() if time.unit == "index" else pa.timestamp("ns")
        types.update({c: pa.float64() for c in numeric})
        roles = {time_col: time, **{c: "number" for c in numeric}}
        for row, table in self.tables(types, roles, piece_rows, time_fmt=time.fmt):
            if id_col is not None:
                table = table.unify_dictionaries()
            time_arr = table.column(time_col).combine_chunks()
            if time.unit == "ns":
                time_arr = time_arr.cast(pa.int64())
            yield Piece(
                file=self.display,
                first_row=row,
                ids=table.column(id_col).combine_chunks() if id_col is not None else None,
                time=time_arr,
                columns={c: table.column(c).combine_chunks() for c in numeric},
            )

    def tables(
        self, types: dict[str, pa.DataType], roles: dict, piece_rows: int, *, time_fmt=None
    ) -> Iterator[tuple[int, pa.Table]]:
        """(first data row, table) for runs of about `piece_rows` rows, the columns of `types`
        parsed as such; a cell Arrow refuses is a `UserError` naming its row and column (read
        as a number, or as a time when its `roles` entry is a `TimeSpec`)."""
        # Chunks of about `piece_rows` rows (at most 256 MiB); a chunk always ends a line.
        size = int(min(max(piece_rows * self._bytes_per_row, 64), 256 << 20))
        row = 1
        for chunk in self._chunks(size):
            try:
                table = self._parse(chunk, types, time_fmt=time_fmt)
            except pa.ArrowInvalid as err:
                raise self._diagnose(err, chunk, row, roles) from None
            yield row, table
            row += table.num_rows

    # -- finding the row behind an Arrow error (only on the failure path) -------------------
    def _diagnose(self, err: Exception, chunk: pa.Buffer, first_row: int, roles: dict) -> UserError:
        msg = str(err)
        m = re.search(
            r"In CSV column #(\d+): (?:Row #\d+: )?"
            r"CSV conversion error to \S+: invalid value '(.*)'",
            msg,
            re.S,
        )
        if m and int(m.group(1)) < len(self.columns):
            col, value = self.columns[int(m.group(1))], m.group(2)
            try:
                text = self._parse(chunk, {col: pa.string()}).column(0).combine_chunks()
                i = pc.index(text, pa.scalar(value, pa.string())).as_py()
            except pa.ArrowInvalid as inner:
                if "invalid UTF8" in str(inner):
                    return _not_utf8(self.display, col)
                i = -1
            if i >= 0:
                role = roles.get(col)
                if isinstance(role, TimeSpec):
                    return _time_error(self.display, first_row + i, col, value, role)
                return _number_error(self.display, first_row + i, col, value)
        if "invalid UTF8" in msg:
            m = re.search(r"In CSV column #(\d+)", msg)
            at = int(m.group(1)) if m else len(self.columns)
            return _not_utf8(self.display, self.columns[at] if at < len(self.columns) else "?")
        if "CSV parse error" in msg:
            found = []

            def handler(bad):
                found.append(bad)
                return "error"

            with contextlib.suppress(pa.ArrowInvalid):  # the handler has seen the row
                self._parse(chunk, {self.columns[0]: pa.string()}, handler=handler)
            if found and found[0].number is not None and found[0].number >= 1:
                bad = found[0]
                return UserError(
                    f"{self.display} row {first_row + bad.number - 1}: expected "
                    f"{bad.expected_columns} fields, found {bad.actual_columns} "
                    f"({bad.text[:80]!r}): fix the row (quote values that hold commas)"
                )
        first = msg.strip().splitlines()[0] if msg.strip() else type(err).__name__
        return UserError(f"{self.display} cannot be read as CSV ({first}): fix the file")


# -- Parquet ----------------------------------------------------------------------------------
class ParquetSource:
    """One Parquet file, or a folder of them read in name order (rows counted per file)."""

    def __init__(self, display, files: list[Path], time_format: str | None = None):
        self.display = str(display)
        self.files = files
        self.time_format = time_format
        first = self._file(files[0])
        self.columns = list(first.schema_arrow.names)
        twice = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if twice:
            raise UserError(
                f"{self._name(files[0])} has two columns named '{twice[0]}': rename one of them"
            )

    def _file(self, path: Path) -> pq.ParquetFile:
        with _reading(self._name(path), "Parquet"):
            return pq.ParquetFile(str(path))

    def _batches(self, f: pq.ParquetFile, path: Path, **options) -> Iterator[pa.RecordBatch]:
        """`f.iter_batches(**options)`, with a damaged page refused as `_reading` does."""
        batches = f.iter_batches(**options)
        while True:
            with _reading(self._name(path), "Parquet"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def _name(self, path: Path) -> str:
        return self.display if len(self.files) == 1 else str(path)

    def reads(self, err: OSError) -> bool:
        """Whether `err` is a fault of reading this source (see `_reading`)."""
        return err.filename in {self.display, *map(str, self.files)}

    def time_spec(self, time_col: str) -> TimeSpec:
        f = self._file(self.files[0])
        if f.metadata.num_rows == 0 and len(self.files) == 1:
            raise UserError(f"{self.display} has no data rows: give a file with at least one row")
        t = f.schema_arrow.field(time_col).type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return TimeSpec("ns")
        if pa.types.is_integer(t):
            return TimeSpec("index")
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            for batch in self._batches(f, self.files[0], batch_size=1024, columns=[time_col]):
                if batch.num_rows:
                    return detect_time(
                        batch.column(0)[0].as_py(),
                        file=self._name(self.files[0]),
                        col=time_col,
                        row=1,
                        time_format=self.time_format,
                    )
        raise UserError(
            f"{self._name(self.files[0])}: {time_col} holds {t}, not timestamps, dates or "
            f"integers: {_TIME_FIX}"
        )

    def pieces(
        self,
        *,
        id_col: str | None,
        time_col: str,
        numeric: list[str],
        time: TimeSpec,
        piece_rows: int,
    ) -> Iterator[Piece]:
        need = ([id_col] if id_col is not None else []) + [time_col] + list(numeric)
        for name, row, batch in self.tables(need, piece_rows):
            yield Piece(
                file=name,
                first_row=row,
                ids=_ids(batch.column(id_col)) if id_col is not None else None,
                time=_time(batch.column(time_col), time, name, time_col, row),
                columns={c: numbers(batch.column(c), name, c, row) for c in numeric},
            )

    def tables(self, need: list[str], piece_rows: int) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """(file, first data row, batch) for runs of at most `piece_rows` rows of the
        columns `need`, file by file; a file without one of them is a `UserError`."""
        for path in self.files:
            f = self._file(path)
            name = self._name(path)
            missing = [c for c in need if c not in f.schema_arrow.names]
            if missing:
                raise UserError(
                    f"{name} has no column '{missing[0]}': give every file the same columns"
                )
            row = 1
            for batch in self._batches(f, path, batch_size=piece_rows, columns=need):
                yield name, row, batch
                row += batch.num_rows


def _ids(arr: pa.Array) -> pa.DictionaryArray:
    return pc.dictionary_encode(text(arr))


def text(arr: pa.Array) -> pa.Array:
    """Ids of any Parquet type as strings."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _time(arr: pa.Array, spec: TimeSpec, file: str, col: str, row: int) -> pa.Array:
    t = arr.type
    try:
        if spec.unit == "index":
            if not pa.types.is_integer(t):
                raise UserError(
                    f"{file}: {col} holds {t} but earlier files hold integers: {_TIME_FIX}"
                )
            return arr.cast(pa.int64())
        if pa.types.is_timestamp(t):
            return arr.cast(pa.timestamp("ns", t.tz)).cast(pa.int64())
        if pa.types.is_date(t):
            return arr.cast(pa.timestamp("ns")).cast(pa.int64())
    except pa.ArrowInvalid as err:
        raise UserError(
            f"{file}: {col} cannot be read as ns timestamps ({err}): {_TIME_FIX}"
        ) from None
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)) or spec.fmt is None:
        raise UserError(f"{file}: {col} holds {t} unlike earlier files: give every file one type")
    if spec.fmt == ISO8601:
        bad = _first_bad(arr, lambda a: pc.cast(a, pa.timestamp("ns")))
        if bad is not None:
            raise _time_error(file, row + bad, col, arr[bad].as_py(), spec)
        return pc.cast(arr, pa.timestamp("ns")).cast(pa.int64())
    parsed = pc.strptime(arr, format=spec.fmt, unit="ns", error_is_null=True)
    bad = np.flatnonzero(_valid(arr) & ~_valid(parsed))
    if len(bad):
        raise _time_error(file, row + int(bad[0]), col, arr[int(bad[0])].as_py(), spec)
    return parsed.cast(pa.int64())


def numbers(arr: pa.Array, file: str, col: str, row: int) -> pa.Array:
    """A Parquet column as float64 (nulls kept); text that is not a number is a `UserError`
    naming `file`, the row (counted from `row`) and `col`."""
    t = arr.type
    if (
        pa.types.is_floating(t)
        or pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_null(t)
    ):
        return arr.cast(pa.float64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), pa.scalar(None, t), arr)
        bad = _first_bad(arr, lambda a: pc.cast(a, pa.float64()))
        if bad is None:
            return pc.cast(arr, pa.float64())
        raise _number_error(file, row + bad, col, arr[bad].as_py())
    raise UserError(f"{file}: {col} holds {t}, not numbers: give it numbers or leave it out")


def _valid(arr: pa.Array) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _first_bad(arr: pa.Array, convert) -> int | None:
    """Index of the first element `convert` refuses, by bisection (only on the failure path)."""
    try:
        convert(arr)
        return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    lo, hi = 0, len(arr)  # the first bad element lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(arr.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo
