"""Atomic, self-describing checkpoints in `RUN_DIR/checkpoints/`, read as data, never as code.

    step_00000500.pt   one file per saved step (the last `keep_last` are kept)
    latest.pt          the newest step (a copy made by hard link where possible)
    best.pt            the step with the best validation metric

A sharded run (`trainer.strategy=fsdp`) saves a folder per step instead, through
`torch.distributed.checkpoint` (DCP), every rank writing its own shards:

    step_00000500/     .metadata, __0_0.distcp, __1_0.distcp, ...: model and optimizer
                       state, sharded (DCP reshards them on load: any world size reads them)
                       trainer.pt: the rest (below), small, written by rank 0
    latest -> step_00000500      relative symbolic links
    best   -> step_00000300      (kept beyond keep_last while it is the best)

A checkpoint holds everything needed to continue exactly: the resolved config, the store
fingerprint, the model name, model / optimizer / scheduler state, every RNG state, the loader
state and the step.

Writing: to a temporary name, flushed to disk, verified (every member of the zip archive reads
back with its CRC), then renamed; only then do `latest.pt` / `best.pt` move to it and older step
files go. A save that fails (a full disk) leaves the checkpoints as they were. A sharded step is
written into a temporary folder (`.step_00000500.tmp-dcp`) by every rank, and rank 0 renames it
into place once all ranks are done (a barrier). On GPUs the save is asynchronous
(`dcp.async_save`): the shards are copied to CPU memory, training goes on while a thread
writes them (through a gloo process group of its own: collectives on one gloo group must not
interleave with the training step's), and the folder is renamed into place at the next save
or at the end of training. On CPUs it is synchronous: there the copy would cost the memory
sharding saves (a second copy of each rank's shards) and the writing thread the cores that
train, for a write that takes a fraction of a step at the sizes that train on CPUs.

`load_model_weights(path, model)` reads the model weights of either kind into a plain model (in
one process, no process group: DCP reads every shard into full tensors) or into a sharded one
(every rank together): evaluation, prediction, the test phase and fine-tuning all use it.

Reading: `torch.load(weights_only=True)`, which rebuilds tensors and plain containers only, with
a short allow-list (`SAFE_GLOBALS`) for what format 1 stored besides (numpy's RNG key). A file
that asks to call anything else is refused (`UserError`) without running it: a checkpoint is
data. A file that does not read at all (truncated, empty) is damaged: resuming then falls back
to the newest intact step file (`CheckpointManager.resume_point`).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsforge.errors import UserError
from tsforge.train.distributed import DistEnv, barrier
from tsforge.train.rundir import TEMPORARY, step_files, step_of

# 2: RNG states as tensors and plain lists. 1: numpy's RNG state as a numpy array (still read).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

# What format 1 pickled besides tensors: numpy's MT19937 key, a uint32 array. These rebuild an
# array from its dtype and bytes and call nothing else.
SAFE_GLOBALS = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
SHARDED_STATE = "trainer.pt"  # in a sharded step folder: all but the model and optimizer


class CheckpointDamaged(UserError):
    """The file does not read as a checkpoint at all (truncated, empty, not a zip archive)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"checkpoint {path} does not load ({reason}): it is damaged; delete it "
                         "to use the previous one, or use another hydra.run.dir")
        self.reason = reason


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        keys = numpy["keys"].numpy().astype(np.uint32)
        numpy = (numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    np.random.set_state(numpy)  # format 1 kept numpy's own tuple
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash right after it keeps the new name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(path: Path) -> None:
    """Every member of the archive reads back with its CRC: the file is complete."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise OSError(f"{path}: member {bad} does not read back as written")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # Through our own file object, so that a full disk raises OSError(ENOSPC) naming the
        # file rather than a RuntimeError from inside torch's zip writer.
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _verify(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """A step file, or a sharded step's folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _point(link: Path, target: Path) -> None:
    """`link` becomes a relative symbolic link to `target` (beside it), atomically."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target.name, tmp)
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)


class CheckpointManager:
    """Saves and finds checkpoints of one run. Only the main rank calls `save`; every rank
    calls `save_sharded`."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 2, *,
                 async_save: bool = False):  # fmt: skip
        """`async_save`: sharded saves write from a thread (`save_sharded`)."""
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, int(keep_last))
        self.async_save = async_save
        self._pending: tuple | None = None  # the sharded save in flight: see `wait`
        self._group = None  # the process group of asynchronous saves

    def save(self, state: dict[str, Any], step: int, *, is_best: bool = False) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{step:08d}.pt"
        _atomic_save({"format_version": FORMAT_VERSION, "step": step, **state}, path)
        _link_or_copy(path, self.dir / "latest.pt")
        if is_best:
            _link_or_copy(path, self.dir / "best.pt")
        self._drop_older(step)
        return path

    def save_sharded(self, state: dict[str, Any], step: int, *, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, env: DistEnv,
                     is_best: bool = False) -> Path:  # fmt: skip
        """Model and optimizer state through DCP (every rank its shards), `state` beside them
        (rank 0); collective: every rank calls it. With `async_save`, the shards are copied
        and written by a thread while training goes on: the step is in place after `wait`
        (the next save, or the end of training)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.wait(env)  # one save in flight at most
        path = self.dir / f"step_{step:08d}"
        tmp = self.dir / f".{path.name}.tmp-dcp"  # the same name on every rank
        if env.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
            tmp.mkdir()
        barrier(env)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        shards = {"model": model_sd, "optimizer": optim_sd}
        written = None
        if self.async_save:
            if self._group is None:  # its own group: gloo's collectives on one group must
                import torch.distributed as dist  # not interleave with the training step's

                self._group = dist.new_group(backend="gloo")
            # The state is copied to CPU memory before this returns; a thread writes the copy.
            written = dcp.async_save(shards, checkpoint_id=tmp, process_group=self._group)
        else:
            dcp.save(shards, checkpoint_id=tmp)
        if env.is_main:
            _atomic_save({"format_version": FORMAT_VERSION, "step": step, "sharded": True,
                          **state}, tmp / SHARDED_STATE)  # fmt: skip
        self._pending = (written, tmp, path, step, is_best)
        if not self.async_save:
            self.wait(env)
        return path

    def wait(self, env: DistEnv) -> None:
        """Put the sharded save in flight (if any) in place: once every rank's shards are on
        disk, rank 0 renames its folder and moves `latest` / `best`. Collective."""
        if self._pending is None:
            return
        written, tmp, path, step, is_best = self._pending
        self._pending = None
        if written is not None:
            written.result()  # raises what the writing thread raised
        barrier(env)  # every rank's shards are on disk
        if env.is_main:
            if path.exists():  # left by an attempt that got further before a crash
                _remove(path)
            os.replace(tmp, path)
            _fsync_dir(self.dir)
            _point(self.dir / "latest", path)
            if is_best:
                _point(self.dir / "best", path)
            self._drop_older(step)
        barrier(env)

    def _drop_older(self, step: int) -> None:
        """Only older steps go, once the new one is safely in place, and never the one `best`
        points to. Files of later steps (left by an attempt that got further before a crash)
        are replaced when the run gets there."""
        best = self.dir / "best"
        keep = best.resolve() if best.is_symlink() else None
        older = [p for p in self.step_files() if step_of(p) < step and p.resolve() != keep]
        for old in older[: max(0, len(older) - (self.keep_last - 1))]:
            _remove(old)

    def step_files(self) -> list[Path]:
        return step_files(self.dir.parent)

    def named(self, name: str) -> Path | None:
        """`latest` / `best`: the file (`latest.pt`) or the sharded step it links to."""
        for path in (self.dir / f"{name}.pt", self.dir / name):
            if path.exists():
                return path
        return None

    def latest(self) -> Path | None:
        return self.named("latest")

    def best(self) -> Path | None:
        return self.named("best") or self.latest()

    def remove_temporaries(self) -> None:
        """Half-written files and folders of saves that a killed launch never finished (the
        run is locked: no other launch is writing them)."""
        if self.dir.is_dir():
            for tmp in self.dir.glob(TEMPORARY):
                _remove(tmp)

    def resume_point(
        self, *, fingerprint: str | None = None, model_name: str | None = None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(the newest intact checkpoint or None, a note saying what was skipped or None).

        `latest.pt` first, then the step files from the newest. A damaged file is skipped; a
        file refused for any other reason (crafted, another model's) stops with its UserError.
        """
        latest = self.latest()
        candidates = ([latest] if latest else []) + self.step_files()[::-1]
        skipped: list[str] = []
        for path in candidates:
            try:
                ckpt = load_checkpoint(path, fingerprint=fingerprint, model_name=model_name)
            except CheckpointDamaged as err:
                skipped.append(f"{path.name} ({err.reason})")
                continue
            newer = [p for p in self.step_files() if step_of(p) > int(ckpt["step"])]
            if newer and path == latest and not skipped:
                skipped.append(f"latest.pt (step {ckpt['step']}, older than {newer[-1].name})")
                continue
            note = (f"tsforge: {self.dir}: skipped {', '.join(skipped)}; resuming from "
                    f"{path.name}") if skipped else None  # fmt: skip
            return ckpt, note
        if skipped:
            raise UserError(f"no checkpoint in {self.dir} reads ({', '.join(skipped)}): move the "
                            "folder away to start over, or use another hydra.run.dir")
        return None, None


