"""Hostile input to `tsforge predict`: one real subprocess a case, on the seed's tiny run.

The run (`run/`) was trained on `store.zarr`: three hourly series a, b, c with the target y.
Each case hands predict what a careless or hostile user could (the input as --output, data
at another frequency, a store of another schema, a full disk...); the harness checks the
exit code, the one line on stderr, and that nothing of the user's was removed or changed and
nothing half-written is left (see harness.py). Cases that mount a tmpfs skip when not root.

    python -m pytest tests/hostile/test_predict.py
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.hostile.conftest import H
from tests.hostile.harness import Case, Interrupt, check
from tests.hostile.inputs import (
    Prepare,
    both,
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

PREDICT = ["predict", "{run}", "--input"]
FROM_CSV = [*PREDICT, "{data.csv}", "--output"]


def ingested(csv: str, store: str, **options) -> Prepare:
    """`store` ingested from the workspace's `csv` (in this process: no command to test)."""

    def prepare(ws: Path) -> None:
        from tsforge.data.ingest import ingest

        ingest(ws / csv, ws / store, **options)

    return prepare


def forecasts(name: str, ids: str = "abc") -> Callable[[Path], None]:
    """What is left: `name` holds H forecasts of nhits (a point loss: no quantile column) for
    each of the series `ids`."""

    def after(ws: Path) -> None:
        path = ws / name
        frame = (pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path))
        assert frame.column_names == ["unique_id", "ds", "nhits"]
        assert frame.num_rows == len(ids) * H
        assert sorted(set(frame.column("unique_id").to_pylist())) == list(ids)

    return after


