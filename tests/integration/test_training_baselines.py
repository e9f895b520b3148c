"""A training run's test metrics beside both baselines, with an input no longer than a
season: MASE is scaled by each series' in-sample (train rows) seasonal naive error, so it is
finite where a window alone holds no seasonal pair; Naive1 sits beside seasonal naive in
metrics.json and in the console summary.

    python -m pytest -m integration tests/integration/test_training_baselines.py
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_mase_and_both_baselines_with_input_size_of_one_season(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", "data=synthetic", "data.input_size=24",
           "data.season=24", "trainer.max_steps=10", "trainer.val_every_steps=5",
           "trainer.plot_series=0", "trainer.threads=1",
           "model.mlp_units=[[32,32],[32,32],[32,32]]", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    final = json.loads((run / "metrics.json").read_text())
    blocks = {"test": final["test"], **final["baseline"]}
    assert set(final["baseline"]) == {"seasonal_naive", "naive1"}
    for name, block in blocks.items():
        for key in ("mae", "mse", "mase", "smape"):
            assert math.isfinite(block[key]) and block[key] > 0, (name, key, block)
    # Naive1 and seasonal naive differ on series with daily seasonality
    assert final["baseline"]["naive1"]["mae"] != final["baseline"]["seasonal_naive"]["mae"]
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("test "))
    n1 = final["baseline"]["naive1"]
    assert f"naive1: mae {n1['mae']:.4f}  mse {n1['mse']:.4f}" in summary