def _read(path: Path) -> Any:
    """torch.load as data only; UserError for a file that asks to run code or is damaged."""
    if not path.is_file():  # a folder, a device, a FIFO (would block), a dangling link
        raise CheckpointDamaged(path, "missing" if not path.is_symlink() and not path.exists()
                                else "not a regular file")  # fmt: skip
    try:
        # torch warns about pickle protocols it was not written with: the file is refused or
        # read either way, and the warning would only add noise to the one-line error.
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found or "WeightsUnpickler error" in text or "Unsupported operand" in text:
            what = f"would call {found.group(1)}" if found else "holds more than tensors and data"
            raise UserError(
                f"checkpoint {path} is refused: it {what}, and a checkpoint is data only (a "
                "crafted or foreign file?); it was not run; delete it, or use another "
                "hydra.run.dir"
            ) from None
        raise CheckpointDamaged(path, type(err).__name__) from None
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, IndexError) as err:
        if isinstance(err, OSError) and err.errno not in (None, errno.EINVAL):
            raise  # an environment fault (an unreadable disk): not the file's; EINVAL is a
            # seek past the end of a truncated file
        reason = "empty" if path.stat().st_size == 0 else f"truncated or not a checkpoint: " \
            f"{type(err).__name__}"
        raise CheckpointDamaged(path, reason) from None


