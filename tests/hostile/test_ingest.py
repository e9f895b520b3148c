"""Hostile input to `tsforge data ingest` and `tsforge data info`: one real subprocess a case.

Each case is what a careless or hostile user could hand over (the current folder as --out, a
truncated .csv.gz, a pipe, a full disk...); the harness checks the exit code, the one line on
stderr, and that nothing of the user's was removed or changed and nothing half-written is
left (see harness.py). Cases that mount a tmpfs skip when not run as root.

    python -m pytest tests/hostile/test_ingest.py
"""

from __future__ import annotations

import gzip
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.hostile.harness import Case, Interrupt, check
from tests.hostile.inputs import (
    Prepare,
    copy,
    edit_meta,
    fifo,
    folder_with_a_file,
    full_disk,
    link,
    read_only_disk,
    rewrite,
    series,
    write,
)

pytestmark = pytest.mark.integration

DATA = "{data.csv}"
INGEST = ["data", "ingest"]
OK = [*INGEST, DATA, "--out", "{new.zarr}"]  # a valid command, spoilt by one extra option
HEAD = "unique_id,ds,y\n"


# -- hostile inputs of ingest's own (the common ones are in inputs.py) --------------------------
def truncated_gz(ws: Path) -> None:
    packed = gzip.compress((ws / "data.csv").read_bytes())
    (ws / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])


def table(n: int = 200) -> pa.Table:
    ds = np.datetime64("2024-01-01T00", "h") + np.arange(n)
    return pa.table({"unique_id": ["a"] * n, "ds": ds.astype("M8[ns]"), "y": np.arange(n) * 1.0})


def damaged_pages(ws: Path) -> None:
    """A Parquet file whose footer reads but whose data pages are damaged."""
    pq.write_table(table(), ws / "bad.parquet", compression="snappy")
    raw = bytearray((ws / "bad.parquet").read_bytes())
    raw[8:400] = bytes(392)  # just past the leading magic bytes: the first pages
    (ws / "bad.parquet").write_bytes(raw)


def parts(second: pa.Table) -> Prepare:
    """A folder of two Parquet files: a good one, then `second`."""

    def prepare(ws: Path) -> None:
        (ws / "parts").mkdir()
        pq.write_table(table(), ws / "parts" / "a.parquet")
        pq.write_table(second, ws / "parts" / "b.parquet")

    return prepare


def without_rows(first: int, last: int) -> Prepare:
    """gap.csv: data.csv without some rows, a CSV that fails late, when series are written."""

    def cut(text: str) -> str:
        lines = text.splitlines()
        return "\n".join(lines[:first] + lines[last:]) + "\n"

    return rewrite("gap.csv", cut)


def store_of(name: str, n_series: int) -> Callable[[Path], None]:
    """What is left: a store that opens, with `n_series` series."""

    def after(ws: Path) -> None:
        from tsforge.data.store import Store

        assert Store(ws / name).n_series == n_series

    return after


def as_rows(edit: Callable[[list[str]], list[str]] = lambda lines: lines) -> Prepare:
    """rows.csv: data.csv's three series in rows layout (an id, then the values), its lines
    (header first) changed by `edit`."""

    def change(text: str) -> str:
        values: dict[str, list[str]] = {}
        for line in text.splitlines()[1:]:
            uid, _, y = line.split(",")
            values.setdefault(uid, []).append(y)
        width = max(map(len, values.values()))
        lines = [",".join(["id"] + [f"V{k + 2}" for k in range(width)])]
        lines += [",".join([uid, *ys, *[""] * (width - len(ys))]) for uid, ys in values.items()]
        return "\n".join(edit(lines)) + "\n"

    return rewrite("rows.csv", change)


def cell(row: int, col: int, value: str) -> Callable[[list[str]], list[str]]:
    """An edit of rows.csv: data row `row`, column `col` (0: the id) set to `value`."""

    def edit(lines: list[str]) -> list[str]:
        cells = lines[row].split(",")
        cells[col] = value
        return [*lines[:row], ",".join(cells), *lines[row + 1 :]]

    return edit


STRING_TIME = table().set_column(1, "ds", pa.array([f"day {i}" for i in range(200)]))
GAP = without_rows(100, 150)
ROWS = [*INGEST, "{rows.csv}", "--format", "rows"]
ROWS_OK = [*ROWS, "--out", "{new.zarr}"]
AGAIN = as_rows(lambda lines: [*lines, lines[1]])  # series 'a' on a fourth row too
SUB = copy("data.csv", "sub/data.csv")


