"""Builders at the edge: the only code that reads the config. Library classes below them take
plain typed arguments (no config object is passed into a component)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from tsforge.config.models import model_kwargs
from tsforge.data.chosen import metrics_unscaled, split_spec
from tsforge.data.loader import WindowLoader, WindowSpec
from tsforge.data.mixture import Mixture, MixtureLoader
from tsforge.data.store import Store
from tsforge.errors import UserError
from tsforge.losses import build_loss
from tsforge.models import MODELS, build_model
from tsforge.train.distributed import DistEnv
from tsforge.train.evaluate import Evaluator
from tsforge.train.flops import ModelFlops, example_inputs, forward_flops_per_window, peak_flops
from tsforge.train.loop import LoopSettings
from tsforge.train.parallel import parallelize
from tsforge.train.precision import autocast_dtype
from tsforge.train.schedule import build_scheduler


def seed_everything(seed: int, rank: int) -> None:
    """Same model initialisation on every rank; per-rank streams for dropout and the like."""
    torch.manual_seed(seed)
    model_seed_state = torch.get_rng_state()
    per_rank = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(per_rank)
    np.random.seed(per_rank)
    torch.set_rng_state(model_seed_state)


def loss(cfg: DictConfig):
    kwargs: dict[str, Any] = {}
    if cfg.name == "huber":
        kwargs["delta"] = cfg.delta
    elif cfg.name == "quantile":
        kwargs["quantiles"] = list(cfg.quantiles)
    return build_loss(cfg.name, **kwargs)


def loaders(data: DictConfig, seed: int, st: Store | Mixture, env: DistEnv, *,
            train: bool = True) -> dict:  # fmt: skip
    """The training loader and the evaluation loaders of the splits that have windows;
    without `train`, the evaluation loaders only (a model scored on data it never saw)."""
    if isinstance(st, Mixture):
        out = mixture_loaders(data, seed, st, env)
        return out if train else {k: v for k, v in out.items() if k != "train"}
    spec = WindowSpec(
        input_size=data.input_size,
        horizon=data.horizon,
        stride=data.stride,
        min_input_size=data.min_input_size,
        multivariate=data.multivariate,
    )
    common = dict(
        split_spec=split_spec(data, st), rank=env.rank, world_size=env.world_size, seed=seed,
        scaling=data.scaling, scale_by=data.scale_by, num_workers=data.num_workers,
        cache_mb=data.cache_mb, pin_memory=env.device.type == "cuda",
    )  # fmt: skip
    out = {}
    if train:
        out["train"] = WindowLoader(
            st, spec, split="train", global_batch_size=data.batch_size, mode=data.sampling,
            sample_by=data.sample_by, shuffle_group_blocks=data.shuffle_group_blocks, **common,
        )  # fmt: skip
    if train and out["train"].n_windows == 0:
        raise UserError(
            f"the train split has no window of input_size={data.input_size} + "
            f"horizon={data.horizon}: shorten them or use longer series"
        )
    eval_spec = WindowSpec(
        input_size=spec.input_size, horizon=spec.horizon, stride=1,
        min_input_size=spec.min_input_size, multivariate=spec.multivariate,
    )  # fmt: skip
    for split in ("val", "test"):
        drop = data.legacy_test_drop_last if split == "test" else 0
        loader = WindowLoader(
            st, eval_spec, split=split, global_batch_size=data.eval_batch_size, mode="eval",
            drop_last_of=drop, **common,
        )  # fmt: skip
        if loader.n_windows:
            out[split] = loader
    return out


def mixture_loaders(data: DictConfig, seed: int, mix: Mixture, env: DistEnv) -> dict:
    """data=mixture: the training stream and the pooled held-out windows of the sources."""
    spec = WindowSpec(input_size=data.input_size, horizon=data.horizon)
    common = dict(rank=env.rank, world_size=env.world_size, seed=seed, scaling=data.scaling,
                  num_workers=data.num_workers, cache_mb=data.cache_mb,
                  pin_memory=env.device.type == "cuda")  # fmt: skip
    out = {"train": MixtureLoader(mix, spec, split="train", global_batch_size=data.batch_size,
                                  **common)}  # fmt: skip
    for split in ("val", "test"):
        loader = MixtureLoader(mix, spec, split=split, global_batch_size=data.eval_batch_size,
                               **common)  # fmt: skip
        if loader.n_windows:
            out[split] = loader
    return out


def model(
    cfg: DictConfig, data: DictConfig, st: Store, loss_fn, *, covariates: bool = True
) -> torch.nn.Module:
    """The model for this data; without `covariates`, one that reads none of the store's."""
    cls = MODELS[cfg.name]
    roles = st.roles
    n_channels = len(roles.target) if data.multivariate else 1
    sizes = {
        "hist_exog_size": len(roles.hist_exog),
        "futr_exog_size": len(roles.futr_exog),
        "stat_exog_size": len(roles.static),
    }
    if not cls.supports_exog or not covariates:  # the batch carries them; the model ignores
        sizes = dict.fromkeys(sizes, 0)
    kwargs = model_kwargs(OmegaConf.to_container(cfg, resolve=True))
    return build_model(
        cfg.name,
        input_size=data.input_size,
        horizon=data.horizon,
        n_channels=n_channels,
        n_outputs=loss_fn.n_outputs,
        **sizes,
        **kwargs,
    )