def load_checkpoint(
    path: str | os.PathLike, *, fingerprint: str | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint and check it belongs to this data and model; UserError if not.

    A sharded step folder gives what rank 0 wrote beside the shards (no model or optimizer:
    `load_model_weights`, `load_sharded`), with `path`, the folder, added."""
    path = Path(path)
    sharded = path.is_dir() and path.suffix != ".pt"  # a folder named .pt is no checkpoint
    ckpt = _read(path / SHARDED_STATE if sharded else path)
    if not isinstance(ckpt, dict) or ckpt.get("format_version") not in READABLE_VERSIONS \
            or not isinstance(ckpt.get("step"), int):  # fmt: skip
        raise UserError(f"{path} is not a tsforge checkpoint (format "
                        f"{', '.join(map(str, READABLE_VERSIONS))}): delete it, or use another "
                        "hydra.run.dir")  # fmt: skip
    if fingerprint is not None and ckpt.get("fingerprint") != fingerprint:
        raise UserError(
            f"checkpoint {path} was trained on data with fingerprint {ckpt.get('fingerprint')}, "
            f"this run's data has {fingerprint}: use another hydra.run.dir for other data"
        )
    if model_name is not None and ckpt.get("model_name") != model_name:
        raise UserError(
            f"checkpoint {path} holds model '{ckpt.get('model_name')}', this run builds "
            f"'{model_name}': use another hydra.run.dir for another model"
        )
    if sharded:
        ckpt["path"] = path
    return ckpt


def load_sharded(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """A sharded step's model (and optimizer) state into a sharded model (FSDP2) at any world
    size: DCP reads the parts of every rank's shards that this rank holds. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    if optimizer is None:
        model_sd = get_model_state_dict(model)
        _dcp_load({"model": model_sd}, Path(path), dcp.load)
        set_model_state_dict(model, model_sd)
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    _dcp_load({"model": model_sd, "optimizer": optim_sd}, Path(path), dcp.load)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)


def _dcp_load(state: dict[str, Any], path: Path, load, **kwargs) -> None:
    """`dcp.load` into `state`; a UserError when the step does not fit it (another model)."""
    from torch.distributed.checkpoint import CheckpointException

    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.filterwarnings("ignore", message=".*load in a single process")
            load(state, checkpoint_id=path, **kwargs)
    except (CheckpointException, RuntimeError, KeyError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"checkpoint {path} does not load into the model of the run's config "
                        f"({first[:300]}): a damaged shard (delete the folder to use an earlier "
                        "step), or a config.yaml edited after training (restore it)"
                        ) from None  # fmt: skip


