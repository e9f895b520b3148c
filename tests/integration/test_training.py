"""Training end to end through `python -m tsforge.launch`, in real processes.

Bitwise resume after SIGTERM, exact DDP metrics with 2 gloo processes, a damaged latest.pt
that falls back and a model change that is refused, fail-fast when a rank dies, and the run
directory / TensorBoard contents.

    pytest tests/integration/test_training.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SMALL = [
    "model.mlp_units=[[64,64],[64,64],[64,64]]",
    "model.dropout_prob_theta=0.1",  # dropout makes the RNG state matter for resume
    "data.batch_size=64",
    "data.eval_batch_size=512",
    "trainer.threads=1",
]


def launch(run_dir: Path, *overrides: str, wait: bool = True, base=SMALL):
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(run_dir.parent / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", *base, *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in records(run_dir) if "train/loss" in r}


def test_run_directory_and_final_metrics(tmp_path):
    run = tmp_path / "run"
    code, out, err = launch(run, "trainer.max_steps=30", "trainer.val_every_steps=10")
    assert code == 0, err
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "metrics.json", "checkpoints", "tb"):
        assert (run / name).exists(), name
    final = json.loads((run / "metrics.json").read_text())
    assert final["steps"] == 30 and final["train_windows_per_s"] > 0
    # MFU against this CPU's measured matmul throughput, from the model's counted FLOPs
    assert 0 < final["mfu"] <= 1 and final["model_flops_per_window"] > 0
    assert final["model_flops_per_window"] == 3 * final["model_forward_flops_per_window"]
    assert final["peak_flops"] > 0 and final["peak_flops_source"].startswith("measured")
    assert final["train_windows_per_s_per_rank"] == final["train_windows_per_s"]
    logged = [r for r in records(run) if "train/loss" in r]
    assert logged and all(0 < r["perf/mfu"] <= 1 and r["perf/windows_per_s_per_rank"] > 0
                          for r in logged)  # fmt: skip
    for block in (final["test"], final["baseline"]["seasonal_naive"]):
        assert block["mse"] > 0 and block["mae"] > 0
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert {"latest.pt", "best.pt", "step_00000030.pt"} <= set(ckpts)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 1 and meta["resumes"] == [] and meta["fingerprint"]
    vals = [r for r in records(run) if "val/mae" in r]
    assert [r["step"] for r in vals] == [10, 20, 30]
    assert "tensorboard --logdir" in out and str(run) in out
    # the console at a glance: progress with ETA, the early-stopping metric by name, a summary
    assert re.search(r"^step 10/30  elapsed \d+:\d\d  ETA \d+:\d\d  loss \d", out, re.M)
    assert re.search(r"^step 30/30  validation  val/mae \d", out, re.M)
    best = min(vals, key=lambda r: r["val/mae"])  # the first of equals: improvement is strict
    assert final["best_val_step"] == best["step"]
    assert f"best_val (val/mae): {final['best_val']['mae']:.4f} at step {best['step']}" in out
    assert re.search(r"^done: 30 steps, wall time \d+:\d\d", out, re.M)


def test_validation_off_and_no_clipping(tmp_path):
    run = tmp_path / "run"
    code, _, err = launch(
        run, "trainer.max_steps=20", "trainer.val_every_steps=0", "optim.grad_clip=0"
    )
    assert code == 0, err
    assert not [k for r in records(run) for k in r if k.startswith("val/")]
    logged = [r for r in records(run) if "train/loss" in r]
    assert [r["step"] for r in logged] == [10, 20]
    assert all(r["train/grad_norm"] > 0 for r in logged)  # still logged without clipping
    final = json.loads((run / "metrics.json").read_text())
    assert final["steps"] == 20 and final["test"]["mae"] > 0  # the last weights are tested
    assert not (run / "checkpoints" / "best.pt").exists()


def test_resume_after_sigterm_is_bitwise_identical(tmp_path):
    steps = ["trainer.max_steps=40", "trainer.log_every_steps=1", "trainer.val_every_steps=20"]
    straight = tmp_path / "straight"
    code, _, err = launch(straight, *steps)
    assert code == 0, err

    stopped = tmp_path / "stopped"
    proc = launch(stopped, *steps, wait=False)
    deadline = time.time() + 300
    while max(train_losses(stopped), default=0) < 12 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    stop_step = max(train_losses(stopped))
    assert stop_step < 40, "the run finished before the signal: nothing was resumed"

    code, out, err = launch(stopped, *steps)
    assert code == 0, err
    assert f"resuming from step {stop_step}" in out
    meta = json.loads((stopped / "meta.json").read_text())
    assert [r["from_step"] for r in meta["resumes"]] == [stop_step]
    assert train_losses(stopped) == train_losses(straight)  # every step, bit for bit
    final_a = json.loads((straight / "metrics.json").read_text())
    final_b = json.loads((stopped / "metrics.json").read_text())
    assert final_a["test"] == final_b["test"]


def test_two_ddp_processes_give_the_single_process_metrics(tmp_path):
    common = ["trainer.max_steps=12", "trainer.val_every_steps=6", "model.dropout_prob_theta=0"]
    code, _, err = launch(tmp_path / "one", *common)
    assert code == 0, err
    code, _, err = launch(tmp_path / "two", *common, "launcher.nprocs=2")
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2
    for key in ("mae", "mse", "smape"):
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-5)
        assert two["baseline"]["seasonal_naive"][key] == pytest.approx(
            one["baseline"]["seasonal_naive"][key], rel=1e-12
        )
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert a.keys() == b.keys()
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a)


def test_damaged_latest_falls_back_and_a_foreign_checkpoint_is_refused(tmp_path):
    run = tmp_path / "run"
    code, _, err = launch(run, "trainer.max_steps=5", "trainer.checkpoint_every_steps=2")
    assert code == 0, err
    latest = run / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    latest.unlink()  # a hard link to the step file: replace it, do not write through it
    latest.write_bytes(data[: len(data) // 3])
    code, out, err = launch(run, "trainer.max_steps=7", "trainer.checkpoint_every_steps=2")
    assert code == 0, err
    assert "skipped latest.pt (truncated" in err and "resuming from step_00000005.pt" in err
    assert "resuming from step 5" in out

    for path in (run / "checkpoints").iterdir():  # nothing intact left: refused, one line
        path.unlink()
        path.write_bytes(b"")
    code, _, err = launch(run, "trainer.max_steps=9")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no checkpoint in" in err, err
    assert "Traceback" not in err

    (run / "checkpoints" / "latest.pt").write_bytes(data)
    code, _, err = launch(run, "trainer.max_steps=10", "model=dlinear", base=SMALL[2:])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.name was \"nhits\"" in err and "new hydra.run.dir" in err


@pytest.mark.parametrize("nprocs", [1, 2])
def test_bad_input_found_in_the_run_leaves_no_run_directory(tmp_path, nprocs):
    run = tmp_path / "run"
    code, _, err = launch(run, "data.input_size=100000", f"launcher.nprocs={nprocs}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "0 windows" in err, err
    assert not run.exists()

    mine = tmp_path / "mine"  # a folder the user made stays, and stays as it was
    (mine / "notes").mkdir(parents=True)
    code, _, err = launch(mine, "data.input_size=100000")
    assert code == 2 and [p.name for p in mine.iterdir()] == ["notes"], err


def test_a_dying_rank_stops_the_run_promptly(tmp_path):
    run = tmp_path / "run"
    proc = launch(
        run,
        "trainer.max_steps=100000",
        "launcher.nprocs=2",
        "trainer.log_every_steps=1",
        wait=False,
    )
    deadline = time.time() + 300
    while not train_losses(run) and time.time() < deadline:
        time.sleep(0.1)
    assert train_losses(run), "training never started"
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True
    ).stdout.split()
    workers = [int(pid) for pid in children]
    assert workers, "no worker processes found"
    os.kill(workers[-1], signal.SIGKILL)
    t0 = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert time.time() - t0 < 60
    assert "exited with code" in err or "failed" in err


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def test_workers_stop_when_their_launcher_is_killed(tmp_path):
    """SIGKILL on the launcher (the OOM killer) leaves no worker training on unlocked: they
    checkpoint and exit, and launching again resumes from there."""
    run = tmp_path / "run"
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", *SMALL, "trainer.max_steps=100000",
           "launcher.nprocs=2", "trainer.log_every_steps=1", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not train_losses(run) and time.time() < deadline:
        time.sleep(0.1)
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"],
                                              capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2, "no worker processes found"
    proc.kill()
    proc.wait()
    deadline = time.time() + 120
    while not all(map(_gone, workers)) and time.time() < deadline:
        time.sleep(0.1)
    assert all(map(_gone, workers)), "workers kept training after their launcher died"
    steps = sorted(int(p.stem[5:]) for p in (run / "checkpoints").glob("step_*.pt"))
    assert steps and max(train_losses(run)) == steps[-1]  # stopped at its checkpoint
    code, out, err = launch(run, f"trainer.max_steps={steps[-1] + 2}", "launcher.nprocs=2")
    assert code == 0, err
    assert f"resuming from step {steps[-1]}" in out
