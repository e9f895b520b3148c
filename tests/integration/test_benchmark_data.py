"""The real benchmark files through the registry: published baselines, computed from the store.

    TSFORGE_DATA_DIR=/path/to/data python -m pytest tests/integration/test_benchmark_data.py

Each test skips, saying which file is missing, when TSFORGE_DATA_DIR does not hold its files.
The figures are computed with plain numpy from `Store.series_values` (not the loader), with
the split borders the store itself carries, so they check the conversion and the split specs.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from tsforge.data import registry, splits

pytestmark = pytest.mark.integration


def _need(*names: str) -> Path:
    folder = os.environ.get("TSFORGE_DATA_DIR")
    if not folder:
        pytest.skip("TSFORGE_DATA_DIR is not set: point it at a folder holding the benchmark files")
    for name in names:
        if not (Path(folder) / name).is_file():
            pytest.skip(f"TSFORGE_DATA_DIR ({folder}) holds no {name}")
    return Path(folder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tsforge-cache")


def _borders(store) -> tuple[int, int, int]:
    """(end of train, start of test, end of test) rows of the store's one series."""
    spec, lengths = store.splits, store.lengths
    _, train_hi = splits.resolve(spec, lengths, "train")
    test_lo, test_hi = splits.resolve(spec, lengths, "test")
    return int(train_hi[0]), int(test_lo[0]), int(test_hi[0])


def _repeat_errors(x_TC, train_hi, test_lo, test_hi, horizon, n_windows=None):
    """MSE and MAE of repeating the last input value, on values standardised with the
    train rows' mean and std (ddof=0), over every window whose forecast lies in the test
    rows (stride 1), averaged over windows, horizon steps and channels."""
    x = x_TC.astype(np.float64)
    z = (x - x[:train_hi].mean(0)) / x[:train_hi].std(0)
    starts = np.arange(test_lo, test_hi - horizon + 1)[:n_windows]  # first forecast rows
    last = z[starts - 1]
    sq = ab = 0.0
    for k in range(horizon):  # one step at a time: memory is windows x channels
        err = z[starts + k] - last
        sq += (err**2).sum()
        ab += np.abs(err).sum()
    count = len(starts) * horizon * z.shape[1]
    return sq / count, ab / count, len(starts)


def _published(dataset: str, horizon: int) -> tuple[float, float]:
    folder = _need("published_long_horizon.csv")
    with open(folder / "published_long_horizon.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if (row["dataset"], row["setting"], int(row["horizon"])) == (
                dataset, "multivariate", horizon
            ) and row["model"].startswith("Repeat"):
                return float(row["mse"]), float(row["mae"])
    pytest.fail(f"published_long_horizon.csv has no Repeat row for {dataset} H={horizon}")


def test_etth1_repeat_baseline_matches_the_published_figure(cache):
    _need("ETTh1.csv")
    store = registry.prepare("ETTh1", cache_dir=cache)
    x = store.series_values(0)
    assert x.shape == (17420, 7) and store.columns[-1] == "OT"
    assert _borders(store) == (8640, 11520, 14400)
    mse, mae, n = _repeat_errors(x, 8640, 11520, 14400, horizon=96)
    assert n == 2785
    # Every window: MSE 1.2944, MAE 0.7132. The published 1.295 came from code that dropped
    # the last partial batch of 32 windows; both agree to within 0.001.
    assert abs(mse - 1.295) <= 1e-3 and round(mae, 3) == 0.713
    assert round(mse, 4) == 1.2944 and round(mae, 4) == 0.7132
    legacy_mse, legacy_mae, _ = _repeat_errors(x, 8640, 11520, 14400, 96, n_windows=n // 32 * 32)
    assert (round(legacy_mse, 3), round(legacy_mae, 3)) == (1.295, 0.713)


@pytest.mark.parametrize(
    "name, dataset, file, rows, channels",
    [
        ("ETTh2", "ETTh2", "ETTh2.csv", 17420, 7),
        ("ETTm1", "ETTm1", "ETTm1.csv", 69680, 7),
        ("Exchange", "Exchange", "exchange_rate.csv", 7588, 8),
    ],
)
def test_repeat_baseline_h96_matches_the_published_row(cache, name, dataset, file, rows, channels):
    _need(file)
    published = _published(dataset, 96)
    store = registry.prepare(name, cache_dir=cache)
    x = store.series_values(0)
    assert x.shape == (rows, channels)
    mse, mae, _ = _repeat_errors(x, *_borders(store), horizon=96)
    assert abs(mse - published[0]) <= 1e-3 and abs(mae - published[1]) <= 1e-3


def test_ili_converts_with_its_ratio_split(cache):
    _need("national_illness.csv")
    store = registry.prepare("ILI", cache_dir=cache)
    assert store.values.shape == (966, 7) and store.freq == "W"
    assert _borders(store) == (int(0.7 * 966), 966 - int(0.2 * 966), 966)


def test_m4_hourly_holds_414_series_and_reproduces_snaive(cache):
    folder = _need("m4/Hourly-train.csv", "m4/Hourly-test.csv")
    store = registry.prepare("M4-Hourly", cache_dir=cache)
    assert store.n_series == 414 and store.ids[0] == "H1" and store.time_unit == "index"
    train_len = store.lengths - 48
    assert train_len.min() == 700 and train_len.max() == 960
    test_lo, test_hi = splits.resolve(store.splits, store.lengths, "test")
    np.testing.assert_array_equal(test_hi - test_lo, 48)

    smape, mase = [], []
    for i in range(store.n_series):
        v = store.series_values(i)[:, 0].astype(np.float64)
        past, future = v[: test_lo[i]], v[test_lo[i] :]
        forecast = np.tile(past[-24:], 2)
        smape.append(np.mean(200 * np.abs(future - forecast) / (np.abs(future) + np.abs(forecast))))
        scale = np.mean(np.abs(past[24:] - past[:-24]))  # in-sample seasonal naive, m = 24
        mase.append(np.mean(np.abs(future - forecast)) / scale)
    assert round(float(np.mean(smape)), 3) == 13.912
    assert round(float(np.mean(mase)), 3) == 1.193
    scores = folder / "m4" / "M4_point_forecast_scores_by_frequency.csv"
    if scores.is_file():
        with open(scores, newline="") as fh:
            official = {r["method"]: r for r in csv.DictReader(fh)}["sNaive"]
        assert abs(np.mean(smape) - float(official["sMAPE_Hourly"])) < 5e-4
        assert abs(np.mean(mase) - float(official["MASE_Hourly"])) < 5e-4


def test_every_held_file_is_found_in_the_data_dir_and_verified(cache):
    folder = _need()
    held = [
        raw for d in registry.DATASETS.values() for raw in d.files if (folder / raw.name).is_file()
    ]
    assert held, f"{folder} holds none of the registry's files"
    for raw in held:
        got = registry.fetch(raw, cache)
        assert got.origin == "data_dir" and got.verified, raw.name
