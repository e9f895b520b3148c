"""`launcher=slurm` without a cluster: the checks before submission, the sbatch script
submitit writes for a request (against a recorded copy) and the requeue limit.

    pytest tests/unit/test_slurm_launcher.py
    TSFORGE_UPDATE_GOLDEN=1 pytest tests/unit/test_slurm_launcher.py   # re-record the copy
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tsforge.config.checks import compose_config
from tsforge.errors import UserError
from tsforge.launchers import slurm

GOLDEN = Path(__file__).parent / "golden"
SINFO = "debug*|2|(null)\ngpu|3|gpu:a100:4(S:0-1)\ngpu|1|gpu:a100:8\n"


def launcher(*overrides: str):
    return compose_config(["launcher=slurm", *overrides]).launcher


@pytest.fixture
def cluster(monkeypatch):
    """A cluster as `sinfo` describes it: partition debug (default, CPU) and gpu."""
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm, "_slurm", lambda *cmd, **kw: SINFO)


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:4,gpu:v100:2", 6),
    ("gpu:a100:8(S:0-1),shard:8", 8),
])  # fmt: skip
def test_gpus_in_gres(gres, gpus):
    assert slurm.gpus_in_gres(gres) == gpus


def test_partitions_from_sinfo(cluster):
    assert slurm.partitions() == {
        "debug": {"default": True, "nodes": 2, "gpus_per_node": 0},
        "gpu": {"default": False, "nodes": 4, "gpus_per_node": 8},
    }


def test_request_that_fits_picks_the_default_partition(cluster):
    assert slurm.check_request(launcher("launcher.nodes=2")) == "debug"
    gpu = launcher("launcher.partition=gpu", "launcher.gpus_per_node=8",
                   "launcher.tasks_per_node=8")  # fmt: skip
    assert slurm.check_request(gpu) == "gpu"


@pytest.mark.parametrize("overrides, says", [
    (["launcher.partition=nope"], "launcher.partition=nope is not a partition of this cluster: "
                                  "use one of debug, gpu"),
    (["launcher.gpus_per_node=2", "launcher.tasks_per_node=2"],
     "the nodes of partition debug have at most 0 GPUs"),
    (["launcher.partition=gpu", "launcher.gpus_per_node=16", "launcher.tasks_per_node=16"],
     "at most 8 GPUs each"),
    (["launcher.partition=gpu", "launcher.gpus_per_node=4"], "set launcher.tasks_per_node=4"),
    (["launcher.nodes=3"], "partition debug has 2 nodes"),
    (["launcher.signal=USR3"], "use USR2 (default) or USR1"),
    (["launcher.timeout_min=1", "launcher.signal_delay_s=90"], "between 0 and"),
])  # fmt: skip
def test_requests_the_cluster_cannot_run_are_refused(cluster, overrides, says):
    with pytest.raises(UserError) as err:
        slurm.check_request(launcher(*overrides))
    assert says in str(err.value)


def test_no_sbatch_suggests_launcher_local(tmp_path):
    """The whole command: one line, exit 2, before anything is submitted or trained."""
    env = {**os.environ, "PATH": str(tmp_path)}  # no sbatch (nor anything else) on PATH
    out = subprocess.run(
        [sys.executable, "-m", "tsforge.launch", "launcher=slurm",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert "'sbatch' was not found" in out.stderr and "launcher=local" in out.stderr


def test_sbatch_script_matches_the_recorded_copy(cluster):
    """What submitit writes for a 2-node GPU request: signal, logs kept across requeues,
    fail-fast srun, setup lines and sbatch_extra pass-through."""
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = launcher(
        "launcher.partition=gpu", "launcher.nodes=2", "launcher.gpus_per_node=4",
        "launcher.tasks_per_node=4", "launcher.cpus_per_task=8", "launcher.mem_gb=64",
        "launcher.account=fc", "launcher.timeout_min=240", "launcher.exclusive=true",
        "launcher.setup=[module load cuda/12.4,source /opt/venv/bin/activate]",
        "+launcher.sbatch_extra.reservation=tsforge",
    )  # fmt: skip
    params = slurm.sbatch_parameters(cfg, slurm.check_request(cfg), "tsforge-run")
    text = _make_sbatch_string(command="python -u -m submitit.core._submit /runs/x/slurm",
                               folder="/runs/x/slurm", **params)  # fmt: skip
    golden = GOLDEN / "slurm_gpu_job.sbatch"
    if os.environ.get("TSFORGE_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_requeues_stop_at_max_requeues(monkeypatch, tmp_path):
    job = slurm.TrainingJob({}, str(tmp_path), signal_name="USR2", max_requeues=2)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = job.checkpoint()
    assert again is not None and again.function is job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert job.checkpoint() is None  # submitit then fails the job instead of requeueing
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # came back anyway (SLURM requeued it)
    with pytest.raises(RuntimeError, match="more than launcher.max_requeues=2"):
        job()


def test_slurm_keys_are_typed():
    cfg = launcher("launcher.mem_gb=1.5", "launcher.array_parallelism=4")
    assert OmegaConf.get_type(cfg, "mem_gb") is float and cfg.signal == "USR2"
    with pytest.raises(UserError, match="launcher.nodes"):
        compose_config(["launcher=slurm", "launcher.nodes=two"])


def test_sweep_expands_as_hydra_does():
    from tsforge.config.sweeps import expand

    runs = expand(["launcher=slurm", "model=nhits,dlinear", "optim.lr=1e-3,3e-4"])
    assert [r[1:] for r in runs] == [
        ["model=nhits", "optim.lr=0.001"], ["model=nhits", "optim.lr=0.0003"],
        ["model=dlinear", "optim.lr=0.001"], ["model=dlinear", "optim.lr=0.0003"],
    ]  # fmt: skip


def test_sweep_launcher_kind_comes_from_the_config():
    from tsforge.launchers.sweep import is_slurm_sweep

    assert is_slurm_sweep(["launcher=slurm", "model=nhits,dlinear"])
    assert not is_slurm_sweep(["model=nhits,dlinear"])


def test_a_sweep_cannot_vary_the_resource_request():
    from tsforge.launchers.sweep import submit_sweep

    with pytest.raises(UserError, match="launcher.nodes varies within the sweep"):
        submit_sweep(["launcher=slurm", "launcher.nodes=1,2"])


def test_job_state_is_that_of_the_latest_record_with_the_id(monkeypatch):
    """sacct lists every record with the id, oldest first by database order, not by time:
    older jobs with the same id (ids counted from 1 again) and a requeued job's first start."""
    answers = {
        "squeue": "",
        "sacct": "2026-11-30T14:53:22|COMPLETED\n2026-11-30T12:08:19|REQUEUED\n"
                 "2026-11-30T14:53:15|REQUEUED\n2026-11-30T12:08:43|CANCELLED by 0\n",
    }  # fmt: skip
    monkeypatch.setattr(slurm, "_slurm", lambda cmd, *args, **kw: answers[cmd])
    assert slurm.job_state("2") == "COMPLETED"
    answers["sacct"] = "2026-11-30T12:08:19|COMPLETED\n2026-11-30T15:01:00|CANCELLED by 0\n"
    assert slurm.job_state("2") == "CANCELLED"
    answers["sacct"] = ""
    assert slurm.job_state("2") is None
    answers["squeue"] = "PENDING\n"
    assert slurm.job_state("2") == "PENDING"


