"""`tsforge score` (in real subprocesses; hostile cases through its entry point): a case
worked by hand, quantile columns in both namings, hostile input (exit 2, one line naming the
fault and the fix), and (with the real files) the official M4 Hourly figures of sNaive,
Naive2 and Naive reproduced.

    python -m pytest tests/unit/test_score.py
    TSFORGE_DATA_DIR=/path/to/data python -m pytest tests/unit/test_score.py   # + M4 files

The M4 test skips, saying why, when TSFORGE_DATA_DIR does not hold the M4 files.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsforge.cli.main import main


def tsforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsforge", *map(str, args)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def score_json(forecasts, actuals, history, *extra) -> dict:
    proc = tsforge("score", forecasts, "--actuals", actuals, "--history", history, *extra,
                   "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def long(rows: dict[str, list[float]], start: dict[str, int], col: str = "y") -> pd.DataFrame:
    return pd.DataFrame([
        {"unique_id": uid, "ds": start[uid] + k, col: v}
        for uid, values in rows.items() for k, v in enumerate(values)
    ])  # fmt: skip


# Two series, season 2: history ds 0..3, forecasts and actuals at ds 4, 5.
HISTORY = {"A": [1.0, 3.0, 2.0, 6.0], "B": [4.0, 4.0, 4.0, 8.0]}
ACTUALS = {"A": [2.0, 6.0], "B": [0.0, 4.0]}
FORECAST = {"A": [1.0, 6.0], "B": [0.0, 2.0]}
AT_0 = {"A": 0, "B": 0}
AT_4 = {"A": 4, "B": 4}


@pytest.fixture
def files(tmp_path):
    """(forecasts.csv, actuals.csv, history.csv) of the hand-worked case; the forecasts
    carry 80% intervals (forecast -/+ 1) as tsforge predict names them."""
    f = long(FORECAST, AT_4, "mine")
    f["mine-lo-80"] = f["mine"] - 1
    f["mine-hi-80"] = f["mine"] + 1
    paths = tmp_path / "forecasts.csv", tmp_path / "actuals.csv", tmp_path / "history.csv"
    f.to_csv(paths[0], index=False)
    long(ACTUALS, AT_4).to_csv(paths[1], index=False)
    long(HISTORY, AT_0).to_csv(paths[2], index=False)
    return paths


def test_scores_by_hand(files):
    got = score_json(*files, "--season", "2")
    assert got["n_series"] == 2 and got["horizon"] == 2 and got["mase_series"] == 2
    # MASE scales (lag 2): A |2-1|, |6-3| -> 2; B |4-4|, |8-4| -> 2.
    # Model: sMAPE terms A 200*1/3, 0; B 0 (both 0), 200*2/6 -> series 100/3 each.
    # MASE: A mean|e| 0.5 / 2 = 0.25; B 1 / 2 = 0.5 -> 0.375. MAE 3/4, MSE 5/4.
    m = got["metrics"]
    assert m["smape"] == pytest.approx(100 / 3)
    assert m["mase"] == pytest.approx(0.375)
    assert (m["mae"], m["mse"]) == pytest.approx((0.75, 1.25))
    # Naive1: A [6, 6], B [8, 8]: errors 4, 0 | 8, 4.
    # sMAPE A 200*4/8, 0 -> 50; B 200*8/8, 200*4/12 -> 400/3; mean 275/3.
    # MASE A 2/2 = 1, B 6/2 = 3 -> 2; MAE 16/4 = 4; MSE (16 + 64 + 16)/4 = 24.
    n1 = got["baselines"]["naive1"]
    assert n1["smape"] == pytest.approx(275 / 3)
    assert (n1["mase"], n1["mae"], n1["mse"]) == pytest.approx((2.0, 4.0, 24.0))
    # Seasonal naive: A [2, 6] exact; B [4, 8]: errors 4, 4 -> sMAPE B (200 + 200/3)/2.
    # sMAPE (0 + 400/3)/2 = 200/3; MASE (0 + 4/2)/2 = 1; MAE 2; MSE 8.
    sn = got["baselines"]["seasonal_naive"]
    assert sn["smape"] == pytest.approx(200 / 3)
    assert (sn["mase"], sn["mae"], sn["mse"]) == pytest.approx((1.0, 2.0, 8.0))
    # Naive2: 4 steps < 3 seasons, so not seasonal: Naive2 is Naive1, and its OWA is 1.
    assert got["baselines"]["naive2"] == pytest.approx({**n1, "owa": 1.0})
    # OWA = (sMAPE / sMAPE_N2 + MASE / MASE_N2) / 2
    assert m["owa"] == pytest.approx(0.5 * ((100 / 3) / (275 / 3) + 0.375 / 2))
    assert sn["owa"] == pytest.approx(0.5 * ((200 / 3) / (275 / 3) + 1 / 2))
    # Per step. h=1: sMAPE (200/3 + 0)/2, MASE (1/2 + 0)/2; h=2: (0 + 200/3)/2, (0 + 1)/2.
    steps = got["per_step"]["model"]
    assert steps["smape"] == pytest.approx([100 / 3, 100 / 3])
    assert steps["mase"] == pytest.approx([0.25, 0.5])
    assert got["per_step"]["naive2"]["owa"] == pytest.approx([1.0, 1.0])
    # Quantiles q.1 = f - 1, q.9 = f + 1; pinball max(t e, (t - 1) e), e = y - q:
    # A h1 y=2: q 0, 2 -> 0.2, 0 (mean 0.1); A h2 y=6: q 5, 7 -> 0.1, 0.1 (0.1);
    # B h1 y=0: q -1, 1 -> 0.1, 0.1 (0.1); B h2 y=4: q 1, 3 -> 0.3, 0.9 (0.6).
    # Scaled CRPS = 2 * 0.9 / sum|y| (12) = 0.15; coverage: B h2 (4 > 3) is out: 3/4.
    assert m["crps"] == pytest.approx(0.15)
    assert m["coverage_80"] == pytest.approx(0.75)
    assert "crps" not in n1 and got["levels"] == [0.1, 0.9]


def test_table_and_a_file_of_two_models(files, tmp_path):
    forecasts, actuals, history = files
    ours = score_json(*files, "--season", "2")
    nixtla = pd.read_csv(forecasts)
    nixtla["other"] = 0.0  # a second model, with quantiles of its own: --model picks one
    nixtla["other-lo-50"] = nixtla["other-hi-50"] = 0.0
    path = tmp_path / "nixtla.parquet"
    nixtla.to_parquet(path, index=False)
    theirs = score_json(path, actuals, history, "--season", "2", "--model", "mine")
    assert theirs["metrics"] == ours["metrics"] and theirs["levels"] == [0.1, 0.9]
    proc = tsforge("score", forecasts, "--actuals", actuals, "--history", history,
                   "--season", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "mine", "naive1", "seasonal_naive", "naive2"]
    assert f"{100 / 3:.4f}" in proc.stdout


def _edit(which: int, change):
    """A case: file `which` (0 forecasts, 1 actuals, 2 history) read, changed, written back."""
    def apply(paths):
        df = pd.read_csv(paths[which], dtype={"unique_id": str})
        change(df).to_csv(paths[which], index=False)
    return apply


HOSTILE = {
    "series missing in actuals": (
        _edit(1, lambda d: d[d.unique_id != "B"]), ["actuals", "'B'", "give"]),
    "series in actuals without forecasts": (
        _edit(1, lambda d: pd.concat([d, d[d.unique_id == "A"].assign(unique_id="C")])),
        ["'C'", "without forecasts"]),
    "duplicated forecast row": (
        _edit(0, lambda d: pd.concat([d, d.iloc[:1]])), ["two rows", "'A'", "keep one"]),
    "duplicated actual row": (
        _edit(1, lambda d: pd.concat([d, d.iloc[-1:]])), ["two rows", "'B'"]),
    "forecast series not in history": (
        _edit(2, lambda d: d[d.unique_id != "A"]), ["not in --history", "'A'"]),
    "horizons differ between series": (
        _edit(0, lambda d: d.iloc[:-1]), ["different lengths", "same horizon"]),
    "actuals shorter than the forecasts": (
        _edit(1, lambda d: d[d.ds < 5]), ["no value", "ds 5", "horizons"]),
    "actuals longer than the forecasts": (
        _edit(1, lambda d: pd.concat([d, d.assign(ds=d.ds + 2)])), ["4 rows", "2 steps"]),
    "NaN forecast": (
        _edit(0, lambda d: d.assign(mine=[np.nan, 1.0, 2.0, 3.0])), ["'mine'", "row 1", "NaN"]),
    "NaN actual": (_edit(1, lambda d: d.assign(y=[1.0, np.nan, 2.0, 3.0])), ["row 2", "NaN"]),
    "non-numeric actual": (
        _edit(1, lambda d: d.assign(y=["1", "x", "2", "3"])), ["row 2", "'x'"]),
    "forecasts overlap the history": (
        _edit(2, lambda d: d.assign(ds=d.ds + 1)), ["within its history", "--history"]),
    "no y column in the history": (_edit(2, lambda d: d.rename(columns={"y": "v"})), ["'y'"]),
    "integer forecasts, timestamped actuals": (
        _edit(1, lambda d: d.assign(ds=pd.Timestamp("2020-01-01") + pd.to_timedelta(d.ds, "h"))),
        ["differ in kind"]),
}  # fmt: skip


def refused(capsys, *args) -> str:
    """The one line `tsforge score ARGS` (the command's own entry point, in this process
    for speed) prints on stderr, having exited 2 with nothing on stdout."""
    code = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsforge: error: "), err
    return lines[0]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_refused_in_one_line(files, capsys, name):
    change, words = HOSTILE[name]
    change(files)
    line = refused(capsys, files[0], "--actuals", files[1], "--history", files[2],
                   "--season", "2", "--json")  # fmt: skip
    for word in words:
        assert word in line, (name, word, line)


@pytest.mark.parametrize("args,words", [
    (["--season", "0"], ["--season 0"]),
    ([], ["--season is needed"]),
    (["--season", "2", "--model", "nope"], ["no forecast column 'nope'", "mine"]),
])  # fmt: skip
def test_bad_options_are_refused(files, capsys, args, words):
    line = refused(capsys, files[0], "--actuals", files[1], "--history", files[2], *args)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("rows,words", [
    ("id,a,b\nA,2,6\nB,0,4\n", None),                      # the same actuals, as rows
    ("id,a,b\nB,0,4\nA,2,6\n", None),                      # in any order of series
    ("id,a,b,c\nA,2,6,\nB,0,4,\n", None),                  # padded with empty cells
    ("id,a,b\nA,2,6\nB,0,\n", ["row 2", "'B'", "has 1 value but", "2 steps"]),
    ("id,a,b,c\nA,2,,6\nB,0,4,\n", ["row 1", "'A'", "3 values"]),
    ("id,a,b\nA,2,6\nB,0,4\nC,1,1\n", ["1 series without forecasts", "'C'"]),
    ("id,a,b\nA,2,6\n", ["no rows of 1 forecast series", "'B'"]),
])  # fmt: skip
def test_actuals_as_one_row_per_series(files, capsys, tmp_path, rows, words):
    forecasts, actuals, history = files
    path = tmp_path / "actuals_rows.csv"
    path.write_text(rows)
    if words is None:
        want = score_json(forecasts, actuals, history, "--season", "2")
        got = score_json(forecasts, path, history, "--season", "2", "--actuals-format", "rows")
        assert got["metrics"] == want["metrics"] and got["baselines"] == want["baselines"]
        return
    line = refused(capsys, forecasts, "--actuals", path, "--history", history, "--season", "2",
                   "--actuals-format", "rows")  # fmt: skip
    for word in words:
        assert word in line, (word, line)


def _m4_folder() -> Path:
    folder = os.environ.get("TSFORGE_DATA_DIR")
    if not folder:
        pytest.skip("TSFORGE_DATA_DIR is not set: point it at a folder holding the M4 files")
    names = ("m4/Hourly-train.csv", "m4/Hourly-test.csv",
             "m4/M4_point_forecast_scores_by_frequency.csv")  # fmt: skip
    for name in names:
        if not (Path(folder) / name).is_file():
            pytest.skip(f"TSFORGE_DATA_DIR ({folder}) holds no {name}")
    return Path(folder) / "m4"


@pytest.mark.integration
def test_m4_hourly_official_figures(tmp_path):
    from tsforge.data import m4
    from tsforge.metrics import naive2

    folder = _m4_folder()
    train = list(m4.read_rows(folder / "Hourly-train.csv"))
    test = dict(m4.read_rows(folder / "Hourly-test.csv"))
    H, season = 48, 24
    history, actuals, forecasts = [], [], []
    for uid, y in train:
        n = len(y)
        history.append(pd.DataFrame({"unique_id": uid, "ds": np.arange(n), "y": y}))
        actuals.append(pd.DataFrame({"unique_id": uid, "ds": n + np.arange(H), "y": test[uid]}))
        forecasts.append(pd.DataFrame({
            "unique_id": uid, "ds": n + np.arange(H),
            "sNaive": np.tile(y[-season:], H // season),  # the last day, twice
            "Naive2": naive2(y, H, season),
            "Naive": np.full(H, y[-1]),
        }))  # fmt: skip
    paths = tmp_path / "history.parquet", tmp_path / "actuals.csv", tmp_path / "f.parquet"
    pd.concat(history).to_parquet(paths[0], index=False)
    pd.concat(actuals).to_csv(paths[1], index=False)
    pd.concat(forecasts).to_parquet(paths[2], index=False)
    with open(folder / "M4_point_forecast_scores_by_frequency.csv", newline="") as fh:
        official = {r["method"]: r for r in csv.DictReader(fh)}
    baseline_of = {"sNaive": "seasonal_naive", "Naive2": "naive2", "Naive": "naive1"}
    for method, baseline in baseline_of.items():
        got = score_json(paths[2], paths[1], paths[0], "--season", season, "--model", method)
        assert got["n_series"] == 414 and got["horizon"] == H
        want = official[method]
        # The sheet gives sMAPE and MASE to 3 decimals (so ours lie within 5e-4 of them),
        # and its OWA is computed from those rounded figures; so ours may differ from it by
        # what rounding by d = 5e-4 moves (s/S + m/M)/2:
        # (d/S + d s/S^2 + d/M + d m/M^2)/2 (about 2e-4 for sNaive, 7e-4 for Naive).
        s, m = float(want["sMAPE_Hourly"]), float(want["MASE_Hourly"])
        S, M = float(official["Naive2"]["sMAPE_Hourly"]), float(official["Naive2"]["MASE_Hourly"])
        d = 5e-4
        owa_tolerance = 0.5 * (d / S + d * s / S**2 + d / M + d * m / M**2)
        if method == "sNaive":  # the official test file as it ships: one row per series
            rows = score_json(paths[2], folder / "Hourly-test.csv", paths[0], "--season", season,
                              "--model", method, "--actuals-format", "rows")  # fmt: skip
            assert rows["metrics"] == got["metrics"]
        for block in (got["metrics"], got["baselines"][baseline]):
            assert abs(block["smape"] - s) <= d, method
            assert abs(block["mase"] - m) <= d, method
            assert abs(block["owa"] - float(want["OWA_Hourly"])) <= owa_tolerance, method


def test_actuals_as_rows_from_a_pipe_or_a_missing_file_are_named(files, capsys, tmp_path):
    forecasts, _, history = files
    fifo = tmp_path / "actuals_pipe.csv"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a regular file"), (tmp_path / "nope.csv", "does not exist")):
        line = refused(capsys, forecasts, "--actuals", path, "--history", history, "--season",
                       "2", "--actuals-format", "rows")  # fmt: skip
        assert words in line and str(path) in line, line
