"""The training loop: one lean loop for every launcher.

`Trainer.train()` reads as the story of a run: resume if a checkpoint exists, then steps
(fetch a batch, forward, loss, backward, optimizer step every `accumulate_steps` batches),
with logging, validation, checkpoints and the stop signal checked in between; at the end the
test split is evaluated with the best weights. Everything rank-dependent goes through the
logger (a null object off the main rank) and `CheckpointManager.save` (main rank only; a
sharded model, `trainer.strategy=fsdp`, saves through `save_sharded`, every rank its shards).

A hyper-parameter search (`tsforge tune`) that finds a run hopeless writes `RUN_DIR/prune`;
the loop looks for it at each log step and validation, checkpoints and returns `PRUNED`.

SIGTERM, SIGUSR1 and SIGUSR2 set a flag (`tsforge.train.stop`); the loop finishes the current
step, writes a checkpoint and returns `STOPPED`, which the launcher turns into exit code 75 to
requeue. A signal that came before the first step (during start-up) stops it before training:
nothing new to save.

On resume, `load_state_dict` takes the weights, the optimizer's moments, the scheduler's step,
the loader's place and the RNG streams from the checkpoint, but the optimizer's settings (lr,
weight decay, betas) and the schedule from this launch's config: what a relaunch may change
(`tsforge.train.resume`) is applied for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tsforge.train import stop
from tsforge.train.by_source import SourceLosses
from tsforge.train.checkpoint import (
    CheckpointManager,
    load_sharded,
    rng_state,
    set_rng_state,
    unwrap,
)
from tsforge.train.distributed import (
    DistEnv,
    any_rank,
    barrier,
    gather_objects,
    gather_over_ranks,
    sum_over_ranks,
)
from tsforge.train.evaluate import Evaluator
from tsforge.train.flops import ModelFlops
from tsforge.train.logger import NullLogger
from tsforge.train.parallel import is_sharded, no_sync, sync_buffers
from tsforge.train.perf import StepTimer
from tsforge.train.precision import forecast

FINISHED, STOPPED, PRUNED = "finished", "stopped", "pruned"
PRUNE_REQUEST = "prune"  # RUN_DIR/prune: a search asks the run to stop (tsforge.tune)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    max_steps: int
    val_every_steps: int  # 0: never validate (no best checkpoint; test uses the last weights)
    log_every_steps: int = 10
    accumulate_steps: int = 1
    grad_clip: float = 1.0
    checkpoint_every_steps: int = 100
    checkpoint_every_min: float = 10.0
    early_stop_patience: int = 0
    early_stop_metric: str = "mae"
    autocast_dtype: torch.dtype | None = None  # bf16 on GPU


def load_optimizer(
    optimizer, scheduler, optimizer_state: dict | None, scheduler_state: dict,
    *, load: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """Moments and step count from a checkpoint; settings and schedule from the config.

    `optimizer.load_state_dict` alone would bring back the old lr, weight decay and betas,
    and the scheduler's state its old base lr: the groups take the settings they were built
    with back, and the lr is set for the step the run is at, on the schedule built now.
    `load`: what loads the optimizer's state instead of `optimizer_state` (a sharded step).
    """
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if load is not None:
        load()
    else:
        optimizer.load_state_dict(optimizer_state)
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)
    scheduler.load_state_dict(scheduler_state)
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                   scheduler.lr_lambdas):  # fmt: skip
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


class Trainer:
    def __init__(
        self,
        *,
        model: torch.nn.Module,
        loss: Callable,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader,
        evaluator: Evaluator,
        env: DistEnv,
        settings: LoopSettings,
        checkpoints: CheckpointManager,
        logger: NullLogger,
        describe: dict[str, Any],  # config, fingerprint, model_name: stored in checkpoints
        prune_request: Path | None = None,  # a search writes this file to stop the run
        flops: ModelFlops | None = None,  # FLOPs per window and the peak: MFU in the log
    ):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.evaluator = evaluator
        self.env = env
        self.s = settings
        self.checkpoints = checkpoints
        self.logger = logger
        self.describe = describe
        self.prune_request = prune_request
        self.flops = flops
        self.sharded = is_sharded(model)  # FSDP2: sharded checkpoints (DCP)
        self.step = 0
        self.best: float = math.inf
        self.best_step: int | None = None  # the step of `best`
        self.evals_without_improvement = 0
        self._windows = 0  # trained windows and seconds on this rank, for the final windows/s
        self._seconds = 0.0
        labels = getattr(train_loader, "source_labels", None)  # a mixture's sources
        self.by_source = SourceLosses(labels, env.device) if labels else None

    # -- the run ------------------------------------------------------------------------
    def train(self) -> str:
        with stop.handled():
            ended = self._train()
        self.checkpoints.wait(self.env)  # an asynchronous save is in place before the end
        return ended

    def stop_requested(self) -> bool:
        """Has any rank received a stop signal? (collective: every rank calls it)"""
        return self._agree(stop.requested() is not None)

    def _train(self) -> str:
        if self.stop_requested():
            return STOPPED  # stopped during start-up: nothing trained since the last checkpoint
        self.logger.begin(self.step, self.s.max_steps, self.s.early_stop_metric, self.best,
                          self.best_step)  # fmt: skip
        batches = self._batches()
        timer = StepTimer(self.env.device)
        last_ckpt = time.monotonic()
        self.model.train()
        while self.step < self.s.max_steps and not self._early_stopped():
            timer.start()
            loss_sum = torch.zeros((), device=self.env.device)
            windows = 0
            for micro in range(self.s.accumulate_steps):
                batch = timer.fetch(batches)
                loss = self._forward_loss(batch) / self.s.accumulate_steps
                sync = micro == self.s.accumulate_steps - 1
                with self._no_sync(not sync):
                    loss.backward()
                loss_sum += loss.detach()
                windows += int(batch["insample_y"].shape[0])
            log_now = self._log_due(self.step + 1)
            grad_norm = self._optimizer_step(norm_wanted=log_now)
            self.step += 1
            self._seconds += timer.stop(windows)
            self._windows += windows

            if log_now:
                self._log_train(loss_sum, grad_norm, timer)
            stop_now = self.stop_requested()
            validated = self._validation_due()
            if validated:
                improved = self._validate()
                if improved:
                    self.save(is_best=True)
                    last_ckpt = time.monotonic()
                if self._early_stopped():
                    break
            if (log_now or validated) and self._prune_requested():
                self.save()
                return PRUNED
            if stop_now:
                self.save()
                return STOPPED
            due_min = time.monotonic() - last_ckpt >= 60 * self.s.checkpoint_every_min
            if self.step % self.s.checkpoint_every_steps == 0 or self._agree(due_min):
                self.save()
                last_ckpt = time.monotonic()
        self.save()
        return FINISHED

    def _prune_requested(self) -> bool:
        """Has the search asked this run to stop? (collective: rank 0 looks at the file)"""
        asked = self.env.is_main and self.prune_request is not None \
            and self.prune_request.exists()  # fmt: skip
        return self._agree(asked)

    def _log_due(self, step: int) -> bool:
        return step % self.s.log_every_steps == 0 or step == self.s.max_steps

    def _validation_due(self) -> bool:
        """Every `val_every_steps` and at the last step; never when it is 0 (validation off)."""
        every = self.s.val_every_steps
        return every > 0 and (self.step % every == 0 or self.step == self.s.max_steps)

    def windows_per_s(self) -> float:
        """Training windows per second over this start of the run, summed over ranks."""
        rate = torch.tensor([self._windows / max(self._seconds, 1e-9)], dtype=torch.float64)
        return float(sum_over_ranks(self.env, rate.to(self.env.device)).item())

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:  # epochs: the loader continues from its state and advances its epoch
            yield from self.train_loader

    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y_hat_BHCO = forecast(self.model, batch, self.env.device, self.s.autocast_dtype)
        y_BHC = batch["outsample_y"].to(self.env.device, non_blocking=True)
        mask_BHC = batch["outsample_mask"].to(self.env.device, non_blocking=True)
        if self.by_source is not None:
            self.by_source.add(self.loss, y_hat_BHCO, y_BHC, mask_BHC, batch["source"])
        return self.loss(y_hat_BHCO, y_BHC, mask_BHC)

    def _optimizer_step(self, *, norm_wanted: bool) -> torch.Tensor | None:
        """Clip, step, zero the gradients; returns their norm when clipping or when wanted
        (for the log): without clipping, computing it at every step is wasted work."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = None
        if self.s.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.s.grad_clip)
        elif norm_wanted:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if grad_norm is not None and hasattr(grad_norm, "full_tensor"):  # sharded: a DTensor
            grad_norm = grad_norm.full_tensor()
        return grad_norm

    def _no_sync(self, skip: bool):
        return no_sync(self.model) if skip else contextlib.nullcontext()

    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any (stop signals, time-based checkpoints)."""
        return any_rank(self.env, flag)

    # -- logging, validation, checkpoints -------------------------------------------------
    def _log_train(self, loss_sum: torch.Tensor, grad_norm: torch.Tensor, timer: StepTimer) -> None:
        stats = torch.stack([loss_sum.float(), grad_norm.float().detach()]).to(self.env.device)
        perf = timer.read()
        per_rank = torch.tensor([perf["windows_per_s"]], device=self.env.device)
        stats = sum_over_ranks(self.env, stats) / self.env.world_size
        per_rank = gather_over_ranks(self.env, per_rank)
        values = {
            "train/loss": stats[0].item(),
            "train/grad_norm": stats[1].item(),
            "train/lr": self.scheduler.get_last_lr()[0],
            "perf/windows_per_s": float(per_rank.sum()),
            "perf/step_time_ms": perf["step_time_ms"],
            "perf/data_wait_frac": perf["data_wait_frac"],
            **{f"perf/windows_per_s_rank{r}": float(v) for r, v in enumerate(per_rank)},
            **self._perf_flops(float(per_rank.mean())),
            **timer.memory(),
        }
        if self.by_source is not None:  # train/loss/<source> and data/share/<source>
            values.update(self.by_source.values(self.env, self.train_loader.shares()))
        self.logger.scalars(self.step, values)

    def _perf_flops(self, windows_per_s_per_rank: float) -> dict[str, float]:
        """windows/s per rank (the mean over ranks) and, with the model's FLOPs, the MFU."""
        out = {"perf/windows_per_s_per_rank": windows_per_s_per_rank}
        if self.flops is not None and self.flops.per_window is not None:
            out["perf/model_flops_per_window"] = self.flops.per_window
            mfu = self.flops.mfu(windows_per_s_per_rank)
            if mfu is not None:
                out["perf/mfu"] = mfu
                out["perf/peak_flops"] = self.flops.peak
        return out

    def _validate(self) -> bool:
        if self.sharded:
            sync_buffers(self.model, self.env)
        metrics = self.evaluator.evaluate(self.model, "val", step=self.step, logger=self.logger)
        self.model.train()
        self.logger.scalars(self.step, {f"val/{k}": v for k, v in metrics.items()})
        value = metrics.get(self.s.early_stop_metric, math.inf)
        if value < self.best:
            self.best, self.best_step = value, self.step
            self.evals_without_improvement = 0
            return True
        self.evals_without_improvement += 1
        return False

    def _early_stopped(self) -> bool:
        patience = self.s.early_stop_patience
        return patience > 0 and self.evals_without_improvement >= patience

    def state_dict(self) -> dict[str, Any]:
        """All a checkpoint holds; without model and optimizer when sharded (`save` writes
        them through DCP beside it)."""
        weights = {} if self.sharded else {
            "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
        }  # fmt: skip
        return {
            **self.describe,
            **weights,
            "scheduler": self.scheduler.state_dict(),
            "loader": self.train_loader.state_dict(),
            "rng": self._rng_states(),
            "best": self.best,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("sharded"):  # any world size: DCP reshards
            load_optimizer(self.optimizer, self.scheduler, None, ckpt["scheduler"],
                           load=lambda: load_sharded(ckpt["path"], self.model, self.optimizer)
                           )  # fmt: skip
        else:
            unwrap(self.model).load_state_dict(ckpt["model"])
            load_optimizer(self.optimizer, self.scheduler, ckpt["optimizer"], ckpt["scheduler"])
        self.train_loader.load_state_dict(ckpt["loader"])
        states = ckpt["rng"]
        # Each rank continues its own streams; with another world size, rank r takes r mod n.
        set_rng_state(states[self.env.rank % len(states)])
        self.step = int(ckpt["step"])
        self.best = float(ckpt["best"])
        self.best_step = ckpt.get("best_step")  # absent from checkpoints of older versions
        self.evals_without_improvement = int(ckpt["evals_without_improvement"])

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG states (dropout and the like differ per rank), in rank order."""
        return gather_objects(self.env, rng_state())

    def save(self, *, is_best: bool = False) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if self.sharded:
            sync_buffers(self.model, self.env)
            self.checkpoints.save_sharded(state, self.step, model=self.model,
                                          optimizer=self.optimizer, env=self.env,
                                          is_best=is_best)  # fmt: skip
            return
        if self.env.is_main:
            self.checkpoints.save(state, self.step, is_best=is_best)
        barrier(self.env)