def lines_of(series: str, change: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    """data.csv's text with the lines of `series` changed (the others as they are)."""

    def edit(text: str) -> str:
        header, *rows = text.splitlines()
        mine = [r for r in rows if r.startswith(f"{series},")]
        return "\n".join([header, *change(mine), *(r for r in rows if r not in mine)]) + "\n"

    return edit


RENAMED = rewrite("value.csv", lambda text: text.replace("unique_id,ds,y", "unique_id,ds,value"))
WITH_PRICE = rewrite("price.csv", lambda text: "\n".join(
    line + (",price" if i == 0 else ",1.0") for i, line in enumerate(text.splitlines())) + "\n")
# series a with 10 rows (input_size is 24): left-padded; series c without a target value
SHORT = rewrite("short.csv", lines_of("a", lambda rows: rows[-10:]))
EMPTY = rewrite("empty.csv", lines_of("c", lambda rows: [r.rsplit(",", 1)[0] + "," for r in rows]))
DOTTED = rewrite("dotted.csv", lambda text: re.sub(r"(\d{4})-(\d\d)-(\d\d)", r"\3.\2.\1", text))

CASES = [
    # a good run, to know the others fail for their own reason
    Case("forecasts-to-parquet", [*FROM_CSV, "{f.parquet}"], code=0, creates=["f.parquet"],
         after=forecasts("f.parquet")),
    # --output: never the input, a folder, a link; its folder must exist
    Case("output-is-the-input", [*FROM_CSV, "{data.csv}", "--overwrite"],
         code=2, says=r"--output .*data\.csv is the input"),
    Case("output-is-the-input-store", [*PREDICT, "{store.zarr}", "--output", "{store.zarr}",
                                       "--overwrite"],
         code=2, says=r"--output .*store\.zarr: name a \.csv or a \.parquet file"),
    Case("output-is-a-folder", [*FROM_CSV, "{keep.csv}", "--overwrite"],
         code=2, says=r"keep\.csv is a folder", prepare=folder_with_a_file("keep.csv")),
    Case("output-is-a-link", [*FROM_CSV, "{f.csv}", "--overwrite"],
         code=2, says=r"f\.csv is a symbolic link", prepare=link("f.csv", "data.csv")),
    Case("output-folder-missing", [*FROM_CSV, "{nowhere/f.csv}"],
         code=2, says=r"the folder .*nowhere does not exist"),
    Case("output-suffix", [*FROM_CSV, "{f.txt}"],
         code=2, says=r"--output .*f\.txt: name a \.csv or a \.parquet file"),
    Case("output-exists", [*FROM_CSV, "{f.csv}"],
         code=2, says=r"f\.csv already exists: pass --overwrite", prepare=write("f.csv", "mine\n")),
    Case("overwrite-a-file", [*FROM_CSV, "{f.csv}", "--overwrite"],
         code=0, prepare=write("f.csv", "old\n"), changes=["f.csv"], after=forecasts("f.csv")),
    # every series is forecast (a short one padded), or the command says which it cannot
    Case("short-series-padded", [*PREDICT, "{short.csv}", "--output", "{f.csv}"], code=0,
         prepare=SHORT, creates=["f.csv"], after=forecasts("f.csv")),
    Case("series-without-values", [*PREDICT, "{empty.csv}", "--output", "{f.csv}"], code=2,
         says=r"1 of the 3 series of --input .*empty\.csv cannot be forecast: 1 have no target "
         r"value \('c'\): .*pass --skip-short to forecast the other 2$", prepare=EMPTY),
    Case("skip-short-writes-the-others", [*PREDICT, "{empty.csv}", "--output", "{f.csv}",
                                          "--skip-short"],
         code=0, prepare=EMPTY, creates=["f.csv"], after=forecasts("f.csv", ids="ab")),
    # input at another frequency, or without the run's columns
    Case("input-at-30min", [*PREDICT, "{m30.csv}", "--output", "{f.csv}"],
         code=2, says=r"steps by 30min .* trained on data stepping by h",
         prepare=series("m30.csv", step_min=30)),
    Case("daily-input-gaps-filled", [*PREDICT, "{daily.csv}", "--output", "{f.csv}",
                                     "--on-gap", "nan"],
         code=2, says=r"steps by D .* trained on data stepping by h",
         prepare=series("daily.csv", step_min=24 * 60)),
    Case("freq-given-not-the-runs", [*FROM_CSV, "{f.csv}", "--freq", "2h"],
         code=2, says=r"--freq 2h is not the run's frequency h"),
    Case("input-lacks-the-target", [*PREDICT, "{value.csv}", "--output", "{f.csv}"],
         code=2, says=r"value\.csv has no column 'y'", prepare=RENAMED),
    Case("input-has-another-column", [*PREDICT, "{price.csv}", "--output", "{f.csv}"],
         code=2, says=r"columns the run's data did not have: price: leave them out with "
         r"--ignore-cols price", prepare=WITH_PRICE),
    Case("input-time-in-another-format", [*PREDICT, "{dotted.csv}", "--output", "{f.csv}"],
         code=2, says=r"is not a timestamp.*--time-format", prepare=DOTTED),
    Case("store-of-another-target", [*PREDICT, "{other.zarr}", "--output", "{f.csv}"],
         code=2, says=r"other\.zarr lacks the run's columns y",
         prepare=both(RENAMED, ingested("value.csv", "other.zarr", target=["value"]))),
    Case("store-with-a-covariate", [*PREDICT, "{other.zarr}", "--output", "{f.csv}"],
         code=2, says=r"other\.zarr has the columns .*price.* but the run was trained on",
         prepare=both(WITH_PRICE, ingested("price.csv", "other.zarr", hist_exog=["price"]))),
    Case("store-damaged", [*PREDICT, "{in.zarr}", "--output", "{f.csv}"],
         code=2, says=r"in\.zarr is not a tsforge store \(its metadata has no 'fingerprint'",
         prepare=both(copy("store.zarr", "in.zarr"),
                      edit_meta("in.zarr", lambda a: a.pop("fingerprint")))),
    Case("input-is-a-pipe", [*PREDICT, "{pipe.csv}", "--output", "{f.csv}"],
         code=2, says=r"pipe\.csv is not a regular file", prepare=fifo("pipe.csv"), timeout=60),
    Case("input-missing", [*PREDICT, "{nope.csv}", "--output", "{f.csv}"],
         code=2, says=r"--input .*nope\.csv does not exist"),
    # the disk written to fails: exit 1, the output named, nothing left behind
    Case("disk-full", [*FROM_CSV, "{disk/f.csv}"],
         code=1, says=r"disk/f\.csv: No space left on device", prepare=full_disk()),
    Case("disk-full-as-forecasts-are-written", [*PREDICT, "{store.zarr}", "--output",
                                                "{disk/f.parquet}"],
         code=1, says=r"disk/f\.parquet: No space left on device", prepare=full_disk()),
    Case("read-only-folder", [*FROM_CSV, "{disk/f.csv}"],
         code=1, says=r"disk/f\.csv: Read-only file system", prepare=read_only_disk()),
    # Ctrl-C while the input is read: exit 130, no output, no temporary store
    Case("sigint-while-reading", [*PREDICT, "{big.csv}", "--output", "{f.csv}"],
         code=130, says=r"interrupted", prepare=series("big.csv", length=130_000),
         interrupt=Interrupt(signal.SIGINT, "file:.f.csv.input-*/.input.zarr.spill-*")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_predict(case, workspace):
    check(case, workspace)
