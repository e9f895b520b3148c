"""One rank's run, from a resolved config to `metrics.json`. Every launcher ends up here.

    run_rank(cfg, run_dir) -> exit code (0 done, 75 stopped by a signal: requeue and resume)

It joins the process group the environment describes, takes the run directory's lock (rank 0,
unless the launcher holds it for its processes), builds the data, model, loss and optimizer
(`builders`), resumes from the newest intact checkpoint when there is one (after comparing
the config with the run's: `resume`), trains, and evaluates the best checkpoint on the test
split beside the seasonal-naive baseline.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tsforge.data import chosen
from tsforge.errors import EXIT_REQUEUE, UserError
from tsforge.train import builders, stop
from tsforge.train.allocator import set_mmap_threshold, threshold_kib
from tsforge.train.checkpoint import (
    CheckpointManager,
    WeightsMismatch,
    init_checkpoint,
    load_model_weights,
    shape_text,
)
from tsforge.train.distributed import cleanup_distributed, finish_together, init_distributed
from tsforge.train.hparams import flat_hparams, varied
from tsforge.train.lock import RunLock
from tsforge.train.logger import duration, make_logger
from tsforge.train.loop import PRUNE_REQUEST, PRUNED, STOPPED, Trainer
from tsforge.train.resume import config_changes
from tsforge.train.rundir import (
    as_config,
    read_config,
    record_ranks,
    remove_temporaries,
    update_meta,
    write_atomic,
    write_json,
)


def run_rank(cfg: DictConfig, run_dir: Path, *, locked: bool = False) -> int:
    """`locked`: the launcher already holds the run directory's lock for this process."""
    env = init_distributed(cfg.trainer.device, cfg.trainer.dist_timeout_s,
                           group_of_one=cfg.trainer.strategy == "fsdp")
    try:
        own_lock = env.is_main and not locked
        if own_lock:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir) if own_lock else contextlib.nullcontext():
            code = _run(cfg, Path(run_dir), env)
        finish_together(env)
        return code
    finally:
        cleanup_distributed(env)


def _trained_config(ckpt: dict, where: Path) -> dict:
    """The config a checkpoint was trained with (its own copy), over the schema."""
    saved = ckpt.get("config")
    return OmegaConf.to_container(as_config(saved if isinstance(saved, dict) else {},
                                            f"the config in {where}"), resolve=True)  # fmt: skip


