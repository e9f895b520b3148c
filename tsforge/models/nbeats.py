"""N-BEATS: neural basis expansion analysis, generic and interpretable.

Oreshkin, Carpov, Chapados, Bengio, "N-BEATS: Neural basis expansion analysis for
interpretable time series forecasting", ICLR 2020 (arXiv:1905.10437).

Defaults are neuralforecast's `NBEATS` defaults: stacks ("identity", "trend",
"seasonality") of 1 block each, mlp_units 3 * [[512, 512]] (see `heads.block_mlp`),
n_polynomials 2, n_harmonics 2, no weight sharing, ReLU, dropout 0. The forecast is levelled
with the last input value and backcast residuals are masked, as in neuralforecast.
`stack_types` picks the variant:
    generic        ["identity"] * 30, n_blocks [1] * 30   (the paper's N-BEATS-G: 30 stacks
                   of one block, 4 layers of 512 units)
    interpretable  ["trend", "seasonality"], n_blocks [3, 3], shared_weights=True (the
                   paper's N-BEATS-I: a trend and a seasonality stack, weights shared within
                   a stack)
Bases (as neuralforecast builds them): identity (theta is the backcast and the forecast),
trend (polynomials (t / T)^p, p = 0..n_polynomials), seasonality (cos/sin of frequencies
0, 1, 1 + 1/n_harmonics, ... up to H / 2 cycles per horizon).

Shape legend:
    B  batch             L  input steps (input_size)     H  horizon
    C  target channels   O  outputs per point (n_outputs) N  B * C
    P  basis functions of a trend / seasonality block

No covariates (`supports_exog = False`; N-BEATSx adds them). Channels are independent: C
channels are folded into the batch and share the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from tsforge.errors import UserError
from tsforge.models.heads import block_mlp, fold_channels, unfold_channels

STACK_TYPES = ("identity", "trend", "seasonality")


def trend_basis(degree: int, size: int) -> torch.Tensor:
    """[P, size] polynomials (t / size)^p for p = 0..degree."""
    t = np.arange(size, dtype=np.float64) / size
    return torch.tensor(np.stack([t**p for p in range(degree + 1)]), dtype=torch.float32)


def seasonality_bases(harmonics: int, input_size: int, horizon: int):
    """([P, L], [P, H]) cosines then sines, P = 2 * number of frequencies."""
    frequency = np.append(
        np.zeros(1), np.arange(harmonics, harmonics / 2 * horizon, dtype=np.float64) / harmonics
    )[None, :]
    # The backcast grid runs backwards in time because blocks read the window flipped.
    back = -2 * np.pi * (np.arange(input_size, dtype=np.float64)[:, None] / horizon) * frequency
    fore = 2 * np.pi * (np.arange(horizon, dtype=np.float64)[:, None] / horizon) * frequency
    as_basis = lambda g: torch.tensor(  # noqa: E731
        np.concatenate([np.cos(g).T, np.sin(g).T]), dtype=torch.float32
    )
    return as_basis(back), as_basis(fore)


class NBEATSBlock(nn.Module):
    """MLP -> theta -> (backcast [N, L], forecast [N, H, O]) through a fixed or identity basis."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        horizon: int,
        n_outputs: int,
        mlp_units: Sequence[Sequence[int]],
        activation: str,
        dropout: float,
        n_polynomials: int,
        n_harmonics: int,
    ):
        super().__init__()
        self.kind = kind
        self.input_size = input_size
        self.horizon = horizon
        self.n_outputs = n_outputs
        if kind == "identity":
            n_theta = input_size + horizon * n_outputs
        else:
            if kind == "trend":
                back_PL = trend_basis(n_polynomials, input_size)
                fore_PH = trend_basis(n_polynomials, horizon)
            else:
                back_PL, fore_PH = seasonality_bases(n_harmonics, input_size, horizon)
            self.register_buffer("back_PL", back_PL, persistent=False)
            self.register_buffer("fore_PH", fore_PH, persistent=False)
            self.n_basis = back_PL.shape[0]
            n_theta = self.n_basis * (1 + n_outputs)
        self.mlp = block_mlp(input_size, mlp_units, n_theta, activation, dropout)

    def forward(self, residual_NL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.mlp(residual_NL)
        if self.kind == "identity":
            backcast_NL = theta[:, : self.input_size]
            forecast_NHO = theta[:, self.input_size :].view(-1, self.horizon, self.n_outputs)
            return backcast_NL, forecast_NHO
        P = self.n_basis
        backcast_NL = theta[:, :P] @ self.back_PL
        coef_NPO = theta[:, P:].view(-1, P, self.n_outputs)
        forecast_NHO = torch.einsum("npo,ph->nho", coef_NPO, self.fore_PH)
        return backcast_NL, forecast_NHO


class NBEATS(nn.Module):
    """N-BEATS (generic / interpretable by `stack_types`); returns [B, H, C, O]."""

    supports_exog = False
    multivariate = False

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_channels: int = 1,
        n_outputs: int = 1,
        stack_types: Sequence[str] = ("identity", "trend", "seasonality"),
        n_blocks: Sequence[int] = (1, 1, 1),
        mlp_units: Sequence[Sequence[int]] = ((512, 512),) * 3,
        n_polynomials: int = 2,
        n_harmonics: int = 2,
        shared_weights: bool = False,
        dropout_prob_theta: float = 0.0,
        activation: str = "ReLU",
    ):
        super().__init__()
        if len(n_blocks) != len(stack_types):
            raise UserError(
                f"NBEATS needs one n_blocks entry per stack: {len(stack_types)} stack_types, "
                f"{len(n_blocks)} n_blocks"
            )
        for kind in stack_types:
            if kind not in STACK_TYPES:
                raise UserError(f"NBEATS stack type '{kind}' is not one of {STACK_TYPES}")
        self.horizon = horizon
        self.n_channels = n_channels
        blocks: list[NBEATSBlock] = []
        for kind, count in zip(stack_types, n_blocks):
            for j in range(count):
                if shared_weights and j > 0:
                    blocks.append(blocks[-1])  # the same module: parameters shared in a stack
                    continue
                blocks.append(
                    NBEATSBlock(
                        kind, input_size, horizon, n_outputs, mlp_units, activation,
                        dropout_prob_theta, n_polynomials, n_harmonics,
                    )
                )
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self,
        insample_y: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
        hist_exog: torch.Tensor | None = None,
        futr_exog: torch.Tensor | None = None,
        stat_exog: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y_NL = fold_channels(insample_y)
        residual_NL = y_NL.flip(-1)
        mask_NL = None if insample_mask is None else fold_channels(insample_mask).flip(-1)
        forecast_NHO = y_NL[:, -1:].unsqueeze(-1)  # level with the naive forecast, [N, 1, 1]
        for block in self.blocks:
            backcast_NL, block_NHO = block(residual_NL)
            residual_NL = residual_NL - backcast_NL
            if mask_NL is not None:
                residual_NL = residual_NL * mask_NL
            forecast_NHO = forecast_NHO + block_NHO
        return unfold_channels(forecast_NHO, self.n_channels)