def optimizer(optim: DictConfig, trainer: DictConfig, net: torch.nn.Module):
    params = list(net.parameters())
    # fused: one kernel over all parameters instead of torch's default on CPU, a loop of small
    # ops per tensor; for NHITS on one CPU thread, 2.1 ms a step instead of 9.4 ms.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    opt = torch.optim.AdamW(
        params, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas),
        fused=fused or None,
    )
    sched = build_scheduler(
        opt,
        total_steps=trainer.max_steps,
        warmup_steps=optim.warmup_steps,
        schedule=optim.schedule,
        min_lr_ratio=optim.min_lr_ratio,
    )
    return opt, sched


def parallel(trainer: DictConfig, net: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """The model as it trains: `trainer.strategy` (DDP or FSDP2), activation checkpointing and
    torch.compile applied (`tsforge.train.parallel`). Build the optimizer after this."""
    return parallelize(
        net, env, strategy=trainer.strategy, compile=trainer.compile,
        activation_checkpointing=trainer.activation_checkpointing,
    )  # fmt: skip


def loop_settings(
    trainer: DictConfig, optim: DictConfig, env: DistEnv, *, validate: bool = True
) -> LoopSettings:
    """`validate=False` when the data has no validation window: validation is then off."""
    return LoopSettings(
        max_steps=trainer.max_steps,
        val_every_steps=max(0, trainer.val_every_steps) if validate else 0,  # 0: off
        log_every_steps=max(1, trainer.log_every_steps),
        accumulate_steps=max(1, trainer.accumulate_steps),
        grad_clip=optim.grad_clip,
        checkpoint_every_steps=max(1, trainer.checkpoint_every_steps),
        checkpoint_every_min=trainer.checkpoint_every_min,
        early_stop_patience=trainer.early_stop_patience,
        early_stop_metric=trainer.early_stop_metric,
        autocast_dtype=autocast_dtype(trainer.precision, env.device),
    )


def evaluator(cfg: DictConfig, loaders_: dict, loss_fn, env: DistEnv) -> Evaluator:
    st = next(iter(loaders_.values())).store
    mixed = isinstance(st, Mixture)  # windows of many sources: MASE on each window's scale
    return Evaluator(
        loaders={k: v for k, v in loaders_.items() if k != "train"},
        loss=loss_fn,
        env=env,
        season=cfg.data.season,
        mase_scale_SC=None if mixed else mase_scales(cfg.data, st),
        plot_windows=0 if mixed else cfg.trainer.plot_series,
        autocast_dtype=autocast_dtype(cfg.trainer.precision, env.device),
        unscale=metrics_unscaled(cfg.data),
    )


def mase_scales(data: DictConfig, st: Store, block_rows: int = 1 << 20) -> np.ndarray:
    """MASE's scale [n_series, C] of each series' train rows and target channel: M4's
    in-sample MAE of the seasonal naive forecast (`tsforge.metrics.mase_scale`: lag
    data.season, lag 1 where the train part is too short), NaN where there is none. Read in
    blocks of whole series of about `block_rows` rows."""
    from tsforge.data import splits
    from tsforge.metrics import mase_scale

    _, train_hi = splits.resolve(split_spec(data, st), st.lengths, "train")
    cols = st.column_index(st.roles.target)
    starts = st.indptr[:-1]
    ends = starts + np.minimum(train_hi, np.diff(st.indptr))
    out = np.full((st.n_series, len(cols)), np.nan)
    first = 0
    while first < st.n_series:
        last = first + 1  # the block holds series [first, last)
        while last < st.n_series and ends[last] - starts[first] <= block_rows:
            last += 1
        block = st.rows(int(starts[first]), int(ends[last - 1]))[:, cols]
        for i in range(first, last):
            rows = block[starts[i] - starts[first] : ends[i] - starts[first]]
            out[i] = [mase_scale(rows[:, c], int(data.season)) for c in range(len(cols))]
        first = last
    return out


def model_flops(cfg: DictConfig, st: Store, loss_fn, env: DistEnv) -> ModelFlops:
    """The model's FLOPs per window (counted on a copy built on the meta device: no memory, no
    arithmetic, the RNG untouched) and this rank's peak FLOP/s for `trainer.precision`. A model
    with an operation the meta device lacks is not counted (no MFU) rather than not trained."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        net = model(cfg.model, cfg.data, st, loss_fn)
    roles = st.roles
    n_channels = len(roles.target) if cfg.data.multivariate else 1
    inputs = example_inputs(
        2, cfg.data.input_size, cfg.data.horizon, n_channels,
        len(roles.hist_exog), len(roles.futr_exog), len(roles.static),
    )  # fmt: skip
    try:
        forward = forward_flops_per_window(net, inputs)
    except (NotImplementedError, RuntimeError):
        forward = None
    peak, source = peak_flops(env.device, autocast_dtype(cfg.trainer.precision, env.device),
                              cfg.trainer.peak_tflops)  # fmt: skip
    return ModelFlops(forward_per_window=forward, peak=peak, peak_source=source)
