"""One rank's run, from a resolved config to `metrics.json`. Every launcher ends up here.

    run_rank(cfg, run_dir) -> exit code (0 done, 75 stopped by a signal: requeue and resume)

It joins the process group the environment describes, builds the data, model, loss and
optimizer (`builders`), resumes from `RUN_DIR/checkpoints/latest.pt` when there is one, trains,
and evaluates the best checkpoint on the test split beside the seasonal-naive baseline.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tsforge.errors import EXIT_REQUEUE
from tsforge.train import builders
from tsforge.train.checkpoint import CheckpointManager, load_checkpoint
from tsforge.train.distributed import cleanup_distributed, finish_together, init_distributed
from tsforge.train.logger import make_logger
from tsforge.train.loop import STOPPED, Trainer
from tsforge.train.rundir import record_ranks, update_meta, write_atomic, write_json


def run_rank(cfg: DictConfig, run_dir: Path) -> int:
    env = init_distributed(cfg.trainer.device, cfg.trainer.dist_timeout_s)
    try:
        code = _run(cfg, Path(run_dir), env)
        finish_together(env)
        return code
    finally:
        cleanup_distributed(env)


def _run(cfg: DictConfig, run_dir: Path, env) -> int:
    threads = cfg.trainer.threads or max(1, (os.cpu_count() or 1) // env.world_size)
    torch.set_num_threads(threads)
    builders.seed_everything(cfg.trainer.seed, env.rank)
    run_dir.mkdir(parents=True, exist_ok=True)

    store = builders.store(cfg.data)
    loss = builders.loss(cfg.loss).to(env.device)  # quantile levels live on the device
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, store, env)
    model = builders.model(cfg.model, cfg.data, store, loss).to(env.device)
    optimizer, scheduler = builders.optimizer(cfg.optim, cfg.trainer, model)
    ddp_model = builders.wrap_ddp(model, env, compile=cfg.trainer.compile)
    checkpoints = CheckpointManager(run_dir, keep_last=cfg.trainer.keep_last)
    describe = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "fingerprint": store.fingerprint,
        "model_name": cfg.model.name,
    }

    latest = checkpoints.latest()
    ckpt = load_checkpoint(latest, fingerprint=store.fingerprint, model_name=cfg.model.name) \
        if latest else None
    logger = make_logger(run_dir, env.is_main)
    if env.is_main:
        what = f"resuming from step {ckpt['step']}:" if ckpt else "training"
        print(f"{what} {cfg.model.name} on {cfg.data.name} ({loaders['train'].n_windows:,} "
              f"training windows, world size {env.world_size}) -> {run_dir}", flush=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        update_meta(run_dir, fingerprint=store.fingerprint, world_size=env.world_size,
                    device=env.device, resumed_from=int(ckpt["step"]) if ckpt else None)
    record_ranks(run_dir, env)

    evaluator = builders.evaluator(cfg, loaders, loss, env)
    trainer = Trainer(
        model=ddp_model, loss=loss, optimizer=optimizer, scheduler=scheduler,
        train_loader=loaders["train"], evaluator=evaluator, env=env,
        settings=builders.loop_settings(cfg.trainer, cfg.optim, env),
        checkpoints=checkpoints, logger=logger, describe=describe,
    )  # fmt: skip
    if ckpt:
        trainer.load_state_dict(ckpt)
    try:
        if trainer.train() == STOPPED:
            return EXIT_REQUEUE
        final = _final_metrics(trainer, evaluator, model, checkpoints, store, env)
        if env.is_main:
            write_json(run_dir / "metrics.json", final)
            _summary(run_dir, final)
            logger.hparams(builders.flat_hparams(cfg), {
                f"test/{k}": v for k, v in final["test"].items()
            })
    finally:
        logger.close()
    return 0


def _final_metrics(trainer, evaluator, model, checkpoints, store, env) -> dict:
    """Test metrics of the best checkpoint (else the last weights), with the baseline."""
    best = checkpoints.best()
    if best is not None:
        model.load_state_dict(load_checkpoint(best, fingerprint=store.fingerprint)["model"])
    test = evaluator.evaluate(model, "test", with_baseline=True) if "test" in evaluator.loaders \
        else {}
    naive = {k[len("naive/"):]: v for k, v in test.items() if k.startswith("naive/")}
    return {
        "steps": trainer.step,
        "best_val": {trainer.s.early_stop_metric: trainer.best},
        "test": {k: v for k, v in test.items() if not k.startswith("naive/")},
        "baseline": {"seasonal_naive": naive},
        "train_windows_per_s": trainer.windows_per_s(),
        "world_size": env.world_size,
    }


def _summary(run_dir: Path, final: dict) -> None:
    test, naive = final["test"], final["baseline"]["seasonal_naive"]
    if test:
        print(f"test  mae {test['mae']:.4f}  mse {test['mse']:.4f}   "
              f"(seasonal naive: mae {naive['mae']:.4f}  mse {naive['mse']:.4f})")
    print(f"run directory: {run_dir}\nmetrics: {run_dir / 'metrics.json'}\n"
          f"dashboard: tensorboard --logdir {run_dir / 'tb'}")
