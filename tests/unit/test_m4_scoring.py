"""The official M4 scoring of benchmarks/m4_hourly.py: a case worked by hand, and (with the
real files) Naive2 and sNaive reproducing the official M4 Hourly figures.

    python -m pytest tests/unit/test_m4_scoring.py
    TSFORGE_DATA_DIR=/path/to/data python -m pytest tests/unit/test_m4_scoring.py  # + real files

The real-file test skips, saying why, when TSFORGE_DATA_DIR does not hold the M4 files.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "m4_hourly.py"
sys.path.insert(0, str(_PATH.parent))  # as `python benchmarks/m4_hourly.py` runs: its siblings
_spec = importlib.util.spec_from_file_location("m4_hourly_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_scores_by_hand():
    # season 2; history 1 3 2 6: seasonal differences |2-1|, |6-3| -> scale 2
    # history 4 4 4 8: |4-4|, |8-4| -> scale 2
    histories = [np.array([1.0, 3.0, 2.0, 6.0]), np.array([4.0, 4.0, 4.0, 8.0])]
    truth = np.array([[2.0, 6.0], [0.0, 4.0]])
    forecast = np.array([[1.0, 6.0], [0.0, 2.0]])
    # sMAPE terms: 200*1/3, 0 | 0 (both 0), 200*2/6 -> series 100/3 and 100/3
    # MASE: mean |e| / scale = 0.5 / 2 and 1 / 2
    got = bench.score(forecast, truth, histories, season=2)
    assert got["smape"] == pytest.approx(100 / 3)
    assert got["mase"] == pytest.approx((0.25 + 0.5) / 2)
    # sNaive repeats the last season: [2, 6] and [4, 8]
    np.testing.assert_array_equal(
        bench.seasonal_naive_forecasts(histories, horizon=3, season=2),
        [[2.0, 6.0, 2.0], [4.0, 8.0, 4.0]],
    )


@pytest.mark.integration
def test_naive2_and_snaive_reproduce_the_official_hourly_figures():
    folder = os.environ.get("TSFORGE_DATA_DIR")
    if not folder:
        pytest.skip("TSFORGE_DATA_DIR is not set: point it at a folder holding the M4 files")
    names = ("m4/Hourly-train.csv", "m4/Hourly-test.csv", bench.OFFICIAL)
    for name in names:
        if not (Path(folder) / name).is_file():
            pytest.skip(f"TSFORGE_DATA_DIR ({folder}) holds no {name}")
    with open(Path(folder) / bench.OFFICIAL, newline="") as fh:
        official = {r["method"]: r for r in csv.DictReader(fh)}
    _, histories, truth = bench.load_series("test")
    assert len(histories) == 414 and truth.shape == (414, 48)
    for method, forecasts in (("Naive2", bench.naive2_forecasts(histories)),
                              ("sNaive", bench.seasonal_naive_forecasts(histories))):
        got = bench.score(forecasts, truth, histories)
        # the sheet rounds to 3 decimals
        assert abs(got["smape"] - float(official[method]["sMAPE_Hourly"])) < 5e-4, method
        assert abs(got["mase"] - float(official[method]["MASE_Hourly"])) < 5e-4, method


def test_results_keep_the_rows_of_other_experiments_and_members(tmp_path):
    # a look-back member or ensemble row is its own experiment: writing it keeps the seeds'
    rows = [{"method": "a", "experiment": "m4_hourly_nhits"},
            {"method": "b", "experiment": "m4_hourly_nhits data.input_size=96"},
            {"method": "c", "experiment": "m4_hourly_nhits_tuned"},
            {"method": "sNaive", "experiment": ""}]  # fmt: skip
    path = tmp_path / "m4_hourly.json"
    path.write_text(json.dumps({"rows": rows}))
    kept = bench.other_experiments(path, {"m4_hourly_nhits data.input_size=96"})
    assert [r["method"] for r in kept] == ["a", "c"]
    kept = bench.other_experiments(path, {"m4_hourly_nhits"})
    assert [r["method"] for r in kept] == ["b", "c"]
    assert bench.other_experiments(tmp_path / "absent.json", {"m4_hourly_nhits"}) == []
