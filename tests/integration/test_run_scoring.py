"""A trained run scored two ways, on one tiny run (DLinear on the built-in synthetic data,
with an input of one season: input_size = season = 24):

- its metrics.json: MASE scaled by each series' in-sample (train rows) seasonal naive error,
  so it is finite where a window alone holds no seasonal pair; Naive1 beside seasonal naive
  there and in the console summary;
- `tsforge score RUN_DIR`: the run forecasts the steps after each history and is scored,
  exactly as `tsforge predict` followed by `tsforge score` on its output.

    python -m pytest -m integration tests/integration/test_run_scoring.py
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsforge.data.freq import Freq
from tsforge.data.store import Store, StoreWriter

pytestmark = pytest.mark.integration

H = 24  # the synthetic data config's horizon


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run_dir, environment, console output) of a tiny trained run."""
    root = tmp_path_factory.mktemp("scored")
    run_dir = root / "run"
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(root / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", "data=synthetic", "model=dlinear",
           "data.input_size=24", "data.season=24", "trainer.max_steps=10",
           "trainer.val_every_steps=5", "trainer.plot_series=0", "trainer.threads=1",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return run_dir, env, proc.stdout


def tsforge(env, *args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tsforge", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_mase_and_both_baselines_with_input_size_of_one_season(run):
    run_dir, _, stdout = run
    final = json.loads((run_dir / "metrics.json").read_text())
    blocks = {"test": final["test"], **final["baseline"]}
    assert set(final["baseline"]) == {"seasonal_naive", "naive1"}
    for name, block in blocks.items():
        for key in ("mae", "mse", "mase", "smape"):
            assert math.isfinite(block[key]) and block[key] > 0, (name, key, block)
    # Naive1 and seasonal naive differ on series with daily seasonality
    assert final["baseline"]["naive1"]["mae"] != final["baseline"]["seasonal_naive"]["mae"]
    summary = next(line for line in stdout.splitlines() if line.startswith("test "))
    n1 = final["baseline"]["naive1"]
    assert f"naive1: mae {n1['mae']:.4f}  mse {n1['mse']:.4f}" in summary


def test_score_of_a_run_directory_is_predict_then_score(run, tmp_path):
    run_dir, env, _ = run
    src = Store(next((Path(env["TSFORGE_CACHE_DIR"]) / "stores").glob("synthetic-*.zarr")))
    freq = Freq.parse(src.freq, src.time_unit)
    history, rows = tmp_path / "history.zarr", []
    with StoreWriter(history, roles=src.roles, freq=src.freq, time_unit=src.time_unit) as w:
        for i, uid in enumerate(src.ids):  # each series but its last H steps
            values, start = src.series_values(i), int(src.starts[i])
            w.add_series(str(uid), start, values[:-H], src.static[i])
            ds = freq.step(start, len(values) - H + np.arange(H)).astype("datetime64[ns]")
            rows.append(pd.DataFrame({"unique_id": str(uid), "ds": ds, "y": values[-H:, 0]}))
        w.commit(splits={"kind": "none"})
    actuals = tmp_path / "actuals.parquet"
    pd.concat(rows).to_parquet(actuals, index=False)

    of_run = json.loads(tsforge(env, "score", run_dir, "--actuals", actuals, "--history",
                                history, "--json"))  # fmt: skip
    forecasts = tmp_path / "forecasts.parquet"
    tsforge(env, "predict", run_dir, "--input", history, "--output", forecasts)
    of_file = json.loads(tsforge(env, "score", forecasts, "--actuals", actuals, "--history",
                                 history, "--season", 24, "--json"))  # fmt: skip
    assert of_run["run_dir"] == str(run_dir) and of_run["season"] == 24  # the run's season
    assert of_run["n_series"] == src.n_series and of_run["horizon"] == H
    assert of_run["metrics"] == of_file["metrics"]
    assert of_run["baselines"] == of_file["baselines"]
    assert 0 < of_run["metrics"]["owa"] < 10
