"""Pieces shared by the forecasting models: channel folding, block MLPs, RevIN, a flatten head.

Shape legend:
    B  batch (windows)          L  input steps             H  horizon
    C  target channels          O  outputs per forecast point (set by the loss)
    N  B * C (channels folded into the batch for channel-independent models)
    F  features                 D  model width

Channel-independent models (every model here) fold the C target channels into the batch,
run one shared network on N = B * C univariate series and unfold the result. For C = 1 both
folds are views, so the univariate path pays nothing for the multivariate one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from tsforge.errors import UserError

ACTIVATIONS = ("ReLU", "Softplus", "Tanh", "SELU", "LeakyReLU", "PReLU", "Sigmoid", "GELU")


def fold_channels(x_BLC: torch.Tensor) -> torch.Tensor:
    """[B, L, C] -> [B * C, L]: one row per (window, channel)."""
    B, L, C = x_BLC.shape
    return x_BLC.transpose(1, 2).reshape(B * C, L)


def unfold_channels(y_NHO: torch.Tensor, n_channels: int) -> torch.Tensor:
    """[B * C, H, O] -> [B, H, C, O], the inverse of `fold_channels` on the output side."""
    N, H, O = y_NHO.shape
    return y_NHO.reshape(N // n_channels, n_channels, H, O).transpose(1, 2)


def repeat_for_channels(x_BF: torch.Tensor, n_channels: int) -> torch.Tensor:
    """[B, F] -> [B * C, F]: the covariates of a window are shared by all its channels."""
    if n_channels == 1:
        return x_BF
    B, F = x_BF.shape
    return x_BF.unsqueeze(1).expand(B, n_channels, F).reshape(B * n_channels, F)


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"activation '{name}' is not one of {', '.join(ACTIVATIONS)}")
    return getattr(nn, name)()


def block_mlp(
    in_features: int,
    mlp_units: Sequence[Sequence[int]],
    out_features: int,
    activation: str = "ReLU",
    dropout: float = 0.0,
) -> nn.Sequential:
    """The N-BEATS / N-HiTS block MLP exactly as neuralforecast builds it.

    `mlp_units` is a list of [in, out] layer sizes; neuralforecast's default 3 * [[512, 512]]
    gives Linear(in, 512), then three (Linear(512, 512), activation) pairs, then the linear
    projection to theta. The first Linear has no activation after it (a factorised first
    layer). We keep that quirk so that "neuralforecast's default architecture" is the same
    network, parameter for parameter, which the throughput comparison relies on.
    """
    if not mlp_units:
        raise UserError("mlp_units must list at least one [in, out] layer, e.g. [[512, 512]]")
    layers: list[nn.Module] = [nn.Linear(in_features, mlp_units[0][0])]
    for n_in, n_out in mlp_units:
        layers += [nn.Linear(n_in, n_out), activation_layer(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(mlp_units[-1][1], out_features))
    return nn.Sequential(*layers)


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022), as PatchTST uses it.

    Each window and channel is standardised by its own mean and standard deviation over the
    input steps (observed steps only when a mask is given), an affine map per channel is
    applied, and the forecast is mapped back. Statistics are returned, not stored on the
    module, so the forward pass has no hidden state (torch.compile and re-entrancy like that).

    All O outputs are mapped back as locations (y * std + mean). That is right for point and
    quantile outputs; with a parametric loss (Normal / Student-t) it would also shift the
    scale output, so train those with `revin=False` (the loader already scales the series).
    """

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight_C = nn.Parameter(torch.ones(n_channels))
            self.bias_C = nn.Parameter(torch.zeros(n_channels))

    def normalize(
        self, x_BLC: torch.Tensor, mask_BLC: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if mask_BLC is None:
            mean_B1C = x_BLC.mean(dim=1, keepdim=True)
            var_B1C = x_BLC.var(dim=1, keepdim=True, unbiased=False)
        else:
            count_B1C = mask_BLC.sum(dim=1, keepdim=True).clamp_min(1.0)
            mean_B1C = (x_BLC * mask_BLC).sum(dim=1, keepdim=True) / count_B1C
            var_B1C = (((x_BLC - mean_B1C) * mask_BLC) ** 2).sum(dim=1, keepdim=True) / count_B1C
        std_B1C = torch.sqrt(var_B1C + self.eps)
        x_BLC = (x_BLC - mean_B1C) / std_B1C
        if mask_BLC is not None:
            # Missing steps sit at the window mean (0 after normalisation), as in the input.
            x_BLC = x_BLC * mask_BLC
        if self.affine:
            x_BLC = x_BLC * self.weight_C + self.bias_C
        return x_BLC, (mean_B1C, std_B1C)

    def denormalize(
        self, y_BHCO: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        mean_B1C, std_B1C = stats
        if self.affine:
            y_BHCO = (y_BHCO - self.bias_C[:, None]) / (self.weight_C[:, None] + self.eps**2)
        return y_BHCO * std_B1C.unsqueeze(-1) + mean_B1C.unsqueeze(-1)


class FlattenHead(nn.Module):
    """Flatten a per-series representation and project it to H * O forecast values."""

    def __init__(self, in_features: int, horizon: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.horizon = horizon
        self.n_outputs = n_outputs
        self.linear = nn.Linear(in_features, horizon * n_outputs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, z_NF: torch.Tensor) -> torch.Tensor:
        y_NHO = self.dropout(self.linear(z_NF))
        return y_NHO.view(-1, self.horizon, self.n_outputs)
