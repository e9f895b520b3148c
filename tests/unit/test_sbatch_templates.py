"""The sbatch templates in `slurm/`, rendered without a cluster: each is run by bash with
SLURM's variables set and TSFORGE_DRY_RUN=1, and the commands it would run are compared
with recorded copies in `golden/`. (They run for real in tests/integration/test_slurm.py.)

    pytest tests/unit/test_sbatch_templates.py
    TSFORGE_UPDATE_GOLDEN=1 pytest tests/unit/test_sbatch_templates.py   # re-record
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
JOB = {"SLURM_JOB_ID": "123", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "8",
       "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4"}  # fmt: skip


def render(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], "TSFORGE_DRY_RUN": "1", **env}
    return subprocess.run(["bash", f"slurm/{script}", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TSFORGE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


@pytest.fixture
def overrides_file(tmp_path):
    path = tmp_path / "sweep.txt"
    path.write_text("# model x learning rate\nmodel=nhits optim.lr=1e-3\n\n"
                    "model=dlinear optim.lr=3e-4\nmodel=patchtst optim.lr=1e-4\n")  # fmt: skip
    return path


def test_train_sbatch_takes_counts_from_slurm():
    out = render("train.sbatch", "model=patchtst", "optim.lr=3e-4", **JOB)
    assert out.returncode == 0, out.stderr
    check_golden("train.sbatch.txt", out.stdout)


def test_train_sbatch_refuses_tasks_that_do_not_match_gpus():
    out = render("train.sbatch", **{**JOB, "SLURM_NTASKS_PER_NODE": "1", "SLURM_NTASKS": "2"})
    assert out.returncode == 2
    assert "submit with --ntasks-per-node=4" in out.stderr and not out.stdout


def test_sweep_sbatch_submits_itself_as_one_array(overrides_file):
    out = render("sweep.sbatch", str(overrides_file), "runs/s", PARALLEL="2")
    assert out.returncode == 0, out.stderr
    check_golden("sweep.sbatch.submit.txt", out.stdout.replace(str(overrides_file), "sweep.txt"))


def test_sweep_sbatch_refuses_a_line_that_reads_as_an_option(tmp_path):
    path = tmp_path / "sweep.txt"
    path.write_text("model=nhits\ntrainer.seed=2 --multirun\n")
    out = render("sweep.sbatch", str(path))
    assert out.returncode == 2 and not out.stdout
    assert out.stderr.count("\n") == 1
    assert "run 1: '--multirun' is not a Hydra override" in out.stderr


def test_sweep_sbatch_element_trains_its_line(overrides_file):
    out = render("sweep.sbatch", str(overrides_file), SLURM_ARRAY_JOB_ID="77",
                 SLURM_ARRAY_TASK_ID="2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    check_golden("sweep.sbatch.element.txt", out.stdout)


def test_tensorboard_sbatch_prints_the_port_forward():
    out = render("tensorboard.sbatch", "runs/sweep-77", SLURM_JOB_ID="123",
                 SLURMD_NODENAME="gpu01", USER="ana", SLURM_SUBMIT_HOST="login1")  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Bound to the node's address, which the tunnel names; never to every interface.
    assert "--bind_all" not in out.stdout and "--host gpu01" in out.stdout
    check_golden("tensorboard.sbatch.txt", out.stdout)