def _run(cfg: DictConfig, run_dir: Path, env) -> int:
    started = time.monotonic()
    threads = cfg.trainer.threads or max(1, (os.cpu_count() or 1) // env.world_size)
    torch.set_num_threads(threads)
    # before any tensor: freed memory given back, not kept (FSDP2 on CPU; see the module)
    set_mmap_threshold(threshold_kib(cfg.trainer.strategy, env.device,
                                     cfg.trainer.malloc_mmap_threshold_kb))  # fmt: skip
    builders.seed_everything(cfg.trainer.seed, env.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Sharded saves write from a thread on GPUs (tsforge.train.checkpoint says why not on CPUs)
    checkpoints = CheckpointManager(run_dir, keep_last=cfg.trainer.keep_last,
                                    async_save=env.device.type == "cuda")  # fmt: skip
    if env.is_main:  # the lock is held: no other launch is writing these
        remove_temporaries(run_dir)
        checkpoints.remove_temporaries()

    store = chosen.store(cfg.data)
    loss = builders.loss(cfg.loss).to(env.device)  # quantile levels live on the device
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, store, env)
    model = builders.model(cfg.model, cfg.data, store, loss).to(env.device)
    flops = builders.model_flops(cfg, store, loss, env)
    config = OmegaConf.to_container(cfg, resolve=True)
    describe = {"config": config, "fingerprint": store.fingerprint, "model_name": cfg.model.name}

    ckpt, note = checkpoints.resume_point(fingerprint=store.fingerprint,
                                          model_name=cfg.model.name)  # fmt: skip
    changed = _changes(ckpt, config, run_dir, checkpoints) if ckpt else {}
    init = None
    if cfg.trainer.init_from and ckpt:
        if env.is_main:
            print(f"tsforge: note: trainer.init_from={cfg.trainer.init_from} is ignored: the "
                  f"run resumes from its own checkpoint (step {ckpt['step']})", file=sys.stderr,
                  flush=True)  # fmt: skip
    elif cfg.trainer.init_from:  # into the plain module, before any wrapper shards or copies it
        init = _init_from(model, str(cfg.trainer.init_from), str(cfg.model.name))
    net = builders.parallel(cfg.trainer, model, env)  # `model` itself, sharded, under fsdp
    optimizer, scheduler = builders.optimizer(cfg.optim, cfg.trainer, net)
    validate = "val" in loaders
    if env.is_main:
        _announce(cfg, run_dir, env, loaders, ckpt, note, changed, validate, model, flops)
        if init:
            print(f"  initialised from {init['path']} (step {init['step']})", flush=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        update_meta(run_dir, fingerprint=store.fingerprint, world_size=env.world_size,
                    device=env.device, resumed_from=int(ckpt["step"]) if ckpt else None,
                    changed=changed, init_from=init)  # fmt: skip
    record_ranks(run_dir, env)

    evaluator = builders.evaluator(cfg, loaders, loss, env)
    logger = make_logger(run_dir, env.is_main, evaluator.metric_names() if validate else ())
    trainer = Trainer(
        model=net, loss=loss, optimizer=optimizer, scheduler=scheduler,
        train_loader=loaders["train"], evaluator=evaluator, env=env,
        settings=builders.loop_settings(cfg.trainer, cfg.optim, env, validate=validate),
        checkpoints=checkpoints, logger=logger, describe=describe,
        prune_request=run_dir / PRUNE_REQUEST, flops=flops,
    )  # fmt: skip
    if ckpt:
        _load_state(trainer, ckpt, checkpoints)
    start = trainer.step
    try:
        # A stop during the final evaluation waits for it: the run is then complete.
        ended = trainer.train()
        if ended == PRUNED:
            return _pruned(trainer, run_dir, cfg, logger, env)
        if ended == STOPPED or trainer.stop_requested():
            if env.is_main:
                signum = stop.requested()
                by = stop.name(signum) if signum else "a stop signal (on another rank)"
                saved = ", checkpoint written" if trainer.step > start else ""
                print(f"tsforge: stopped by {by} at step {trainer.step}{saved}: launch again "
                      f"with hydra.run.dir={run_dir} to resume", file=sys.stderr, flush=True)
            return EXIT_REQUEUE
        final = _final_metrics(trainer, evaluator, model, checkpoints, store, env)
        final.update(_final_flops(final, flops, env))
        if env.is_main:
            write_json(run_dir / "metrics.json", final)
            _summary(run_dir, final, time.monotonic() - started)
            # The HParams tab shows five metrics at first: the forecast metrics, not the loss
            # (the training objective's value, in the curves already).
            logger.hparams(flat_hparams(cfg), {
                **{f"test/{k}": v for k, v in final["test"].items() if k != "loss"},
                **_best_val_metric(final),
            }, varied(run_dir))
    finally:
        logger.close()
    return 0


def _best_val_metric(final: dict) -> dict[str, float]:
    """`best_val/<metric>` for the HParams tab (what a search selects on); {} without one."""
    return {f"best_val/{k}": v for k, v in final["best_val"].items() if v is not None}


def _pruned(trainer: Trainer, run_dir: Path, cfg: DictConfig, logger, env) -> int:
    """A search stopped the run: metrics.json says so (no test split is scored: a pruned
    trial is not a candidate), and its HParams session carries the best validation."""
    best_val = trainer.best if math.isfinite(trainer.best) else None
    final = {
        "steps": trainer.step, "pruned": True,
        "best_val": {trainer.s.early_stop_metric: best_val},
        "best_val_step": trainer.best_step if best_val is not None else None,
        "test": {}, "baseline": {}, "world_size": env.world_size,
    }  # fmt: skip
    if env.is_main:
        write_json(run_dir / "metrics.json", final)
        print(f"pruned at step {trainer.step} by the search ({run_dir / PRUNE_REQUEST}); "
              f"checkpoint written", flush=True)
        logger.hparams(flat_hparams(cfg), _best_val_metric(final), varied(run_dir))
    return 0


def _changes(ckpt: dict, config: dict, run_dir: Path, checkpoints: CheckpointManager) -> dict:
    """What this launch changes, {key: [old, new]}; a UserError for a change the run cannot
    take. Checked against what the weights were trained with (the checkpoint's own config:
    refused keys never differ from it), recorded against config.yaml (the last launch's)."""
    trained = _trained_config(ckpt, checkpoints.dir)
    config_changes(trained, config, run_dir)
    last = run_dir / "config.yaml"
    if last.exists():
        trained = OmegaConf.to_container(read_config(last), resolve=True)
    return config_changes(trained, config, run_dir)


def _init_from(model: torch.nn.Module, source: str, model_name: str) -> dict:
    """`trainer.init_from`'s weights into the (unwrapped, on every rank the same) model; the
    optimizer and schedule stay fresh. {path, step, fingerprint} of the source for meta.json;
    a UserError naming the first parameter whose shape differs."""
    path = init_checkpoint(source).resolve()
    try:
        info = load_model_weights(path, model, model_name=model_name)
    except WeightsMismatch as err:
        raise UserError(
            f"trainer.init_from={source}: parameter {err.key} is {shape_text(err.saved)} in "
            f"{path} and {shape_text(err.built)} in the model this config builds: fine-tune "
            "with the model settings it was trained with (model.*, data.input_size, the loss; "
            "data.horizon too unless the model rolls out to any horizon)"
        ) from None
    except UserError as err:
        raise UserError(f"trainer.init_from={source}: {err}") from None
    return {"path": str(path), "step": info["step"], "fingerprint": info["fingerprint"]}


def _announce(cfg, run_dir, env, loaders, ckpt, note, changed, validate, model, flops) -> None:
    """What this start does, on the main rank: notes on stderr, the plan on stdout."""
    if note:
        print(note, file=sys.stderr, flush=True)
    if not validate and cfg.trainer.val_every_steps > 0:
        print(f"tsforge: note: {cfg.data.name} has no validation window of input_size="
              f"{cfg.data.input_size} + horizon={cfg.data.horizon}: training without "
              "validation (no best checkpoint, no early stopping); give the data a split "
              "(tsforge data ingest --split, or data.split) to validate", file=sys.stderr,
              flush=True)  # fmt: skip
    what = f"resuming from step {ckpt['step']}:" if ckpt else "training"
    print(f"{what} {cfg.model.name} on {cfg.data.name} ({loaders['train'].n_windows:,} "
          f"training windows, world size {env.world_size}) -> {run_dir}", flush=True)
    for key, (old, new) in changed.items():
        print(f"  {key}: {old} -> {new}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    peak = f"{flops.peak / 1e12:.3g} TFLOP/s" if flops.peak else "unknown"
    counted = f"{flops.per_window / 1e6:,.3g} MFLOP per training window (3x forward)" \
        if flops.per_window is not None else "FLOPs not counted (an operation without meta kernel)"
    print(f"model: {n_params:,} parameters, {counted}; peak per rank {peak} "
          f"({flops.peak_source})", flush=True)


def _load_state(trainer: Trainer, ckpt: dict, checkpoints: CheckpointManager) -> None:
    """The checkpoint into the trainer; a UserError when its parts do not fit this run (a
    checkpoint that reads as data but was not written for this model)."""
    try:
        trainer.load_state_dict(ckpt)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"the checkpoint of step {ckpt['step']} in {checkpoints.dir} does not fit this run "
            f"({type(err).__name__}: {first}): delete it to resume from an earlier one, or use "
            "another hydra.run.dir"
        ) from None


def _final_metrics(trainer, evaluator, model, checkpoints, store, env) -> dict:
    """Test metrics of the best checkpoint (else the last weights), with the baseline."""
    best = checkpoints.best()
    if best is not None:  # every rank: a sharded model loads its shards together
        load_model_weights(best, model, fingerprint=store.fingerprint)
    test = evaluator.evaluate(model, "test", with_baseline=True) if "test" in evaluator.loaders \
        else {}
    baselines = {"seasonal_naive": "naive/", "naive1": "naive1/"}
    best_val = trainer.best if math.isfinite(trainer.best) else None  # JSON has no Infinity
    return {
        "steps": trainer.step,
        "best_val": {trainer.s.early_stop_metric: best_val},
        "best_val_step": trainer.best_step if best_val is not None else None,
        "test": {k: v for k, v in test.items() if "/" not in k},
        "baseline": {name: {k[len(p):]: v for k, v in test.items() if k.startswith(p)}
                     for name, p in baselines.items()},
        "train_windows_per_s": trainer.windows_per_s(),
        "world_size": env.world_size,
    }


def _final_flops(final: dict, flops, env) -> dict:
    """MFU over this start of the run, with what it is computed from."""
    per_rank = final["train_windows_per_s"] / env.world_size
    return {
        "train_windows_per_s_per_rank": per_rank,
        "model_flops_per_window": flops.per_window,
        "model_forward_flops_per_window": flops.forward_per_window,
        "peak_flops": flops.peak,
        "peak_flops_source": flops.peak_source,
        "mfu": flops.mfu(per_rank),
    }


def _summary(run_dir: Path, final: dict, wall_s: float) -> None:
    """The end of a run at a glance: steps and wall time, the best validation (named), the
    test metrics beside the baseline, and where to look next."""
    test, base = final["test"], final["baseline"]
    mfu = f", MFU {100 * final['mfu']:.2f}%" if final.get("mfu") is not None else ""
    print(f"done: {final['steps']} steps, wall time {duration(wall_s)} (this launch), "
          f"{final['train_windows_per_s']:,.0f} training windows/s{mfu}")
    (metric, value), = final["best_val"].items()
    if value is not None:
        step = final["best_val_step"]  # None after a resume from an older checkpoint
        print(f"best_val (val/{metric}): {value:.4f}" + (f" at step {step}" if step else ""))
    if test:
        naive, last = base["seasonal_naive"], base["naive1"]
        print(f"test  mae {test['mae']:.4f}  mse {test['mse']:.4f}   "
              f"(seasonal naive: mae {naive['mae']:.4f}  mse {naive['mse']:.4f};  "
              f"naive1: mae {last['mae']:.4f}  mse {last['mse']:.4f})")
    print(f"run directory: {run_dir}\nmetrics: {run_dir / 'metrics.json'}\n"
          f"dashboard: tensorboard --logdir {run_dir / 'tb'}")