@pytest.mark.parametrize("content, says", [
    ("[{\"job_id\": \"12\", \"ranks\": 1", "not readable JSON"),
    ("{\"job_id\": \"12\"}", "not the list"),
    ("[{\"job_id\": \"--user=root\", \"ranks\": 1}]", "is not a SLURM job id"),
    ("[\"12\"]", "is not a SLURM job id"),
])  # fmt: skip
def test_a_run_whose_jobs_file_is_not_ours_is_refused_before_slurm_is_asked(
    monkeypatch, tmp_path, content, says
):
    asked = []
    monkeypatch.setattr(slurm, "_slurm", lambda *cmd, **kw: asked.append(cmd) or "")
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.json").write_text(content)
    with pytest.raises(UserError, match=says):
        slurm.check_not_in_use(tmp_path)
    assert asked == []


def test_jobs_are_recorded_after_those_that_ended(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm, "_slurm", lambda cmd, *a, **kw: "" if cmd == "squeue" else
                        "2026-11-30T10:00:00|COMPLETED\n")  # fmt: skip
    slurm.record_job(tmp_path, "7", tmp_path / "slurm", 2)
    slurm.check_not_in_use(tmp_path)  # job 7 COMPLETED: the run may be submitted again
    slurm.record_job(tmp_path, "8_1", tmp_path / "slurm", 1)
    jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert [(j["job_id"], j["ranks"], len(j["logs"])) for j in jobs] == [("7", 2, 2), ("8_1", 1, 1)]
    monkeypatch.setattr(slurm, "_slurm", lambda cmd, *a, **kw: "RUNNING\n")
    with pytest.raises(UserError, match="already has SLURM job 7 .RUNNING."):
        slurm.check_not_in_use(tmp_path)
