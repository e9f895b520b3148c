"""Parts of the trainer that stand alone: environment reading, schedules, checkpoints, configs.

pytest tests/unit/test_train_parts.py
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tsforge.config.checks import check_overrides, compose_config
from tsforge.errors import UserError
from tsforge.train.checkpoint import CheckpointManager, load_checkpoint
from tsforge.train.distributed import DistEnv, read_env, slurm_hosts, slurm_port
from tsforge.train.rundir import record_ranks
from tsforge.train.schedule import lr_factor

RANK_VARS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
             "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST"]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    """No rank variables from the shell that runs the tests (it may be a SLURM job)."""
    for name in RANK_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("rack[1-2]-node[01-04]", [f"rack{r}-node0{n}" for r in (1, 2) for n in (1, 2, 3, 4)]),
        ("n[1-2]x", ["n1x", "n2x"]),
        ("gpu[03-05,09],cpu1", ["gpu03", "gpu04", "gpu05", "gpu09", "cpu1"]),
        ("gpu-node[01-02]", ["gpu-node01", "gpu-node02"]),
        ("node7", ["node7"]),
        ("n[010-011]", ["n010", "n011"]),
    ],
)
def test_slurm_node_lists_expand_and_rank_0_is_on_the_first_host(clean_env, nodelist, hosts):
    clean_env.setenv("SLURM_JOB_NODELIST", nodelist)
    assert slurm_hosts() == hosts
    for name, value in {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7"}.items():
        clean_env.setenv(name, value)
    assert read_env()["master_addr"] == hosts[0]


def test_read_env_prefers_torchrun_then_slurm(clean_env):
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "1234",
        "SLURM_JOB_NODELIST": "gpu[02-03]",
    }
    for name, value in slurm.items():
        clean_env.setenv(name, value)
    env = read_env()
    assert (env["rank"], env["world_size"], env["local_rank"]) == (5, 8, 1)
    assert env["master_addr"] == "gpu02" and env["master_port"] == slurm_port("1234")
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                "MASTER_PORT": "9"}  # fmt: skip
    for name, value in torchrun.items():
        clean_env.setenv(name, value)
    assert read_env() == {
        "rank": 3,
        "local_rank": 1,
        "world_size": 4,
        "master_addr": "h",
        "master_port": 9,
    }
    for name in RANK_VARS:
        clean_env.delenv(name, raising=False)
    assert read_env()["world_size"] == 1


def test_a_single_process_records_itself_as_the_only_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    (tmp_path / "meta.json").write_text('{"world_size": 1}')
    record_ranks(tmp_path, DistEnv(0, 0, 1, torch.device("cpu"), None))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["world_size"] == 1  # kept
    assert meta["ranks"] == [{"rank": 0, "host": socket.gethostname(), "address": None,
                              "cuda_visible_devices": "3", "slurm_step_gpus": None}]  # fmt: skip


def test_leave_now_skips_the_teardown_but_runs_the_multiprocessing_finalizers():
    script = (
        "import atexit, multiprocessing, sys\n"
        "multiprocessing.set_start_method('spawn')  # as in a DDP worker\n"
        "from tsforge.train.distributed import leave_now\n"
        "lock = multiprocessing.Lock()  # a named semaphore that a finalizer removes\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        "print('done', flush=True)\n"
        "leave_now(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "done\n"  # flushed; the atexit handler never ran
    assert "leaked" not in proc.stderr, proc.stderr  # the resource tracker found nothing left


def test_schedules():
    f = lambda s, **kw: lr_factor(s, total=100, **kw)  # noqa: E731
    assert f(0, warmup=10, schedule="cosine", min_ratio=0.0) == pytest.approx(0.1)
    assert f(9, warmup=10, schedule="cosine", min_ratio=0.0) == pytest.approx(1.0)
    assert f(100, warmup=10, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert f(55, warmup=10, schedule="cosine", min_ratio=0.0) == pytest.approx(0.5)
    assert f(50, warmup=0, schedule="constant", min_ratio=0.0) == 1.0
    peak = max(range(100), key=lambda s: f(s, warmup=0, schedule="onecycle", min_ratio=0.0))
    assert peak == 29


def test_checkpoints_keep_last_latest_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        mgr.save(
            {"fingerprint": "f", "model_name": "m", "w": torch.tensor([step])},
            step,
            is_best=step == 20,
        )
    assert [p.name for p in mgr.step_files()] == ["step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(mgr.latest())["w"].item() == 30
    assert load_checkpoint(mgr.best())["w"].item() == 20
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_checkpoint_refusals(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = mgr.save({"fingerprint": "aaa", "model_name": "nhits"}, 1)
    with pytest.raises(UserError, match="fingerprint"):
        load_checkpoint(path, fingerprint="bbb")
    with pytest.raises(UserError, match="holds model 'nhits'"):
        load_checkpoint(path, model_name="dlinear")
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(UserError, match="does not load"):
        load_checkpoint(path)


def test_config_composes_with_typed_model_schema():
    cfg = compose_config(["model=patchtst", "model.d_model=64", "trainer.max_steps=7"])
    assert cfg.model.d_model == 64 and cfg.trainer.max_steps == 7
    assert cfg.model.name == "patchtst"


def test_benchmark_experiment_composes():
    check_overrides(["experiment=bench_nhits_etth1", "trainer.max_steps=5"])
    cfg = compose_config(["experiment=bench_nhits_etth1"])
    data = cfg.data
    assert (data.name, data.input_size, data.horizon, data.batch_size) == ("ETTh1", 480, 96, 256)
    assert (data.scaling, data.scale_by) == ("standard", "series")
    assert cfg.model.name == "nhits" and cfg.model.mlp_units == [[512, 512]] * 3
    assert cfg.trainer.val_every_steps == 0 and cfg.optim.grad_clip == 0


@pytest.mark.parametrize(
    "override, words",
    [
        ("trainer.max_stepz=5", "max_stepz"),
        ("trainer.max_steps=abc", "max_steps"),
        ("model=foo", "nhits"),
        ("model.d_model=8", "d_model"),
        ("+foo=1", "foo"),
        ("+data.colour=1", "data.colour"),
        ("model=nhits,nope", "nope"),
    ],
)
def test_bad_overrides_are_refused(override, words):
    with pytest.raises(UserError, match=words):
        check_overrides([override])


def test_launch_refuses_bad_key_with_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsforge.launch",
            "trainer.max_stepz=5",
            f"hydra.run.dir={tmp_path}/r",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_stepz" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_metrics_on_scaled_needs_series_scaling(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tsforge.launch", "data.metrics_on=scaled",
         f"hydra.run.dir={tmp_path}/r"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "data.scale_by=series" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before the run directory is made
