"""Sharded (FSDP2, DCP) checkpoints resume at another world size, in real gloo runs.

A run trained at world size A and stopped, relaunched in the same run directory at world size
B, gives at its first step the loss that an uninterrupted run at A has there (to 1e-5): DCP
reshards the model and optimizer state, and the loader's order does not depend on the world
size at the same global batch. The schedule is constant, so that a run stopped early (a smaller
max_steps) has the weights of the longer one at the stop; dropout is off, since each rank draws
its own masks.

    pytest tests/integration/test_fsdp_resume.py
"""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest

from tests.integration.test_training import launch, train_losses

pytestmark = pytest.mark.integration

COMMON = ["data.batch_size=64", "data.eval_batch_size=512", "trainer.threads=1",
          "trainer.log_every_steps=1", "trainer.val_every_steps=0", "trainer.strategy=fsdp",
          "optim.schedule=constant"]  # fmt: skip
NHITS = [*COMMON, "model.mlp_units=[[32,32],[32,32],[32,32]]", "model.dropout_prob_theta=0"]
DLINEAR = [*COMMON, "model=dlinear", "data.input_size=48", "data.horizon=12"]


def test_one_rank_resumes_at_two(tmp_path):
    """DLinear (no blocks: the root is the one sharded unit). The run at world size 1 is
    stopped at its step-4 checkpoint (the later ones removed, as a crash would leave it)."""
    straight = tmp_path / "straight"
    code, _, err = launch(straight, "trainer.max_steps=6", "trainer.checkpoint_every_steps=4",
                          base=DLINEAR)  # fmt: skip
    assert code == 0, err
    run = tmp_path / "run"
    shutil.copytree(straight, run, symlinks=True)
    for name in ("step_00000006", "latest", "best"):
        path = run / "checkpoints" / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(True)
    (run / "metrics.jsonl").write_text("")

    code, out, err = launch(run, "trainer.max_steps=6", "launcher.nprocs=2", base=DLINEAR)
    assert code == 0, err
    assert "resuming from step 4" in out and "world size 2" in out
    resumed, reference = train_losses(run), train_losses(straight)
    assert sorted(resumed) == [5, 6]
    assert resumed[5] == pytest.approx(reference[5], abs=1e-5)
    assert resumed[6] == pytest.approx(reference[6], abs=1e-5)


def test_two_ranks_stopped_by_sigterm_resume_at_one(tmp_path):
    """NHITS (its blocks sharded one by one) at world size 2, stopped by SIGTERM: the stop
    checkpoints, and one process resumes from the two ranks' shards."""
    straight = tmp_path / "straight"
    code, _, err = launch(straight, "trainer.max_steps=60", "launcher.nprocs=2", base=NHITS)
    assert code == 0, err

    run = tmp_path / "run"
    proc = launch(run, "trainer.max_steps=60", "launcher.nprocs=2", wait=False, base=NHITS)
    deadline = time.time() + 300
    while max(train_losses(run), default=0) < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    stop = max(train_losses(run))
    assert stop < 60, "the run finished before the signal: nothing was resumed"
    latest = (run / "checkpoints" / "latest").resolve()
    assert latest.name == f"step_{stop:08d}"
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in latest.iterdir()}

    code, out, err = launch(run, f"trainer.max_steps={stop + 2}", base=NHITS)
    assert code == 0, err
    assert f"resuming from step {stop}:" in out and "world size 1" in out
    resumed, reference = train_losses(run), train_losses(straight)
    assert resumed[stop + 1] == pytest.approx(reference[stop + 1], abs=1e-5)
    assert resumed[stop + 2] == pytest.approx(reference[stop + 2], abs=1e-5)
    meta = json.loads((run / "meta.json").read_text())
    assert [r["from_step"] for r in meta["resumes"]] == [stop] and meta["world_size"] == 1
