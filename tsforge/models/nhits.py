"""N-HiTS: neural hierarchical interpolation for time-series forecasting.

Challu, Olivares, Oreshkin, Garza, Mergenthaler-Canseco, Dubrawski, "N-HiTS: Neural
Hierarchical Interpolation for Time Series Forecasting", AAAI 2023 (arXiv:2201.12886).

Defaults are neuralforecast's `NHITS` defaults, the network our throughput benchmark runs:
3 stacks of 1 identity block each, mlp_units 3 * [[512, 512]] (Linear(in, 512) then three
Linear(512, 512) + ReLU, then the projection to theta), n_pool_kernel_size [2, 2, 1] with
MaxPool1d(ceil_mode=True), n_freq_downsample [4, 2, 1] (max(H // r, 1) knots per output),
linear interpolation of the knots to H steps, dropout 0, the forecast levelled with the last
input value, backcast residuals masked by the input mask. Historical, future and static
covariates are pooled with the block's kernel and concatenated to the block input, as in
neuralforecast (we flatten pooled covariates channel-major rather than time-major: a fixed
permutation of the first layer's inputs, the same function class).

Shape legend:
    B  batch             L  input steps (input_size)     H  horizon
    C  target channels   O  outputs per point (n_outputs) N  B * C
    K  knots of a block  T  L + H (future covariates span input and horizon)
    Xh / Xf / S  historical / future / static covariate sizes

Channels are independent (`multivariate = False`): C channels are folded into the batch and
share the network; a window's covariates are shared by its channels.

Speed: the interpolation is a fixed [K, H] matrix product (precomputed from F.interpolate,
so the result is the same), skipped for blocks with K = H; the loop over blocks is the only
Python loop and unrolls under torch.compile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError
from tsforge.models.heads import block_mlp, fold_channels, repeat_for_channels, unfold_channels

POOLING = ("MaxPool1d", "AvgPool1d")
INTERPOLATION = ("linear", "nearest")


def interpolation_matrix(n_knots: int, horizon: int, mode: str) -> torch.Tensor:
    """[K, H] such that knots_K @ M == F.interpolate(knots, size=H, mode=mode)."""
    eye_K1K = torch.eye(n_knots, dtype=torch.float64).unsqueeze(1)
    return F.interpolate(eye_K1K, size=horizon, mode=mode).squeeze(1).float()


class NHITSBlock(nn.Module):
    """Pool the input, run the MLP, split theta into a backcast and interpolated knots."""

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_outputs: int,
        n_knots: int,
        pool_kernel_size: int,
        pooling_mode: str,
        interpolation_mode: str,
        mlp_units: Sequence[Sequence[int]],
        activation: str,
        dropout: float,
        hist_exog_size: int,
        futr_exog_size: int,
        stat_exog_size: int,
    ):
        super().__init__()
        self.input_size = input_size
        self.n_outputs = n_outputs
        self.n_knots = n_knots
        self.pool = getattr(nn, pooling_mode)(
            kernel_size=pool_kernel_size, stride=pool_kernel_size, ceil_mode=True
        )
        pooled_L = math.ceil(input_size / pool_kernel_size)
        pooled_T = math.ceil((input_size + horizon) / pool_kernel_size)
        self.exog_features = (
            hist_exog_size * pooled_L + futr_exog_size * pooled_T + stat_exog_size
        )
        self.mlp = block_mlp(
            pooled_L + self.exog_features,
            mlp_units,
            input_size + n_outputs * n_knots,
            activation,
            dropout,
        )
        self.interpolate = n_knots != horizon
        self.register_buffer(
            "interp_KH", interpolation_matrix(n_knots, horizon, interpolation_mode),
            persistent=False,
        )

    def pool_exog(
        self,
        hist_exog: torch.Tensor | None,
        futr_exog: torch.Tensor | None,
        stat_exog: torch.Tensor | None,
    ) -> torch.Tensor:
        """The block's covariate features [B, F]: pooled over time with the block's kernel."""
        parts = []
        if hist_exog is not None:
            parts.append(self.pool(hist_exog.transpose(1, 2)).flatten(1))  # [B, Xh * L']
        if futr_exog is not None:
            parts.append(self.pool(futr_exog.transpose(1, 2)).flatten(1))  # [B, Xf * T']
        if stat_exog is not None:
            parts.append(stat_exog)
        return torch.cat(parts, dim=1)

    def forward(
        self, residual_NL: torch.Tensor, exog_NF: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_NF = self.pool(residual_NL.unsqueeze(1)).squeeze(1)
        if exog_NF is not None:
            x_NF = torch.cat((x_NF, exog_NF), dim=1)
        theta = self.mlp(x_NF)
        backcast_NL = theta[:, : self.input_size]
        knots_NOK = theta[:, self.input_size :].view(-1, self.n_outputs, self.n_knots)
        forecast_NOH = knots_NOK @ self.interp_KH if self.interpolate else knots_NOK
        return backcast_NL, forecast_NOH


class NHITS(nn.Module):
    """N-HiTS with neuralforecast's default architecture; returns [B, H, C, O]."""

    supports_exog = True
    multivariate = False

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_channels: int = 1,
        n_outputs: int = 1,
        hist_exog_size: int = 0,
        futr_exog_size: int = 0,
        stat_exog_size: int = 0,
        stack_types: Sequence[str] = ("identity", "identity", "identity"),
        n_blocks: Sequence[int] = (1, 1, 1),
        mlp_units: Sequence[Sequence[int]] = ((512, 512),) * 3,
        n_pool_kernel_size: Sequence[int] = (2, 2, 1),
        n_freq_downsample: Sequence[int] = (4, 2, 1),
        pooling_mode: str = "MaxPool1d",
        interpolation_mode: str = "linear",
        dropout_prob_theta: float = 0.0,
        activation: str = "ReLU",
    ):
        super().__init__()
        n_stacks = len(stack_types)
        if not (len(n_blocks) == len(n_pool_kernel_size) == len(n_freq_downsample) == n_stacks):
            raise UserError(
                "NHITS needs one entry per stack in stack_types, n_blocks, n_pool_kernel_size "
                f"and n_freq_downsample (got {n_stacks}, {len(n_blocks)}, "
                f"{len(n_pool_kernel_size)}, {len(n_freq_downsample)})"
            )
        if any(t != "identity" for t in stack_types):
            raise UserError("NHITS stacks are 'identity' only; use NBEATS for trend/seasonality")
        if pooling_mode not in POOLING:
            raise UserError(f"pooling_mode '{pooling_mode}' is not one of {', '.join(POOLING)}")
        if interpolation_mode not in INTERPOLATION:
            raise UserError(
                f"interpolation_mode '{interpolation_mode}' is not one of "
                f"{', '.join(INTERPOLATION)}"
            )
        self.input_size = input_size
        self.horizon = horizon
        self.n_channels = n_channels
        self.n_outputs = n_outputs
        self.exog_sizes = (hist_exog_size, futr_exog_size, stat_exog_size)
        self.blocks = nn.ModuleList(
            NHITSBlock(
                input_size=input_size,
                horizon=horizon,
                n_outputs=n_outputs,
                n_knots=max(horizon // n_freq_downsample[i], 1),
                pool_kernel_size=n_pool_kernel_size[i],
                pooling_mode=pooling_mode,
                interpolation_mode=interpolation_mode,
                mlp_units=mlp_units,
                activation=activation,
                dropout=dropout_prob_theta,
                hist_exog_size=hist_exog_size,
                futr_exog_size=futr_exog_size,
                stat_exog_size=stat_exog_size,
            )
            for i in range(n_stacks)
            for _ in range(n_blocks[i])
        )

    def forward(
        self,
        insample_y: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
        hist_exog: torch.Tensor | None = None,
        futr_exog: torch.Tensor | None = None,
        stat_exog: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hist_BLX = hist_exog if self.exog_sizes[0] > 0 else None
        futr_BTX = futr_exog if self.exog_sizes[1] > 0 else None
        stat_BS = stat_exog if self.exog_sizes[2] > 0 else None
        use_exog = any(s > 0 for s in self.exog_sizes)

        y_NL = fold_channels(insample_y)
        # Blocks read the window most-recent-first (neuralforecast flips it), so pooling
        # windows are anchored at the forecast origin.
        residual_NL = y_NL.flip(-1)
        mask_NL = None if insample_mask is None else fold_channels(insample_mask).flip(-1)
        forecast_NOH = y_NL[:, -1:].unsqueeze(1)  # level with the naive forecast, [N, 1, 1]

        for block in self.blocks:
            exog_NF = None
            if use_exog:
                exog_BF = block.pool_exog(hist_BLX, futr_BTX, stat_BS)
                exog_NF = repeat_for_channels(exog_BF, self.n_channels)
            backcast_NL, block_NOH = block(residual_NL, exog_NF)
            residual_NL = residual_NL - backcast_NL
            if mask_NL is not None:
                residual_NL = residual_NL * mask_NL
            forecast_NOH = forecast_NOH + block_NOH

        y_NHO = forecast_NOH.transpose(1, 2)
        return unfold_channels(y_NHO, self.n_channels)
