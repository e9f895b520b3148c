"""Forecasting models: plain `nn.Module`s that map a batch of windows to [B, H, C, O].

Every model takes `input_size`, `horizon`, `n_channels`, `n_outputs` (from the loss) and its
own hyper-parameters as typed keywords, and is called as

    y_BHCO = model(insample_y, insample_mask, hist_exog, futr_exog, stat_exog)

Models know nothing of ranks, files or configs; `build_model` is the one place that checks a
name and its keywords and says what to fix.

    from tsforge.models import build_model
    model = build_model("nhits", input_size=480, horizon=96, n_outputs=loss.n_outputs)
"""

from __future__ import annotations

import inspect

import torch.nn as nn

from tsforge.errors import UserError
from tsforge.models.dlinear import DLinear
from tsforge.models.nbeats import NBEATS
from tsforge.models.nhits import NHITS
from tsforge.models.patch_decoder import PatchDecoder
from tsforge.models.patchtst import PatchTST

MODELS: dict[str, type[nn.Module]] = {
    "nhits": NHITS,
    "nbeats": NBEATS,
    "dlinear": DLinear,
    "patchtst": PatchTST,
    "patch_decoder": PatchDecoder,
}

EXOG_ARGS = ("hist_exog_size", "futr_exog_size", "stat_exog_size")

__all__ = ["MODELS", "DLinear", "NBEATS", "NHITS", "PatchDecoder", "PatchTST", "build_model"]


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the model registered as `name` with keyword arguments.

    Covariate sizes of 0 are accepted (and dropped) by every model, so callers can always pass
    them; a positive size for a model without covariate support is an error, as is any
    keyword the model does not take.
    """
    if name not in MODELS:
        raise UserError(f"unknown model '{name}': use one of {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    params = inspect.signature(cls.__init__).parameters
    if not cls.supports_exog:
        for key in EXOG_ARGS:
            if kwargs.get(key, 0):
                raise UserError(
                    f"model '{name}' takes no covariates but {key}={kwargs[key]}: "
                    "drop the covariate columns or use a model with covariates (nhits)"
                )
            kwargs.pop(key, None)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = ", ".join(p for p in params if p != "self")
        raise UserError(f"model '{name}' has no argument {', '.join(unknown)}: it takes {allowed}")
    return cls(**kwargs)
