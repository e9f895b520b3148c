"""A search space in Optuna's terms, and a trial's point as Hydra overrides.

    from tsforge.tune.space import suggest, as_overrides
    point = suggest(trial, search)     # {"optim.lr": 0.0012, "model": "nhits", ...}
    as_overrides(point)                # ["optim.lr=0.0012", "model=nhits", ...]

Parameters are sampled in the order the search lists them, so that a condition (`when`) reads
the values sampled before it: a parameter whose condition does not hold is not sampled at all
(Optuna's define-by-run spaces; TPE models such conditional spaces with `group=True`). A choice
whose values are lists is offered to Optuna as their JSON text (its categorical values are
scalars) and turned back into the list here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tsforge.config.search import ParamSpec, SearchConfig

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_WORDS = {"true", "false", "null", "nan", "inf"}


def label(value: Any) -> Any:
    """A choice as Optuna stores it: scalars as they are, lists as JSON text."""
    return json.dumps(value) if isinstance(value, list) else value


def _active(spec: ParamSpec, point: dict[str, Any]) -> bool:
    for other, wanted in spec.when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if other not in point or point[other] not in allowed:
            return False
    return True


def suggest(trial, search: SearchConfig) -> dict[str, Any]:
    """Sample the trial's point from the search's params (through Optuna's `suggest_*`)."""
    point: dict[str, Any] = {}
    for key, spec in search.params.items():
        if not _active(spec, point):
            continue
        if spec.type == "float":
            point[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log,
                                             step=spec.step)  # fmt: skip
        elif spec.type == "int":
            point[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log,
                                           step=int(spec.step or 1))  # fmt: skip
        else:
            labels = [label(c) for c in spec.choices]
            point[key] = spec.choices[labels.index(trial.suggest_categorical(key, labels))]
    return point


def as_labels(point: dict[str, Any]) -> dict[str, Any]:
    """A point of the search (values as the search file writes them) in Optuna's terms, for
    `study.enqueue_trial`."""
    return {key: label(value) for key, value in point.items()}


def value_text(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _WORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def as_overrides(point: dict[str, Any]) -> list[str]:
    return [f"{key}={value_text(value)}" for key, value in point.items()]
