"""The columns of a forecast file: what `tsforge predict` writes, named as Nixtla's libraries
(StatsForecast, NeuralForecast) name them, so their tools read tsforge's forecasts as theirs.

    from tsforge.forecasts import quantile_column, quantile_of
    quantile_column("nhits", 0.1)           # "nhits-lo-80"
    quantile_column("nhits", 0.9)           # "nhits-hi-80"
    quantile_column("nhits", 0.5)           # "nhits-median"
    quantile_of("nhits", "nhits-hi-80")     # 0.9 (None: not a quantile column of nhits)

A forecast file is long: `unique_id, ds, [target,] <model>, <model>-lo-<level>...,
<model>-median, <model>-hi-<level>...`. `<model>` is the point forecast (the loss's own: the
median of a quantile or distribution loss, the mean under MSE...). Quantile `q` belongs to
the central prediction interval of level `100 (1 - 2 q)` % when q < 0.5, whose bounds are the
quantiles `q` and `1 - q`: 0.1 is `lo-80`, 0.9 is `hi-80`, 0.025 and 0.975 are `lo-95` and
`hi-95`; 0.5 is `median`. Levels are written in percent without trailing zeros (`lo-80`,
`lo-33.4`), as Nixtla writes integer levels.
"""

from __future__ import annotations

import re

_QUANTILE = re.compile(r"-(lo|hi)-(\d+(?:\.\d+)?)$|-median$")


def _percent(level: float) -> str:
    """80.0 -> "80", 33.4 -> "33.4" (float noise such as 79.99999999999999 rounded off)."""
    text = f"{round(level, 6):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def quantile_column(model: str, q: float) -> str:
    """The column of quantile `q` (in (0, 1)) of `model`'s forecasts."""
    if q < 0.5:
        return f"{model}-lo-{_percent(100 - 200 * q)}"
    if q > 0.5:
        return f"{model}-hi-{_percent(200 * q - 100)}"
    return f"{model}-median"


def quantile_of(model: str, column: str) -> float | None:
    """The quantile level a column of `model` holds, or None if it is not one."""
    if not column.startswith(f"{model}-"):
        return None
    match = _QUANTILE.fullmatch(column[len(model):])
    if match is None:
        return None
    if match.group(1) is None:
        return 0.5
    level = float(match.group(2)) / 100
    return round((1 - level) / 2 if match.group(1) == "lo" else (1 + level) / 2, 8)
