"""Forecast plots for TensorBoard: history, truth, forecast and a quantile band as an image."""

from __future__ import annotations

import numpy as np


def forecast_image(
    *,
    history: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    band: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
) -> np.ndarray:
    """An RGB image [H, W, 3] (uint8) of one window's forecast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.5), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    L, H = len(history), len(truth)
    t_in, t_out = np.arange(L), np.arange(L, L + H)
    ax.plot(t_in, history, color="0.3", lw=1, label="history")
    ax.plot(t_out, truth, color="0.3", lw=1, ls="--", label="truth")
    ax.plot(t_out, forecast, color="tab:blue", lw=1.5, label="forecast")
    if band is not None:
        ax.fill_between(t_out, band[0], band[1], color="tab:blue", alpha=0.25, label="interval")
    ax.axvline(L - 0.5, color="0.6", lw=0.8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
