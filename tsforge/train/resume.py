"""What launching a run again may change, and what it may not.

    changed = config_changes(saved_cfg, new_cfg, run_dir)   # {key: [old, new]}, or UserError

Launching again with the same `hydra.run.dir` resumes from the run's latest checkpoint. The new
config is compared with the run's `config.yaml`, key by key:
  * a key in `MAY_CHANGE` (how long and how fast to train, how often to look and to save, where
    and on what to run) is applied for real and recorded in `meta.json` under `resumes`;
  * any other key (the model, the loss, the data and its windows, the global batch, the seed)
    is refused, naming the key, its old and new values and the fix: a new `hydra.run.dir`.
    The weights, the optimizer's moments and the loader's place in the data only mean
    something for the model and data they were made with.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from tsforge.config.flat import flat
from tsforge.errors import UserError

# Patterns of dotted config keys (fnmatch: `*` also matches dots).
MAY_CHANGE = (
    # how long, how fast: the optimizer keeps its moments, the schedule is rebuilt with these
    "trainer.max_steps", "optim.lr", "optim.weight_decay", "optim.betas", "optim.schedule",
    "optim.warmup_steps", "optim.min_lr_ratio", "optim.grad_clip",
    # how often to look and to save
    "trainer.val_every_steps", "trainer.log_every_steps", "trainer.checkpoint_every_steps",
    "trainer.checkpoint_every_min", "trainer.keep_last", "trainer.early_stop_patience",
    "trainer.plot_series",
    # where and how to run: the same numbers, on other hardware or at another world size
    "trainer.threads", "trainer.device", "trainer.precision", "trainer.compile",
    "trainer.activation_checkpointing", "trainer.malloc_mmap_threshold_kb",
    "trainer.dist_timeout_s", "data.num_workers", "data.cache_mb", "data.eval_batch_size",
    "launcher.*",
    "trainer.peak_tflops",  # only the MFU it is measured against
    # where the first start took its weights from: a resume continues from its own
    "trainer.init_from",
    # the store may move: its fingerprint, checked against the checkpoint's, must not change
    "data.path",
)  # fmt: skip


def may_change(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in MAY_CHANGE)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or a == b


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _names_first(key: str) -> tuple[bool, str]:
    """A group's name (model.name, data.name, loss.name) before its keys: they follow from it."""
    return (not (key.count(".") == 1 and key.endswith(".name")), key)


def config_changes(saved: dict[str, Any], new: dict[str, Any], run_dir) -> dict[str, list]:
    """{key: [old, new]} of the keys that differ, all of them allowed to; else a UserError
    naming the first refused key."""
    old_flat, new_flat = flat(saved), flat(new)
    changed: dict[str, list] = {}
    for key in sorted(old_flat.keys() | new_flat.keys(), key=_names_first):
        old, value = old_flat.get(key), new_flat.get(key)
        if _same(old, value):
            continue
        if not may_change(key):
            raise UserError(
                f"{key} was {_show(old)} in run {run_dir} and is {_show(value)} now: a resumed "
                f"run keeps its model, data and shapes; train with {key}={_show(value)} in a new "
                f"hydra.run.dir, or launch without that change to resume"
            )
        changed[key] = [old, value]
    return changed
