"""The named experiment `etth1_nhits_h96` end to end on the real ETTh1 file, cut to 20 steps.

    TSFORGE_DATA_DIR=/path/to/data python -m pytest -m integration \
        tests/integration/test_etth1_experiment.py

Twenty steps say nothing about accuracy, so nothing here compares the model with a baseline.
The tests check what holds after any training: the run directory, the nested keys of
`metrics.json`, that the metrics are on the train-standardised scale of the long-horizon
protocol (the seasonal-naive baseline in `metrics.json` equals a plain numpy computation on
standardised values, over the same 2785 windows per channel), and that the test split holds
every stride-1 window.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsforge.config.checks import compose_config
from tsforge.data import registry
from tsforge.data.loader import WindowLoader, WindowSpec

pytestmark = pytest.mark.integration

EXPERIMENT = "experiment=etth1_nhits_h96"
TRAIN_END, TEST_START, TEST_END = 8640, 11520, 14400  # ett_hour borders (PROTOCOL.md)
HORIZON = 96
TEST_STARTS = TEST_END - HORIZON + 1 - TEST_START  # 2785 forecast starts, whatever L is


def _data_dir() -> Path:
    folder = os.environ.get("TSFORGE_DATA_DIR")
    if not folder:
        pytest.skip("TSFORGE_DATA_DIR is not set: point it at a folder holding ETTh1.csv")
    if not (Path(folder) / "ETTh1.csv").is_file():
        pytest.skip(f"TSFORGE_DATA_DIR ({folder}) holds no ETTh1.csv")
    return Path(folder)


def _seasonal_naive_numpy(csv_path: Path, season: int = 24) -> tuple[float, float]:
    """MSE, MAE of the seasonal naive forecast on train-standardised values (mean, std with
    ddof=0 of the train rows), over every test window, horizon step and channel."""
    raw = np.genfromtxt(csv_path, delimiter=",", skip_header=1)[:, 1:]
    z = (raw - raw[:TRAIN_END].mean(0)) / raw[:TRAIN_END].std(0)
    starts = np.arange(TEST_START, TEST_START + TEST_STARTS)[:, None]  # forecast starts t
    steps = np.arange(HORIZON)
    err = z[starts + steps] - z[starts - season + steps % season]  # y_hat[t+h] = y[t-m+h%m]
    return float((err**2).mean()), float(np.abs(err).mean())


def test_experiment_composes_to_the_long_horizon_protocol():
    cfg = compose_config([EXPERIMENT])
    assert cfg.model.name == "nhits"
    assert (cfg.data.name, cfg.data.horizon) == ("ETTh1", HORIZON)
    assert cfg.data.multivariate is False  # every channel its own series
    protocol = ("standard", "series", "scaled")  # train-fit z-scores, metrics on them
    assert (cfg.data.scaling, cfg.data.scale_by, cfg.data.metrics_on) == protocol


def test_the_test_split_holds_every_stride_1_window(tmp_path):
    _data_dir()
    cfg = compose_config([EXPERIMENT])
    store = registry.prepare("ETTh1", cache_dir=tmp_path)
    assert store.splits == {"kind": "borders", "train": 8640, "val": 11520, "test": 14400}
    for input_size in (96, cfg.data.input_size):
        spec = WindowSpec(input_size=input_size, horizon=cfg.data.horizon)
        test = WindowLoader(
            store, spec, split="test", global_batch_size=1024, scale_by=cfg.data.scale_by
        )
        assert test.n_windows == 7 * TEST_STARTS == 7 * 2785


def test_twenty_steps_write_the_run_directory_and_scaled_metrics(tmp_path):
    folder = _data_dir()
    run_dir = tmp_path / "run"
    env = dict(os.environ, TSFORGE_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "tsforge.launch", EXPERIMENT, "trainer.max_steps=20",
         "trainer.threads=1", "data.num_workers=0", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

    for name in ("config.yaml", "meta.json", "metrics.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert any((run_dir / "tb").iterdir())

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20
    test, naive = metrics["test"], metrics["baseline"]["seasonal_naive"]
    for value in (test["mse"], test["mae"], naive["mse"], naive["mae"]):
        assert math.isfinite(value) and value > 0
    # On standardised values errors are of order 1 (raw units would give tens for OT).
    assert test["mse"] < 5 and test["mae"] < 2
    # The baseline is computed on the same windows and scale as the model's metrics: it
    # matches numpy over all 2785 windows (leaving one out moves the MSE by 6e-5).
    mse, mae = _seasonal_naive_numpy(folder / "ETTh1.csv")
    assert naive["mse"] == pytest.approx(mse, abs=1e-6)
    assert naive["mae"] == pytest.approx(mae, abs=1e-6)
    assert round(mse, 4) == 0.5122 and round(mae, 4) == 0.4333
