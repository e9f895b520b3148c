"""`data=mixture` end to end through `python -m tsforge.launch`: the built-in synthetic store
and KernelSynth in one run, with per-source losses and the realised mixture in
metrics.jsonl; a resume of its step-10 checkpoint on two gloo DDP processes continues with the
same windows (the same shares, the same per-source losses) and ends with the same test metrics.

    python -m pytest -q tests/integration/test_mixture_training.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

COMMON = [
    "data=mixture", "model=dlinear",
    "data.sources=[{name: synthetic, weight: 3}, {name: kernelsynth, weight: 1}]",
    "trainer.max_steps=20", "trainer.log_every_steps=5", "trainer.val_every_steps=10",
    "data.batch_size=64", "data.eval_batch_size=512", "trainer.threads=1",
    "trainer.checkpoint_every_steps=10",
]  # fmt: skip


def launch(run_dir: Path, *overrides: str):
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(run_dir.parent / "cache"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "tsforge.launch", *COMMON, *overrides,
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def train_records(run_dir: Path) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "train/loss" in r}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """A 20-step run on one process."""
    run = tmp_path_factory.mktemp("mixture") / "one"
    code, out, err = launch(run)
    assert code == 0, err
    assert "on mixture" in out
    return run


def test_a_mixture_run_logs_per_source_losses_and_shares(single):
    one = train_records(single)
    assert sorted(one) == [5, 10, 15, 20]
    last = one[20]
    for source in ("synthetic", "kernelsynth"):
        assert last[f"train/loss/{source}"] > 0
    shares = last["data/share/synthetic"], last["data/share/kernelsynth"]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(0.75, abs=0.1)  # 1,280 windows drawn 3:1
    final = json.loads((single / "metrics.json").read_text())
    assert final["steps"] == 20 and final["best_val"]["mae"] is not None
    assert final["test"]["mae"] > 0 and final["baseline"]["seasonal_naive"]["mae"] > 0


def test_a_mixture_run_resumes_at_another_world_size(single, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(single, resumed)
    for name in ("latest.pt", "best.pt", "step_00000020.pt"):  # back to step 10's checkpoint
        (resumed / "checkpoints" / name).unlink()
    log = resumed / "metrics.jsonl"
    kept = [ln for ln in log.read_text().splitlines() if json.loads(ln)["step"] <= 10]
    log.write_text("".join(ln + "\n" for ln in kept))
    code, out, err = launch(resumed, "launcher.nprocs=2")
    assert code == 0, err
    assert "resuming from step 10" in out
    straight, again = train_records(single), train_records(resumed)
    for step in (15, 20):  # the same windows after the resume, with 2 ranks instead of 1
        for key in ("data/share/synthetic", "data/share/kernelsynth"):
            assert again[step][key] == straight[step][key], (step, key)
        for key in ("train/loss", "train/loss/synthetic", "train/loss/kernelsynth"):
            assert again[step][key] == pytest.approx(straight[step][key], rel=1e-4), (step, key)
    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((resumed / "metrics.json").read_text())
    assert two["world_size"] == 2
    assert two["test"]["mae"] == pytest.approx(one["test"]["mae"], rel=1e-4)


def test_predict_refuses_a_mixture_run(single, tmp_path):
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(single.parent / "cache")}
    src = tmp_path / "in.csv"
    src.write_text("unique_id,ds,y\na,2020-01-01 00:00:00,1.0\n")
    cmd = [sys.executable, "-m", "tsforge", "predict", str(single), "--input", str(src),
           "--output", str(tmp_path / "out.csv")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "data=mixture" in proc.stderr
    assert not (tmp_path / "out.csv").exists()
