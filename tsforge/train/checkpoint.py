"""Atomic, self-describing checkpoints in `RUN_DIR/checkpoints/`.

    step_00000500.pt   one file per saved step (the last `keep_last` are kept)
    latest.pt          the newest step (a copy made by hard link where possible)
    best.pt            the step with the best validation metric

A checkpoint holds everything needed to continue exactly: the resolved config, the store
fingerprint, the model name, model / optimizer / scheduler / grad-scaler state, every RNG
state, the loader state and the step. Files are written to a temporary name and renamed, so
a crash mid-write never leaves a truncated checkpoint under a real name. Loading checks the
fingerprint and the model and refuses a mismatch with a message that says what to do.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsforge.errors import UserError

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"step_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class CheckpointManager:
    """Saves and finds checkpoints of one run. Only the main rank calls `save`."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, int(keep_last))

    def save(self, state: dict[str, Any], step: int, *, is_best: bool = False) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{step:08d}.pt"
        _atomic_save({"format_version": FORMAT_VERSION, "step": step, **state}, path)
        _link_or_copy(path, self.dir / "latest.pt")
        if is_best:
            _link_or_copy(path, self.dir / "best.pt")
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def step_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _STEP_FILE.search(p.name))

    def latest(self) -> Path | None:
        path = self.dir / "latest.pt"
        return path if path.exists() else None

    def best(self) -> Path | None:
        path = self.dir / "best.pt"
        return path if path.exists() else self.latest()


def load_checkpoint(
    path: str | os.PathLike, *, fingerprint: str | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint and check it belongs to this data and model; UserError if not."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or not a checkpoint at all
        raise UserError(
            f"checkpoint {path} does not load ({type(err).__name__}): delete it to restart from "
            "the previous one, or use another hydra.run.dir"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a tsforge checkpoint of format {FORMAT_VERSION}")
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
    return ckpt
