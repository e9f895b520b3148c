"""tsforge as users get it: a wheel built from a clean copy, installed in a fresh virtualenv,
run from a folder that has nothing to do with the repository.

    python -m pytest tests/integration/test_package.py     # about 2 minutes (pip installs)

The main job runs with the configs the wheel carries; a folder of the user's own configs is
found with --config-dir and with hydra.searchpath; `tsforge --version` answers; the run is
evaluated by the installed `tsforge` command; nothing is imported from the checkout.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

import tsforge
from tests.integration.wheel import ROOT, build_wheel, fresh_venv

pytestmark = pytest.mark.integration

QUICK = ["trainer.max_steps=20", "trainer.val_every_steps=10", "trainer.plot_series=0"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the fresh virtualenv, an unrelated folder to run in, its environment)."""
    root = tmp_path_factory.mktemp("package")
    python = fresh_venv(root / "venv", build_wheel(root / "dist"))
    elsewhere = root / "elsewhere"
    (elsewhere / "my-configs" / "experiment").mkdir(parents=True)
    (elsewhere / "my-configs" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_steps: 12\n  val_every_steps: 6\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TSFORGE_CACHE_DIR"] = str(root / "cache")
    return python, elsewhere, env


def run(installed, *args: str) -> subprocess.CompletedProcess:
    python, elsewhere, env = installed
    return subprocess.run([str(python), *args], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_the_package_comes_from_the_virtualenv_not_the_checkout(installed):
    proc = run(installed, "-c", "import tsforge; print(tsforge.__file__)")
    assert proc.returncode == 0, proc.stderr
    where = proc.stdout.strip()
    assert where.startswith(str(installed[0].parent.parent)) and str(ROOT) not in where, where


def test_version(installed):
    proc = run(installed, "-m", "tsforge", "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"tsforge {tsforge.__version__}"


def test_the_main_job_runs_from_another_folder_and_evaluates(installed):
    proc = run(installed, "-m", "tsforge.launch", *QUICK, "hydra.run.dir=runs/main")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = installed[1] / "runs" / "main"
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["steps"] == 20 and final["test"]["mse"] > 0
    assert json.loads((run_dir / "meta.json").read_text())["git"]["commit"] is None
    evaluated = run(installed, "-m", "tsforge", "evaluate", str(run_dir), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["model"]["mse"] == pytest.approx(final["test"]["mse"])


@pytest.mark.parametrize("where", [["--config-dir", "my-configs"],
                                   ["hydra.searchpath=[file://{}/my-configs]"]])  # fmt: skip
def test_a_folder_of_the_users_own_configs_is_found(installed, where):
    where = [w.format(installed[1]) for w in where]
    name = "cd" if where[0] == "--config-dir" else "sp"
    proc = run(installed, "-m", "tsforge.launch", *where, "experiment=mine",
               "trainer.plot_series=0", f"hydra.run.dir=runs/{name}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((installed[1] / "runs" / name / "metrics.json").read_text())["steps"] == 12


def test_ingest_rows_predict_and_score_from_the_wheel(installed):
    """The user's path from a file of their own: one row per series in, forecasts for every
    series, scored; with what the wheel declares (pandas for score, pyarrow for files)."""
    where = installed[1]
    rows = ["id,v1,v2,v3,v4,v5,v6,v7,v8,v9,v10,v11,v12"]
    rows += [f"s{i}," + ",".join(str(10 * i + (t % 4)) for t in range(12)) for i in range(3)]
    (where / "rows.csv").write_text("\n".join(rows) + "\n")
    proc = run(installed, "-m", "tsforge", "data", "ingest", "rows.csv", "--format", "rows",
               "--out", "rows.zarr")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(installed, "-m", "tsforge.launch", "data=store", "data.path=rows.zarr",
               "data.input_size=4", "data.horizon=2", "data.season=4", "model=dlinear",
               "data.split=holdout:2", "data.batch_size=8", "trainer.max_steps=4",
               "trainer.val_every_steps=2",
               "trainer.plot_series=0", "hydra.run.dir=runs/rows")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(installed, "-m", "tsforge", "predict", "runs/rows", "--input", "rows.zarr",
               "--output", "forecasts.csv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(where / "forecasts.csv", newline="") as f:
        forecasts = list(csv.reader(f))
    assert forecasts[0][:2] == ["unique_id", "ds"] and len(forecasts) == 1 + 3 * 2
    actuals = ["unique_id,ds,y"] + [f"s{i},{t},{10 * i + t % 4}" for i in range(3)
                                    for t in (12, 13)]  # fmt: skip
    (where / "actuals.csv").write_text("\n".join(actuals) + "\n")
    proc = run(installed, "-m", "tsforge", "score", "forecasts.csv", "--actuals", "actuals.csv",
               "--history", "rows.zarr", "--season", "4", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["n_series"] == 3 and report["metrics"]["mae"] >= 0
    assert report["baselines"]["seasonal_naive"]["mae"] == pytest.approx(0.0)  # period 4
