"""`data=mixture` end to end through `python -m tsforge.launch`: the built-in synthetic store
and KernelSynth in one run, on one process and on two gloo DDP processes, with per-source
losses and the realised mixture in metrics.jsonl, the same for both world sizes, and a
resume from a 1-process checkpoint on 2 processes that continues with the same windows.

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


def test_a_mixture_trains_alike_on_one_and_two_processes(single, tmp_path):
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

    code, _, err = launch(tmp_path / "two", "launcher.nprocs=2")
    assert code == 0, err
    two = train_records(tmp_path / "two")
    assert two.keys() == one.keys()
    for step, record in one.items():
        for key, value in record.items():
            if key.startswith("data/share/"):  # the global order: exactly the same windows
                assert two[step][key] == value, (step, key)
            elif key.startswith("train/loss"):
                assert two[step][key] == pytest.approx(value, rel=1e-4), (step, key)
    final_two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert final_two["world_size"] == 2
    assert final_two["test"]["mae"] == pytest.approx(final["test"]["mae"], rel=1e-4)


def test_a_mixture_run_resumes_at_another_world_size(single, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(single, resumed)
    for name in ("latest.pt", "best.pt", "step_00000020.pt"):  # back to step 10's checkpoint
        (resumed / "checkpoints" / name).unlink()
    code, out, err = launch(resumed, "launcher.nprocs=2")
    assert code == 0, err
    assert "resuming from step 10" in out
    straight, again = train_records(single), train_records(resumed)
    for step in (15, 20):  # the same windows after the resume, with 2 ranks instead of 1
        for key in ("data/share/synthetic", "data/share/kernelsynth"):
            assert again[step][key] == straight[step][key], (step, key)
        for key in ("train/loss", "train/loss/synthetic", "train/loss/kernelsynth"):
            assert again[step][key] == pytest.approx(straight[step][key], rel=1e-4), (step, key)
