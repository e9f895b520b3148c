"""tsforge as users get it: a wheel built from a clean copy, installed in a fresh virtualenv,
run from a folder that has nothing to do with the repository.

    python -m pytest tests/integration/test_package.py     # about 2 minutes (pip installs)

The main job runs with the configs the wheel carries; a folder of the user's own configs is
found with --config-dir and with hydra.searchpath; `tsforge --version` answers; the run is
evaluated by the installed `tsforge` command; nothing is imported from the checkout.
"""

from __future__ import annotations

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
