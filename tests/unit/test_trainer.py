"""The Trainer and the Evaluator in this process, on the built-in synthetic store shrunk to a
tiny model: what a run does, without a subprocess.

    pytest tests/unit/test_trainer.py

A run stopped at a checkpoint and continued in a new Trainer ends with the very weights of an
uninterrupted run; the evaluator's figures are those of a hand computation over the same
windows; validation keeps the best checkpoint.
"""

from __future__ import annotations

import math

import pytest
import torch

from tsforge.config.checks import compose_config
from tsforge.data import chosen
from tsforge.data.scaling import inverse
from tsforge.train import builders
from tsforge.train.checkpoint import CheckpointManager, load_checkpoint
from tsforge.train.distributed import DistEnv
from tsforge.train.logger import NullLogger
from tsforge.train.loop import Trainer
from tsforge.train.precision import forecast
from tsforge.train.rundir import step_files, step_of

OVERRIDES = ["model=dlinear", "data.input_size=48", "data.horizon=12", "data.num_workers=0",
             "trainer.val_every_steps=4", "trainer.checkpoint_every_steps=4",
             "trainer.threads=1", "optim.lr=1e-2"]  # fmt: skip
ENV = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """The synthetic store is built once into a folder of this test module's own."""
    monkeypatch.setenv("TSFORGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def trainer(run_dir, max_steps: int, extra=()) -> tuple[Trainer, object]:
    """A Trainer built as `tsforge.train.run` builds one, and its config."""
    cfg = compose_config([*OVERRIDES, f"trainer.max_steps={max_steps}", *extra])
    torch.set_num_threads(1)
    builders.seed_everything(cfg.trainer.seed, ENV.rank)
    store = chosen.store(cfg.data)
    loss = builders.loss(cfg.loss)
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, store, ENV)
    model = builders.model(cfg.model, cfg.data, store, loss)
    optimizer, scheduler = builders.optimizer(cfg.optim, cfg.trainer, model)
    run = Trainer(
        model=model, loss=loss, optimizer=optimizer, scheduler=scheduler,
        train_loader=loaders["train"], evaluator=builders.evaluator(cfg, loaders, loss, ENV),
        env=ENV, settings=builders.loop_settings(cfg.trainer, cfg.optim, ENV, validate=True),
        checkpoints=CheckpointManager(run_dir, keep_last=5), logger=NullLogger(),
        describe={"config": {}, "fingerprint": store.fingerprint, "model_name": cfg.model.name},
    )  # fmt: skip
    return run, loaders


def weights(run: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_a_run_continued_from_its_checkpoint_ends_as_an_uninterrupted_one(tmp_path):
    whole, _ = trainer(tmp_path / "whole", max_steps=8)
    whole.train()
    assert whole.step == 8 and math.isfinite(whole.best)
    at_4 = [p for p in step_files(tmp_path / "whole") if step_of(p) == 4]
    assert at_4, step_files(tmp_path / "whole")

    again, _ = trainer(tmp_path / "again", max_steps=8)  # a new process would build this
    again.load_state_dict(load_checkpoint(at_4[0], fingerprint=again.describe["fingerprint"],
                                          model_name="dlinear"))  # fmt: skip
    assert again.step == 4
    again.train()

    assert again.step == 8 and again.best == whole.best
    got, want = weights(again), weights(whole)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key  # bit for bit: same batches, same RNG


def test_training_lowers_the_validation_loss_and_keeps_the_best(tmp_path):
    untrained, _ = trainer(tmp_path / "untrained", max_steps=1)
    before = untrained.evaluator.evaluate(untrained.model, "val")
    run, _ = trainer(tmp_path / "run", max_steps=40)
    run.train()
    after = run.evaluator.evaluate(run.model, "val")
    assert after["loss"] < before["loss"]
    metric = run.s.early_stop_metric
    assert run.best <= after[metric]  # the last validation is one of those the best beat
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    run.model.load_state_dict(best["model"])
    assert run.evaluator.evaluate(run.model, "val")[metric] == pytest.approx(run.best)


def test_the_evaluators_mae_is_the_mean_error_over_every_observed_value(tmp_path):
    run, loaders = trainer(tmp_path / "run", max_steps=2)
    run.train()
    got = run.evaluator.evaluate(run.model, "val")
    abs_sum, count = 0.0, 0.0
    run.model.eval()
    with torch.no_grad():
        for batch in loaders["val"]:
            y_hat = run.loss.point(forecast(run.model, batch, ENV.device, None))
            y = inverse(batch["outsample_y"], batch["loc"], batch["scale"])
            point = inverse(y_hat, batch["loc"], batch["scale"])
            mask = batch["outsample_mask"] * batch["valid"].view(-1, 1, 1)
            abs_sum += float(((point - y).abs() * mask).sum())
            count += float(mask.sum())
    assert count > 0
    assert got["mae"] == pytest.approx(abs_sum / count, rel=1e-5)
