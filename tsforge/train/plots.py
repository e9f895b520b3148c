"""Forecast plots for TensorBoard: history, truth, forecast and a quantile band as an image.

`window_label(store, series, channel, t)` names a plotted window by what a person knows it
by: the series id (and the channel, for a store of several targets) and the time of the
forecast's first step (a date when the store has dates).
"""

from __future__ import annotations

import re

import numpy as np


def window_label(store, series: int, channel: int, t: int) -> tuple[str, str]:
    """(title, tag suffix) of the window of `series` whose forecast starts at offset `t`."""
    from tsforge.data.freq import Freq, format_time

    sid = str(store.ids[series])
    targets = store.roles.target
    if len(targets) > 1 and channel >= 0:
        sid = f"{sid} {targets[channel]}"
    start = Freq.parse(store.freq, store.time_unit).step(int(store.starts[series]), int(t))
    when = format_time(start, store.time_unit)
    if store.time_unit == "index":
        when = f"t={when}"
    else:  # 2020-03-13, 2020-03-13 05:00, 2020-03-13 05:00:30
        when = when.removesuffix(" 00:00:00")
        if when.count(":") == 2 and when.endswith(":00"):
            when = when[: -len(":00")]
    title = f"series {sid} · forecast from {when}"
    return title, re.sub(r"[^\w.-]+", "_", sid)


def forecast_image(
    *,
    history: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    band: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
) -> np.ndarray:
    """An RGB image [H, W, 3] (uint8) of one window's forecast; x is counted in steps from
    the forecast's start, and the legend sits right of the axes, clear of the data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.6), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    L, H = len(history), len(truth)
    t_in, t_out = np.arange(-L, 0), np.arange(H)
    ax.plot(t_in, history, color="0.3", lw=1, label="history")
    ax.plot(t_out, truth, color="0.3", lw=1, ls="--", label="truth")
    ax.plot(t_out, forecast, color="tab:blue", lw=1.5, label="forecast")
    if band is not None:
        ax.fill_between(t_out, band[0], band[1], color="tab:blue", alpha=0.25, label="interval")
    ax.axvline(-0.5, color="0.6", lw=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("steps from the forecast start", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