CASES = [
    # --overwrite replaces only a store, never the user's other things
    Case("out-is-the-current-folder", [*INGEST, DATA, "--out", ".", "--overwrite"],
         code=2, says=r"--out \. is the current folder"),
    Case("out-holds-the-current-folder", [*INGEST, DATA, "--out", "..", "--overwrite"],
         code=2, says=r"current folder or holds it", cwd="store.zarr"),
    Case("out-is-the-input", [*INGEST, DATA, "--out", DATA, "--overwrite"],
         code=2, says=r"is the input .*data\.csv"),
    Case("out-holds-the-input", [*INGEST, "{sub/data.csv}", "--out", "{sub}", "--overwrite"],
         code=2, says=r"is the input .* or holds it", prepare=SUB),
    Case("out-is-a-store-holding-the-input",
         [*INGEST, "{store.zarr/data.csv}", "--out", "{store.zarr}", "--overwrite"],
         code=2, says=r"is the input", prepare=copy("data.csv", "store.zarr/data.csv")),
    Case("out-is-a-folder-not-a-store", [*INGEST, DATA, "--out", "{keep}", "--overwrite"],
         code=2, says=r"keep is not a tsforge store, so --overwrite will not replace it",
         prepare=folder_with_a_file("keep")),
    Case("out-is-a-link", [*INGEST, DATA, "--out", "{link.zarr}", "--overwrite"],
         code=2, says=r"is a symbolic link", prepare=link("link.zarr", "store.zarr")),
    Case("out-exists", [*INGEST, DATA, "--out", "{store.zarr}"],
         code=2, says=r"already exists: pass --overwrite"),
    Case("out-under-a-file", [*INGEST, DATA, "--out", "{data.csv}/x.zarr"],
         code=2, says=r"data\.csv is not a folder"),
    Case("overwrite-a-store", [*INGEST, "{sub/data.csv}", "--out", "{store.zarr}", "--overwrite"],
         code=0, prepare=SUB, changes=["store.zarr"],
         after=store_of("store.zarr", 3)),
    Case("overwrite-fails-late-old-store-kept",
         [*INGEST, "{gap.csv}", "--out", "{store.zarr}", "--overwrite"],
         code=2, says=r"gap\.csv rows .* skips", prepare=GAP),
    Case("failure-removes-the-folders-it-made", [*INGEST, "{gap.csv}", "--out", "{a/b/c.zarr}"],
         code=2, says=r"skips", prepare=GAP),
    # the input: damaged, empty, not text, not a file, odd values
    Case("truncated-gzip", [*INGEST, "{cut.csv.gz}", "--out", "{new.zarr}"],
         code=2, says=r"cut\.csv\.gz cannot be read as CSV .* truncated", prepare=truncated_gz),
    Case("parquet-of-random-bytes", [*INGEST, "{junk.parquet}", "--out", "{new.zarr}"],
         code=2, says=r"junk\.parquet cannot be read as Parquet",
         prepare=write("junk.parquet", bytes(range(256)) * 8)),
    Case("parquet-with-damaged-pages", [*INGEST, "{bad.parquet}", "--out", "{new.zarr}"],
         code=2, says=r"bad\.parquet cannot be read as Parquet", prepare=damaged_pages),
    Case("parquet-folder-of-two-time-types", [*INGEST, "{parts}", "--out", "{new.zarr}"],
         code=2, says=r"b\.parquet: ds holds string unlike earlier files",
         prepare=parts(STRING_TIME)),
    Case("parquet-folder-part-lacks-a-column", [*INGEST, "{parts}", "--out", "{new.zarr}"],
         code=2, says=r"b\.parquet has no column 'y'",
         prepare=parts(table().drop_columns(["y"]))),
    Case("empty-file", [*INGEST, "{empty.csv}", "--out", "{new.zarr}"],
         code=2, says=r"empty\.csv is empty", prepare=write("empty.csv", "")),
    Case("header-only", [*INGEST, "{head.csv}", "--out", "{new.zarr}"],
         code=2, says=r"head\.csv has no data rows", prepare=write("head.csv", HEAD)),
    Case("binary-garbage-named-csv", [*INGEST, "{junk.csv}", "--out", "{new.zarr}"],
         code=2, says=r"junk\.csv: the first line is not a CSV header",
         prepare=write("junk.csv", bytes(range(128, 256)) * 64)),
    Case("not-utf8", [*INGEST, "{latin.csv}", "--out", "{new.zarr}"],
         code=2, says=r"latin\.csv: column unique_id holds bytes that are not UTF-8",
         prepare=write("latin.csv", HEAD.encode() + b"caf\xe9,2024-01-01,1\n")),
    Case("duplicate-column-names", [*INGEST, "{dup.csv}", "--out", "{new.zarr}"],
         code=2, says=r"two columns named 'y'",
         prepare=write("dup.csv", "unique_id,ds,y,y\na,2024-01-01,1,2\n")),
    Case("header-with-an-empty-name", [*INGEST, "{trail.csv}", "--out", "{new.zarr}"],
         code=2, says=r"column 4 of the header has no name",
         prepare=write("trail.csv", "unique_id,ds,y,\na,2024-01-01,1,\n")),
    Case("terminal-escapes-in-an-id", [*INGEST, "{esc.csv}", "--out", "{new.zarr}"],
         code=2, says=r"series '\\x1b\[2J\\x1b\[31mred'",
         prepare=write("esc.csv", HEAD + "\x1b[2J\x1b[31mred,2024-01-01,\n")),
    Case("value-beyond-float64", [*INGEST, "{huge.csv}", "--out", "{new.zarr}"],
         code=2, says=r"huge\.csv row 1: y is inf",
         prepare=write("huge.csv", HEAD + "a,2024-01-01,1e400\na,2024-01-02,1\n")),
    Case("times-too-far-apart", [*INGEST, "{far.csv}", "--out", "{new.zarr}"],
         code=2, says=r"series 'a' runs from .* further apart",
         prepare=write("far.csv", HEAD + "a,-9223372036854775807,1\na,9223372036854775807,2\n")),
    Case("a-pipe", [*INGEST, "{pipe.csv}", "--out", "{new.zarr}"],
         code=2, says=r"pipe\.csv is not a regular file", prepare=fifo("pipe.csv"), timeout=60),
    Case("dev-zero", [*INGEST, "{zero.csv}", "--out", "{new.zarr}"],
         code=2, says=r"zero\.csv is not a regular file", prepare=link("zero.csv", "/dev/zero"),
         timeout=60),
    Case("input-does-not-exist", [*INGEST, "{nope.csv}", "--out", "{new.zarr}"],
         code=2, says=r"nope\.csv does not exist"),
    # options out of range
    Case("clevel-out-of-range", [*OK, "--clevel", "10"], code=2, says=r"--clevel 10 is out"),
    Case("codec-unknown", [*OK, "--codec", "snappy"], code=2, says=r"--codec 'snappy' is not"),
    Case("shuffle-unknown", [*OK, "--shuffle", "byte"], code=2, says=r"--shuffle 'byte' is not"),
    Case("chunk-rows-zero", [*OK, "--chunk-rows", "0"], code=2, says=r"--chunk-rows must be"),
    Case("piece-rows-negative", [*OK, "--piece-rows", "-1"], code=2, says=r"--piece-rows must"),
    Case("min-length-negative", [*OK, "--min-length", "-2"], code=2, says=r"--min-length must"),
    Case("split-not-json", [*OK, "--split", '{"kind": holdout}'], code=2,
         says=r"--split .* is not valid JSON"),
    Case("split-horizon-not-a-number", [*OK, "--split", '{"kind": "holdout", "horizon": "x"}'],
         code=2, says=r"--split .*'horizon' must be a whole number"),
    Case("split-holdout-zero", [*OK, "--split", "holdout:0"], code=2,
         says=r"--split 'holdout:0': H in holdout:H must be a whole number of steps"),
    Case("split-unknown-names-the-forms", [*OK, "--split", "last48"], code=2,
         says=r"--split 'last48' is an unknown split preset .* holdout:H .* JSON spec"),
    # rows input: one row per series
    Case("rows-ingest", [*ROWS_OK, "--split", "holdout:24"], code=0, prepare=as_rows(),
         creates=["new.zarr"], after=store_of("new.zarr", 3)),
    Case("rows-id-on-two-rows", ROWS_OK, code=2, prepare=AGAIN,
         says=r"rows\.csv rows 1 and 4 both hold series 'a': one row per series"),
    Case("rows-id-twice-old-store-kept",
         [*ROWS, "--out", "{store.zarr}", "--overwrite", "--piece-rows", "300"], code=2,
         says=r"rows 1 and 4 both hold series 'a'", prepare=AGAIN),
    Case("rows-cell-not-a-number", ROWS_OK, code=2, prepare=as_rows(cell(2, 7, "oops")),
         says=r"rows\.csv row 2: V8 'oops' is not a number"),
    Case("rows-empty-cell-inside-a-series", ROWS_OK, code=2, prepare=as_rows(cell(3, 10, "")),
         says=r"rows\.csv row 3: V11 is empty or NaN \(series 'c'\): fill it, or pass --on-nan"),
    Case("rows-empty-id", ROWS_OK, code=2, prepare=as_rows(cell(2, 0, "")),
         says=r"rows\.csv row 2: id is empty"),
    Case("rows-row-short-of-cells", ROWS_OK, code=2,
         prepare=as_rows(lambda lines: [*lines[:3], lines[3].rsplit(",", 5)[0]]),
         says=r"rows\.csv row 3: expected 301 fields, found 296"),
    Case("rows-with-time-col", [*ROWS_OK, "--time-col", "ds"], code=2, prepare=as_rows(),
         says=r"--time-col does not apply to --format rows"),
    Case("rows-with-target", [*ROWS_OK, "--target", "V2"], code=2, prepare=as_rows(),
         says=r"--target does not apply to --format rows"),
    Case("rows-start-not-a-date", [*ROWS_OK, "--start", "someday", "--freq", "h"], code=2,
         prepare=as_rows(), says=r"--start 'someday' is not a date/time"),
    Case("rows-start-without-freq", [*ROWS_OK, "--start", "2024-01-01"], code=2,
         prepare=as_rows(), says=r"--start 2024-01-01 needs --freq"),
    Case("rows-duration-without-start", [*ROWS_OK, "--freq", "h"], code=2, prepare=as_rows(),
         says=r"--freq h is a duration, but without a date/time --start"),
    Case("rows-start-past-2262", [*ROWS_OK, "--start", "2262-01-01", "--freq", "D"], code=2,
         prepare=as_rows(), says=r"300 steps of D from 2262-01-01 .* run past"),
    Case("start-with-long-input", [*OK, "--start", "2024-01-01"], code=2,
         says=r"--start is for --format rows"),
    # the disk written to fails: exit 1, the path named, nothing left behind
    Case("disk-full", [*INGEST, DATA, "--out", "{disk/new.zarr}"],
         code=1, says=r"disk/new\.zarr: No space left on device", prepare=full_disk()),
    Case("disk-full-as-the-store-opens", [*INGEST, DATA, "--out", "{disk/new.zarr}"],
         code=1, says=r"disk/new\.zarr: No space left on device",
         prepare=full_disk(leave_kib=24)),
    Case("disk-fills-while-writing", [*INGEST, DATA, "--out", "{disk/new.zarr}"],
         code=1, says=r"disk/new\.zarr: No space left on device",
         prepare=full_disk(leave_kib=40)),
    Case("disk-full-old-store-kept", [*INGEST, DATA, "--out", "{disk/store.zarr}", "--overwrite"],
         code=1, says=r"disk/store\.zarr: No space left",
         prepare=full_disk(leave_kib=40, keep="store.zarr")),
    Case("read-only-folder", [*INGEST, DATA, "--out", "{disk/new.zarr}"],
         code=1, says=r"disk/new\.zarr: Read-only file system", prepare=read_only_disk()),
    # a stop signal mid-way: exit 130, nothing half-written (the old store kept)
    Case("sigterm-while-reading", [*INGEST, "{big.csv}", "--out", "{store.zarr}", "--overwrite",
                                   "--piece-rows", "2000"],
         code=130, says=r"interrupted", prepare=series("big.csv", length=130_000),
         interrupt=Interrupt(signal.SIGTERM, "file:.store.zarr.spill-*")),
    # `data download --dir`: a file of the user's under an official name is never replaced
    Case("download-keeps-the-users-file", ["data", "download", "ETTh1", "--dir", "{dl}"],
         code=2, says=r"dl/ETTh1\.csv is not the official ETTh1\.csv .* will not be replaced",
         prepare=write("dl/ETTh1.csv", "date,OT\n2016-07-01 00:00:00,1.0\n"),
         env={"TSFORGE_DATA_DIR": ""}),
    Case("download-dir-is-a-file", ["data", "download", "ETTh1", "--dir", "{data.csv}"],
         code=2, says=r"cannot make the folder .*data\.csv: a file is in its way",
         env={"TSFORGE_DATA_DIR": ""}),
    # `data info`: only a store
    Case("info-missing-path", ["data", "info", "{nope.zarr}"], code=2,
         says=r"nope\.zarr does not exist"),
    Case("info-on-a-folder", ["data", "info", "{run}"], code=2,
         says=r"run is not a tsforge store \(no zarr\.json"),
    Case("info-on-a-file", ["data", "info", DATA], code=2,
         says=r"data\.csv is not a tsforge store \(not a folder"),
    Case("info-zarr-json-not-json", ["data", "info", "{store.zarr}"], code=2,
         says=r"store\.zarr is not a tsforge store \(its zarr\.json is not valid JSON",
         prepare=write("store.zarr/zarr.json", '{"attributes": {')),
    Case("info-roles-removed", ["data", "info", "{store.zarr}"], code=2,
         says=r"store\.zarr is not a tsforge store \(its metadata has no 'roles'",
         prepare=edit_meta("store.zarr", lambda a: a.pop("roles"))),
    Case("info-roles-wrong-type", ["data", "info", "{store.zarr}"], code=2,
         says=r"its metadata 'roles' is not a dict",
         prepare=edit_meta("store.zarr", lambda a: a.update(roles="y"))),
    Case("info-series-count-lies", ["data", "info", "{store.zarr}"], code=2,
         says=r"store\.zarr is not a tsforge store \(ValueError: indptr has shape",
         prepare=edit_meta("store.zarr", lambda a: a.update(n_series=7))),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ingest(case, workspace):
    check(case, workspace)
