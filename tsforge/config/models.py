"""Typed config schemas of the models, derived from their constructors.

Each model's `__init__` already names and types its hyper-parameters; deriving the schema
from it keeps one source of truth. The arguments that follow from the data and the loss
(`input_size`, `horizon`, `n_channels`, `n_outputs`, covariate sizes) are left out: the
builder fills them in. `conf/model/<name>.yaml` puts `<name>_schema` first in its defaults.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import typing
from typing import Any

from tsforge.models import MODELS

FROM_DATA = frozenset(
    {"input_size", "horizon", "n_channels", "n_outputs",
     "hist_exog_size", "futr_exog_size", "stat_exog_size"}
)  # fmt: skip


def _config_type(hint: Any) -> Any:
    """Sequence[...] (fine for a constructor) -> List[...] (what OmegaConf types)."""
    origin = typing.get_origin(hint)
    if origin in (collections.abc.Sequence, list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        return list[_config_type(inner)]
    return hint


def _config_default(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_config_default(v) for v in value]
    return value


def model_schema(name: str) -> type:
    """A dataclass with `name` and every tunable constructor argument of the model."""
    cls = MODELS[name]
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple] = [("name", str, dataclasses.field(default=name))]
    for arg, param in inspect.signature(cls.__init__).parameters.items():
        if arg == "self" or arg in FROM_DATA:
            continue
        default = _config_default(param.default)
        factory = (lambda d=default: list(d)) if isinstance(default, list) else None
        field = (
            dataclasses.field(default_factory=factory)
            if factory
            else dataclasses.field(default=default)
        )
        fields.append((arg, _config_type(hints[arg]), field))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def model_kwargs(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The constructor keywords of a resolved model config (everything but `name`)."""
    return {k: v for k, v in model_cfg.items() if k != "name"}
