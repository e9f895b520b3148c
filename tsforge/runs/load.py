"""A trained run, rebuilt from its directory for evaluation and prediction.

    from tsforge.runs.load import load_run
    run = load_run("runs/mine", checkpoint="best")     # best.pt, else latest.pt
    run.model, run.cfg, run.store                      # in eval mode, on the run's device
    run = load_run_on("runs/mine", data_cfg)           # its model on other data (zero-shot)

The run is rebuilt from `RUN_DIR/config.yaml` with the same builders that trained it
(`tsforge.train.builders`), so the store, the loss, the model and the evaluation loaders are
those of the run; the saved config is checked first (`config.checks.check_saved`) and the
weights are read with torch's safe loader (`train.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from tsforge.config.checks import check_saved
from tsforge.data import chosen
from tsforge.data.store import Store
from tsforge.errors import UserError
from tsforge.train import CHECKPOINTS, builders
from tsforge.train.checkpoint import (
    CheckpointManager,
    WeightsMismatch,
    apply_weights,
    check_shapes,
    load_checkpoint,
    load_model_weights,
    saved_shapes,
    shape_text,
)
from tsforge.train.distributed import DistEnv
from tsforge.train.rundir import read_config


# ------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class TrainedRun:
    """A run's config, data, loss and model with a checkpoint's weights, ready to use."""

    run_dir: Path
    cfg: DictConfig
    store: Store
    loss: torch.nn.Module
    model: torch.nn.Module
    env: DistEnv
    checkpoint: str  # "best" | "latest": the file the weights came from
    step: int

    @property
    def model_name(self) -> str:
        return str(self.cfg.model.name)


def _train_hint(run_dir: Path) -> str:
    return f"train it first with python -m tsforge.launch hydra.run.dir={run_dir}"


def checkpoint_path(run_dir: Path, which: str = "best") -> tuple[Path, str]:
    """(path, name) of the run's `best.pt` (else `latest.pt`), or of `latest.pt`; for a
    sharded run, the step folder `best` (else `latest`) links to."""
    if which not in CHECKPOINTS:
        raise UserError(f"--checkpoint {which!r} is not one of {', '.join(CHECKPOINTS)}")
    checkpoints = CheckpointManager(run_dir)
    for name in (which, "latest"):
        path = checkpoints.named(name)
        if path is not None:
            return path, name
    raise UserError(f"run {run_dir} has no checkpoint: {_train_hint(run_dir)}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"the run was trained with trainer.device={name} but no GPU is visible")
    return torch.device(name)


def saved_run(run_dir: str | os.PathLike, checkpoint: str) -> tuple[Path, DictConfig, Path, str]:
    """(run_dir, its checked config, the checkpoint's path and name) of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: {_train_hint(run_dir)}")
    config = run_dir / "config.yaml"
    if not config.exists():
        raise UserError(
            f"{run_dir} has no config.yaml, so it is not a tsforge run directory: "
            f"{_train_hint(run_dir)}"
        )
    path, name = checkpoint_path(run_dir, checkpoint)
    cfg = read_config(config)
    check_saved(cfg, config)
    return run_dir, cfg, path, name


def _env(cfg: DictConfig) -> DistEnv:
    threads = cfg.trainer.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    # One process, whatever launched this one: no process group is joined.
    return DistEnv(rank=0, local_rank=0, world_size=1, device=_device(cfg.trainer.device),
                   backend=None)  # fmt: skip


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the run in `run_dir` with the weights of its `checkpoint` ("best" | "latest")."""
    run_dir, cfg, path, name = saved_run(run_dir, checkpoint)
    env = _env(cfg)
    store = chosen.store(cfg.data)
    loss = builders.loss(cfg.loss).to(env.device)  # its buffers (quantile levels) too
    model = builders.model(cfg.model, cfg.data, store, loss)
    ckpt = load_model_weights(path, model, fingerprint=store.fingerprint,
                              model_name=cfg.model.name)  # fmt: skip
    model.to(env.device).eval()
    return TrainedRun(run_dir, cfg, store, loss, model, env, name, int(ckpt["step"]))


def load_run_on(
    run_dir: str | os.PathLike, data: DictConfig, checkpoint: str = "best"
) -> TrainedRun:
    """The run's model rebuilt for other data (`data`: a composed `data` section with the
    run's input_size and the horizon wanted), with the weights of its `checkpoint`. Its
    `cfg` is the run's with `data` in place of its own. A UserError when the weights do not
    fit: a horizon the model was not trained for, covariates or channels the data lacks."""
    run_dir, cfg, path, name = saved_run(run_dir, checkpoint)
    trained_horizon = int(cfg.data.horizon)
    cfg = cfg.copy()
    cfg.data = data
    env = _env(cfg)
    store = chosen.store(data)
    loss = builders.loss(cfg.loss).to(env.device)
    model, info = _fitting_model(cfg, store, loss, path, trained_horizon)
    model.to(env.device).eval()
    return TrainedRun(run_dir, cfg, store, loss, model, env, name, info["step"])


def _fitting_model(cfg: DictConfig, store: Store, loss, path: Path, trained_horizon: int):
    """(model, checkpoint): the model built for `store` that the weights fit, reading the
    store's covariates if the checkpoint's model did, else none of them. The checkpoint is
    read once; the candidates are tried on its shapes, and only the one that fits is loaded."""
    from tsforge.models import MODELS

    name = str(cfg.model.name)
    roles = store.roles
    has_covariates = bool(roles.hist_exog or roles.futr_exog or roles.static)
    uses_exog = MODELS[name].supports_exog
    choices = (True, False) if uses_exog and has_covariates else (False,)
    ckpt = load_checkpoint(path, model_name=name)
    saved = saved_shapes(ckpt, path)

    def fit(data: DictConfig):
        first = None
        for covariates in choices:
            model = builders.model(cfg.model, data, store, loss, covariates=covariates)
            try:
                check_shapes(path, saved, model)
                return model, None
            except WeightsMismatch as err:
                first = first or err
        return None, first

    model, info = fit(cfg.data)
    if model is not None:
        apply_weights(ckpt, path, model)
        return model, ckpt
    if trained_horizon != cfg.data.horizon:
        at_trained = cfg.data.copy()
        at_trained.horizon = trained_horizon
        if fit(at_trained)[0] is not None:
            raise UserError(
                f"model {name} was trained for horizon {trained_horizon}; --horizon must be "
                f"{trained_horizon} (a model that rolls out to any horizon, such as "
                "patch_decoder, takes any)"
            )
    what = "covariates" if uses_exog and not cfg.data.multivariate else "covariates or channels"
    data = cfg.data.path if cfg.data.name == "store" else cfg.data.name
    raise UserError(
        f"model {name} of {path} was trained with {what} that {data} does not have "
        f"(parameter {info.key}: {shape_text(info.saved)} in the checkpoint, "
        f"{shape_text(info.built)} for this data): evaluate it on data with the same columns, "
        "or train a model without covariates"
    )


