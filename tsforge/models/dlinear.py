"""DLinear: a moving-average decomposition and two linear maps.

Zeng, Chen, Zhang, Xu, "Are Transformers Effective for Time Series Forecasting?", AAAI 2023
(arXiv:2205.13504).

As in the paper's code: the input is split into a trend (moving average, kernel 25, stride 1,
the ends padded by repeating the first and last values) and a remainder (seasonal part); one
Linear(L, H) maps each and the forecast is their sum. `individual=True` gives every channel
its own pair of linear maps; otherwise channels share them. Each map outputs H * O values
(O outputs per point, set by the loss). No covariates, no dropout, PyTorch's default Linear
initialisation.

`revin=True` wraps the two maps in reversible instance normalisation (Kim et al., ICLR 2022):
each window and channel is standardised by its own input statistics and the forecast mapped
back, which is what RLinear (Li et al., arXiv:2305.10721) adds to a linear map to follow level
shifts such as ETTh2's. Off by default, as in the paper.

Shape legend:
    B  batch             L  input steps (input_size)     H  horizon
    C  target channels   O  outputs per point (n_outputs)

Channels are independent (`multivariate = False`); the per-channel maps of `individual` are
one batched einsum over a [C, L, H * O] weight, not a loop over channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError
from tsforge.models.heads import RevIN


def moving_average(x_BLC: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Centred moving average along L with the ends padded by repetition (same length)."""
    pad = (kernel_size - 1) // 2
    x_BCL = x_BLC.transpose(1, 2)
    x_BCL = F.pad(x_BCL, (pad, pad), mode="replicate")
    return F.avg_pool1d(x_BCL, kernel_size, stride=1).transpose(1, 2)


class ChannelLinear(nn.Module):
    """y[b, c] = x[b, c] @ W[c] + b[c]: one Linear(L, F) per channel, batched."""

    def __init__(self, n_channels: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation range
        self.weight_CLF = nn.Parameter(
            torch.empty(n_channels, in_features, out_features).uniform_(-bound, bound)
        )
        self.bias_CF = nn.Parameter(torch.empty(n_channels, out_features).uniform_(-bound, bound))

    def forward(self, x_BCL: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcl,clf->bcf", x_BCL, self.weight_CLF) + self.bias_CF


class DLinear(nn.Module):
    """DLinear; returns [B, H, C, O]."""

    supports_exog = False
    multivariate = False

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_channels: int = 1,
        n_outputs: int = 1,
        moving_avg_window: int = 25,
        individual: bool = False,
        revin: bool = False,
        revin_affine: bool = True,
    ):
        super().__init__()
        if moving_avg_window % 2 == 0 or moving_avg_window < 1:
            raise UserError(f"moving_avg_window must be odd and positive, got {moving_avg_window}")
        self.horizon = horizon
        self.n_outputs = n_outputs
        self.moving_avg_window = moving_avg_window
        out_features = horizon * n_outputs
        self.revin = RevIN(n_channels, affine=revin_affine) if revin else None
        if individual:
            self.linear_seasonal = ChannelLinear(n_channels, input_size, out_features)
            self.linear_trend = ChannelLinear(n_channels, input_size, out_features)
        else:
            self.linear_seasonal = nn.Linear(input_size, out_features)
            self.linear_trend = nn.Linear(input_size, out_features)

    def forward(
        self,
        insample_y: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
        hist_exog: torch.Tensor | None = None,
        futr_exog: torch.Tensor | None = None,
        stat_exog: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, L, C = insample_y.shape
        x_BLC = insample_y
        stats = None
        if self.revin is not None:
            x_BLC, stats = self.revin.normalize(x_BLC, insample_mask)
        trend_BLC = moving_average(x_BLC, self.moving_avg_window)
        seasonal_BCL = (x_BLC - trend_BLC).transpose(1, 2)
        y_BCF = self.linear_seasonal(seasonal_BCL) + self.linear_trend(trend_BLC.transpose(1, 2))
        y_BHCO = y_BCF.reshape(B, C, self.horizon, self.n_outputs).transpose(1, 2)
        if stats is not None:
            y_BHCO = self.revin.denormalize(y_BHCO, stats)
        return y_BHCO