def load_model_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    fingerprint: str | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The weights of the checkpoint at `path` into `model`; returns the checkpoint's other
    contents (step, config, ...). `path`: a step file, a sharded step folder, `latest` /
    `best` of either kind, or a run directory (its best, else latest).

    A plain model (one process, or each rank on its own) takes either kind whole: a sharded
    step is read without a process group, every shard into full tensors. A sharded model
    (FSDP2, every rank together) takes a sharded step at any world size, or a file whole.
    `fingerprint` / `model_name` check that the checkpoint belongs to this data and model."""
    path = Path(path)
    if (path / "checkpoints").is_dir() and not (path / SHARDED_STATE).exists():
        found = CheckpointManager(path).best()
        if found is None:
            raise UserError(f"run {path} has no checkpoint: train it first")
        path = found
    ckpt = load_checkpoint(path, fingerprint=fingerprint, model_name=model_name)
    check_shapes(path, saved_shapes(ckpt, path), model)
    apply_weights(ckpt, path, model)
    return ckpt


def apply_weights(ckpt: dict[str, Any], path: Path, model: torch.nn.Module) -> None:
    """The model weights of `ckpt` (read by `load_checkpoint` from `path`) into `model`: a file's
    whole, or a sharded step's read through DCP. The caller checks the shapes first
    (`check_shapes`), so that a mismatch is named before anything is copied."""
    from tsforge.train.parallel import is_sharded

    if not ckpt.get("sharded"):
        if is_sharded(model):
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            state = ckpt.get("model")
            set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
        else:
            load_weights(model, ckpt, path)
    elif is_sharded(model):
        load_sharded(path, model)
    else:
        import torch.distributed.checkpoint as dcp

        plain = unwrap(model)
        state = plain.state_dict()
        _dcp_load({"model": state}, path, dcp.load, no_dist=True)
        plain.load_state_dict(state)


def saved_shapes(ckpt: dict[str, Any], path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every model tensor a checkpoint holds: from the file's tensors, or from a
    sharded step's DCP metadata (global shapes, whatever the world size that wrote it)."""
    if ckpt.get("sharded"):
        import torch.distributed.checkpoint as dcp

        try:
            meta = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
        except Exception as err:  # a missing or damaged .metadata file
            raise CheckpointDamaged(path, f"its DCP metadata: {type(err).__name__}") from None
        return {key[len("model."):]: tuple(item.size) for key, item in meta.items()
                if key.startswith("model.") and hasattr(item, "size")}  # fmt: skip
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds no model weights: delete it, or use another "
                        "checkpoint")  # fmt: skip
    return {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}


def check_shapes(path: Path, saved: dict[str, tuple], model: torch.nn.Module) -> None:
    """A `WeightsMismatch` naming the first parameter (in the model's order) whose shape
    differs from `saved` (`saved_shapes`) or that one side lacks, before anything is copied."""
    built = unwrap(model).state_dict()
    for key in [*built, *(k for k in saved if k not in built)]:
        built_shape = tuple(built[key].shape) if key in built else None
        if saved.get(key) != built_shape:
            raise WeightsMismatch(path, key, saved.get(key), built_shape)


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """The checkpoint's weights into `model`; a UserError when they do not fit it (the run's
    config.yaml was edited after training, or the file was not written for this run)."""
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds no model weights: delete it, or use another "
                        "hydra.run.dir")
    try:
        unwrap(model).load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"checkpoint {path} does not fit the model of the run's config ({first}): was its "
            "config.yaml edited after training? restore it"
        ) from None


def shape_text(shape) -> str:
    """A parameter's shape as messages show it: [64, 96], or "missing" (None)."""
    return "missing" if shape is None else str(list(shape))


class WeightsMismatch(UserError):
    """A checkpoint's weights do not fit a model built from another config: `key` is the
    first parameter (in the model's order) that differs, `saved` / `built` its two shapes
    (None where it is missing on that side)."""

    def __init__(self, path, key: str, saved, built):
        self.key, self.saved, self.built = key, saved, built
        super().__init__(f"checkpoint {path} does not fit the model: parameter {key} is "
                         f"{shape_text(saved)} there and {shape_text(built)} in the model built "
                         "here: build it with the config it was trained with (was config.yaml "
                         "edited after training? restore it)")  # fmt: skip


def init_checkpoint(source: str | os.PathLike) -> Path:
    """The checkpoint file `trainer.init_from` names: the file itself, or a run directory's
    best checkpoint (else its latest); a UserError when there is none."""
    path = Path(source).expanduser()
    if (path / SHARDED_STATE).is_file():  # a sharded step folder
        return path
    if path.is_dir():
        found = CheckpointManager(path).best()
        if found is None:
            raise UserError(f"trainer.init_from={source}: the run directory has no checkpoint "
                            "(checkpoints/best.pt or latest.pt): train it first, or name a "
                            "checkpoint file")  # fmt: skip
        return found
    if not path.is_file():
        raise UserError(f"trainer.init_from={source}: no such run directory or checkpoint "
                        "file")  # fmt: skip
    return path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers, so
    that checkpoint keys do not depend on how the model was run."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner

