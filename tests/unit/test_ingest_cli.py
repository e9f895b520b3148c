"""`tsforge data ingest` as users run it: a real subprocess per case.

Every kind of bad input must exit with code 2 and print exactly one line on stderr that names
the file and the row (or the series) and says what to do, with no traceback, and must leave
nothing at --out (nor temporary files beside it).

    pytest tests/unit/test_ingest_cli.py
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tsforge.data.store import Store

REPO = Path(__file__).resolve().parents[2]


def _run(*args, cwd=REPO):
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # a stray warning would add a line
    return subprocess.run(
        [sys.executable, "-m", "tsforge", "data", "ingest", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


HEAD = "unique_id,ds,y\n"
# name -> (file text, extra arguments, words the message must hold)
CASES = {
    "missing column": ("unique_id,date,y\na,2020-01-01,1\n", [], ["no column 'ds'", "--time-col"]),
    "missing target": ("unique_id,ds,value\na,2020-01-01,1\n", [], ["no column 'y'", "--target"]),
    "column without a role": (
        HEAD[:-1] + ",price\na,2020-01-01,1,3\n",
        [],
        ["price", "--hist-exog", "--ignore-cols"],
    ),
    "non-numeric target": (
        HEAD + "a,2020-01-01,1\na,2020-01-02,abc\n",
        [],
        ["row 2", "'abc'", "not a number"],
    ),
    "non-numeric covariate": (
        "unique_id,ds,y,p\na,2020-01-01,1,2\na,2020-01-02,2,x1\n",
        ["--hist-exog", "p"],
        ["row 2", "p 'x1'", "not a number"],
    ),
    "missing target value": (
        HEAD + "a,2020-01-01,1\na,2020-01-02,\na,2020-01-03,3\n",
        [],
        ["row 2", "series 'a'", "--on-nan keep", "--on-nan drop"],
    ),
    "infinite target": (
        HEAD + "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,-inf\n",
        [],
        ["row 3", "-inf"],
    ),
    "unparseable timestamp": (
        HEAD + "a,2020-01-01,1\na,2020-13-01,2\n",
        [],
        ["row 2", "'2020-13-01'", "not a timestamp"],
    ),
    "unparseable first timestamp": (
        HEAD + "a,yesterday,1\n",
        [],
        ["row 1", "'yesterday'", "not a timestamp"],
    ),
    "mixed timestamp formats": (
        HEAD + "a,2020-01-01 00:00:00,1\na,2020-01-01 01:00:00,2\na,2020-01-01,3\n",
        [],
        ["row 3", "one format"],
    ),
    "empty timestamp": (HEAD + "a,2020-01-01,1\na,,2\n", [], ["row 2", "ds is empty"]),
    "empty id": (HEAD + "a,2020-01-01,1\n,2020-01-02,2\n", [], ["row 2", "unique_id is empty"]),
    "duplicate timestamp": (
        HEAD + "a,2020-01-01,1\nb,2020-01-01,1\na,2020-01-02,2\na,2020-01-01,3\n",
        [],
        ["rows 1 and 4", "series 'a'", "two rows"],
    ),
    "gap": (
        HEAD + "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-05,3\n",
        [],
        ["rows 2 and 3", "series 'a'", "skips 2", "--on-gap nan"],
    ),
    "gap against an explicit freq": (
        HEAD + "a,2020-01-01 00:00:00,1\na,2020-01-01 02:00:00,2\n",
        ["--freq", "h"],
        ["rows 1 and 2", "skips 1", "--on-gap"],
    ),
    "off the frequency grid": (
        HEAD + "a,2020-01-01 00:00:00,1\na,2020-01-01 01:00:00,2\na,2020-01-01 02:00:00,2\n"
        "a,2020-01-01 02:30:00,3\n",
        [],
        ["row 4", "series 'a'", "not on the h grid"],
    ),
    "frequencies disagree": (
        HEAD + "a,2020-01-01 00:00:00,1\na,2020-01-01 01:00:00,2\nb,2020-01-01 00:00:00,1\n"
        "b,2020-01-01 02:00:00,2\n",
        [],
        ["series 'b'", "2h", "series 'a'", "--freq"],
    ),
    "header only": (HEAD, [], ["no data rows"]),
    "empty file": ("", [], ["is empty"]),
    "all series too short": (
        HEAD + "a,2020-01-01,1\na,2020-01-02,2\n",
        ["--min-length", "3"],
        ["--min-length 3"],
    ),
    "static changes within a series": (
        "unique_id,ds,y,s\na,2020-01-01,1,3\na,2020-01-02,1,4\n",
        ["--static", "s"],
        ["row 2", "series 'a'", "static"],
    ),
    "wrong number of fields": (
        HEAD + "a,2020-01-01,1\na,2020-01-02\n",
        [],
        ["row 2", "expected 3 fields"],
    ),
    "unknown frequency": (HEAD + "a,2020-01-01,1\n", ["--freq", "fortnight"], ["--freq"]),
    "unknown split preset": (HEAD + "a,2020-01-01,1\n", ["--split", "nope"], ["split preset"]),
    "single-row series only": (HEAD + "a,2020-01-01,1\nb,2020-01-01,1\n", [], ["pass --freq"]),
}
OPTION_CASES = {"unknown frequency", "unknown split preset"}


def _assert_refused(result, out, words):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tsforge: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    text, extra, words = CASES[case]
    src = _csv(tmp_path, text)
    out = tmp_path / "out.zarr"
    result = _run(src, "--out", out, *extra)
    # Messages about an option name the option; all others name the file.
    _assert_refused(result, out, words + ([] if case in OPTION_CASES else [str(src)]))


def test_missing_source_and_unknown_extension(tmp_path):
    out = tmp_path / "out.zarr"
    _assert_refused(_run(tmp_path / "nope.csv", "--out", out), out, ["nope.csv", "does not exist"])
    src = _csv(tmp_path, "x", name="data.txt")
    _assert_refused(_run(src, "--out", out), out, ["data.txt", "unknown input type", ".parquet"])


def test_existing_out_is_refused_then_overwritten(tmp_path):
    src = _csv(tmp_path, HEAD + "a,2020-01-01,1\na,2020-01-02,2\n")
    out = tmp_path / "out.zarr"
    first = _run(src, "--out", out)
    assert first.returncode == 0, first.stderr
    fingerprint = Store(out).fingerprint
    again = _run(src, "--out", out)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert Store(out).fingerprint == fingerprint  # untouched
    src2 = _csv(tmp_path, HEAD + "b,2020-01-01,5\nb,2020-01-02,6\nb,2020-01-03,7\n", "two.csv")
    replaced = _run(src2, "--out", out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert list(Store(out).ids) == ["b"] and Store(out).n_timesteps == 3


def test_success_prints_the_summary_and_json(tmp_path):
    lines = [HEAD.strip()] + [f"s{k % 3},2020-01-{1 + k // 3:02d},{k}" for k in range(12)]
    src = _csv(tmp_path, "\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # unsorted
    out = tmp_path / "ok.zarr"
    text = _run(src, "--out", out, "--split", "ratio_70_10_20", "--codec", "zstd", "--clevel", "3")
    assert text.returncode == 0 and text.stderr == "", text.stderr
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert fields["n_series"] == "3" and fields["n_rows"] == "12" and fields["freq"] == "D"
    store = Store(out)
    assert store.splits == {"kind": "ratio", "train": 0.7, "test": 0.2}
    assert store.attrs["codec"]["cname"] == "zstd"
    np.testing.assert_array_equal(store.series_values(0)[:, 0], [0, 3, 6, 9])
    js = _run(src, "--out", tmp_path / "j.zarr", "--json")
    summary = json.loads(js.stdout)
    assert summary["fingerprint"] == store.fingerprint
    assert set(summary) == {
        "n_series",
        "n_rows",
        "n_dropped_short",
        "n_gaps_filled",
        "n_nan_dropped",
        "freq",
        "fingerprint",
        "path",
        "seconds",
    }


def test_wide_with_covariates_through_the_command(tmp_path):
    rows = [f"2021-03-{d:02d},{d},{d * 2},{d % 2}" for d in range(1, 11)]
    src = _csv(tmp_path, "date,load,temp,holiday\n" + "\n".join(rows) + "\n", "grid.csv")
    out = tmp_path / "w.zarr"
    result = _run(
        src,
        "--out",
        out,
        "--format",
        "wide",
        "--time-col",
        "date",
        "--target",
        "load",
        "--hist-exog",
        "temp",
        "--futr-exog",
        "holiday",
    )
    assert result.returncode == 0, result.stderr
    store = Store(out)
    assert list(store.ids) == ["grid"] and store.columns == ["load", "temp", "holiday"]
    assert store.freq == "D" and store.n_timesteps == 10


def test_rows_are_counted_across_pieces(tmp_path):
    rows = [f"a,2020-01-{d:02d},{d}" for d in range(1, 10)]
    rows[6] = "a,2020-01-07,seven"
    src = _csv(tmp_path, HEAD + "\n".join(rows) + "\n")
    out = tmp_path / "out.zarr"
    result = _run(src, "--out", out, "--piece-rows", "2")
    _assert_refused(result, out, [str(src), "row 7", "'seven'"])


def test_bad_parquet_cell_names_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"unique_id": ["a"] * 4, "ds": [0, 1, 2, 3], "y": ["1", "2", "3", "four"]})
    src = tmp_path / "data.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out.zarr"
    _assert_refused(_run(src, "--out", out), out, [str(src), "row 4", "'four'", "not a number"])


def _spilled(folder) -> bool:
    for path in folder.glob(".out.zarr.spill-*"):
        try:
            return path.stat().st_size > 0
        except FileNotFoundError:  # removed at the end of pass 2
            return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_ingest_leaves_nothing_behind(tmp_path, sig):
    # Big enough that ingest is still running when the signal comes, even on an idle machine.
    n_series, length = 1000, 1000
    ids = np.repeat([f"s{i:03d}" for i in range(n_series)], length)
    hours = np.tile(np.arange(length), n_series)
    ds = (np.datetime64("2020-01-01T00", "h") + hours).astype("M8[s]").astype(str)
    body = "\n".join(f"{u},{t.replace('T', ' ')},{h}" for u, t, h in zip(ids, ds, hours))
    src = _csv(tmp_path, HEAD + body + "\n")
    out = tmp_path / "out.zarr"
    cmd = [sys.executable, "-m", "tsforge", "data", "ingest", str(src), "--out", str(out)]
    # A signal can, rarely (about 1 in 50), be lost while a C library's own handler is
    # installed; the ingest then runs to its end. Such a try must have left a whole store
    # (nothing half-written), and the stop is tried again: what is tested is the clean-up.
    for _ in range(5):
        proc = subprocess.Popen(
            [*cmd, "--piece-rows", "500"], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        # Signal once rows have reached the spill file: ingest is then well inside its passes.
        while proc.poll() is None and not _spilled(tmp_path):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert proc.poll() is None, "ingest finished before it could be signalled"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
        assert Store(out).n_series == n_series  # the signal was lost: a whole store
        shutil.rmtree(out)
    assert proc.returncode == 130, stderr
    assert b"Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))
