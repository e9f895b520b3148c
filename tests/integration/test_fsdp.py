"""`trainer.strategy=fsdp` end to end, in real 2-process gloo runs through `tsforge.launch`.

FSDP2 (with activation checkpointing and gradient accumulation) trains PatchTST's blocks to
DDP's losses, gradient norms and metrics,
and writes sharded step folders that `tsforge evaluate` reads in one process. Resuming at
another world size, and after SIGTERM: test_fsdp_resume.py.

    pytest tests/integration/test_fsdp.py
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_training import launch, records, train_losses

pytestmark = pytest.mark.integration

PATCHTST = [
    "model=patchtst", "model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.e_layers=2",
    "data.input_size=32", "data.horizon=8", "data.batch_size=32", "data.eval_batch_size=512",
    "trainer.threads=1", "trainer.log_every_steps=1", "launcher.nprocs=2",
]  # fmt: skip


def test_fsdp_trains_like_ddp_and_its_run_evaluates_in_one_process(tmp_path, capsys):
    """Same losses and metrics as DDP (BatchNorm's statistics included: rank 0's, as DDP
    keeps them), in step folders of DCP shards that a single process reads back whole."""
    steps = ["trainer.max_steps=4", "trainer.val_every_steps=2", "trainer.checkpoint_every_steps=2",
             "trainer.accumulate_steps=2", "optim.grad_clip=0.5"]  # fmt: skip
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    code, _, err = launch(ddp, *steps, base=PATCHTST)
    assert code == 0, err
    code, _, err = launch(fsdp, *steps, "trainer.strategy=fsdp",
                          "trainer.activation_checkpointing=true", base=PATCHTST)  # fmt: skip
    assert code == 0, err
    a, b = train_losses(ddp), train_losses(fsdp)
    assert sorted(b) == [1, 2, 3, 4]
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a)
    # the norm of the sharded gradients is the whole one (clipping at 0.5 is in play)
    norms_a = [r["train/grad_norm"] for r in records(ddp) if "train/grad_norm" in r]
    norms_b = [r["train/grad_norm"] for r in records(fsdp) if "train/grad_norm" in r]
    assert norms_b == pytest.approx(norms_a, rel=1e-5) and max(norms_a) > 0.5
    val_a = [r["val/mae"] for r in records(ddp) if "val/mae" in r]
    val_b = [r["val/mae"] for r in records(fsdp) if "val/mae" in r]
    assert val_b == pytest.approx(val_a, rel=1e-5)
    final_a = json.loads((ddp / "metrics.json").read_text())
    final_b = json.loads((fsdp / "metrics.json").read_text())
    assert final_b["world_size"] == 2
    for key in ("mae", "mse"):
        assert final_b["test"][key] == pytest.approx(final_a["test"][key], rel=1e-5)

    folder = fsdp / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best", "latest", "step_00000002",
                                                        "step_00000004"]  # fmt: skip
    assert (folder / "latest").resolve().name == "step_00000004"
    files = {p.name for p in (folder / "step_00000004").iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "trainer.pt"} <= files
    assert not list(folder.glob(".*"))  # no temporary folder left

    from tsforge.cli.main import main

    assert main(["evaluate", str(fsdp), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("mae", "mse"):  # the best step's weights, read without a process group
        assert report["model"][key] == pytest.approx(final_b["test"][key], rel=1e-5)
