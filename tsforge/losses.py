"""Training losses: point (MAE, MSE, Huber), multi-quantile pinball, Normal / Student-t NLL.

Every loss is an `nn.Module` called as `loss(y_hat_BHCO, y_BHC, mask_BHC) -> scalar`, the
masked mean over the observed points (pads and missing values have mask 0 and contribute
nothing, to the numerator or the denominator). Each declares `n_outputs` (the O the model
must produce per forecast point) and maps outputs to forecasts with `point(y_hat) -> BHC`;
probabilistic losses also give `quantiles(y_hat, levels) -> BHCQ`.

Shape legend:
    B  batch   H  horizon   C  channels   O  outputs per point   Q  quantile levels

    loss = build_loss("quantile", quantiles=[0.1, 0.5, 0.9])
    model = build_model("nhits", input_size=480, horizon=96, n_outputs=loss.n_outputs)
    loss(model(...), y_BHC, mask_BHC).backward()
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError

__all__ = [
    "LOSSES", "MAE", "MSE", "Huber", "QuantileLoss", "NormalNLL", "StudentTNLL",
    "build_loss", "masked_mean", "pinball", "student_t_icdf",
]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """sum(values * mask) / sum(mask), and 0 when nothing is observed (not NaN)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    weight = mask.expand_as(values)
    total = weight.sum()
    # where(), not an if: no data-dependent Python branch under torch.compile.
    return torch.where(total > 0, (values * weight).sum() / total.clamp_min(1e-12), 0.0)


def pinball(y_hat_BHCQ: torch.Tensor, y_BHC: torch.Tensor, levels_Q: torch.Tensor) -> torch.Tensor:
    """Pinball loss per point and level: max(q * e, (q - 1) * e) with e = y - y_hat."""
    err = y_BHC.unsqueeze(-1) - y_hat_BHCQ
    return torch.maximum(levels_Q * err, (levels_Q - 1) * err)


class Loss(nn.Module):
    """Common interface; subclasses define `n_outputs`, `elementwise` and `point`."""

    n_outputs: int = 1
    is_probabilistic: bool = False

    def elementwise(self, y_hat_BHCO: torch.Tensor, y_BHC: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, y_hat_BHCO: torch.Tensor, y_BHC: torch.Tensor, mask_BHC: torch.Tensor | None = None
    ) -> torch.Tensor:
        if y_hat_BHCO.shape[-1] != self.n_outputs:
            raise UserError(
                f"{type(self).__name__} needs {self.n_outputs} outputs per point but the model "
                f"gives {y_hat_BHCO.shape[-1]}: build the model with the loss's n_outputs"
            )
        return masked_mean(self.elementwise(y_hat_BHCO, y_BHC), mask_BHC)

    def point(self, y_hat_BHCO: torch.Tensor) -> torch.Tensor:
        return y_hat_BHCO[..., 0]

    def quantiles(self, y_hat_BHCO: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        raise UserError(f"{type(self).__name__} is a point loss: it has no quantiles")


class MAE(Loss):
    """Mean absolute error; its point forecast estimates the median."""

    def elementwise(self, y_hat_BHCO, y_BHC):
        return (y_hat_BHCO[..., 0] - y_BHC).abs()


class MSE(Loss):
    """Mean squared error; its point forecast estimates the mean."""

    def elementwise(self, y_hat_BHCO, y_BHC):
        return (y_hat_BHCO[..., 0] - y_BHC).square()


class Huber(Loss):
    """Huber loss: quadratic within `delta` of the target, linear beyond (torch's convention:
    0.5 e^2 for |e| <= delta, delta * (|e| - 0.5 delta) otherwise)."""

    def __init__(self, delta: float = 1.0):
        super().__init__()
        if delta <= 0:
            raise UserError(f"huber delta must be positive, got {delta}")
        self.delta = float(delta)

    def elementwise(self, y_hat_BHCO, y_BHC):
        return F.huber_loss(y_hat_BHCO[..., 0], y_BHC, reduction="none", delta=self.delta)


class QuantileLoss(Loss):
    """Multi-quantile pinball loss, averaged over levels (neuralforecast's MQLoss).

    Output o is the forecast of quantile `quantiles[o]` (levels are kept sorted).
    `quantiles(y_hat, levels)` sorts the outputs (so crossing quantiles cannot give a
    non-monotone answer) and interpolates linearly between trained levels, flat beyond them.
    """

    is_probabilistic = True

    def __init__(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)):
        super().__init__()
        levels = sorted(float(q) for q in quantiles)
        if not levels or not all(0.0 < q < 1.0 for q in levels) or len(set(levels)) < len(levels):
            raise UserError(f"quantiles must be distinct levels in (0, 1), got {list(quantiles)}")
        self.n_outputs = len(levels)
        self.levels = tuple(levels)
        self.register_buffer("levels_Q", torch.tensor(levels), persistent=False)

    def elementwise(self, y_hat_BHCO, y_BHC):
        return pinball(y_hat_BHCO, y_BHC, self.levels_Q.to(y_hat_BHCO.dtype)).mean(dim=-1)

    def point(self, y_hat_BHCO):
        return self.quantiles(y_hat_BHCO, [0.5])[..., 0]

    def quantiles(self, y_hat_BHCO, levels):
        sorted_BHCO = y_hat_BHCO.sort(dim=-1).values
        if self.n_outputs == 1:
            return sorted_BHCO.expand(*sorted_BHCO.shape[:-1], len(levels))
        trained = self.levels_Q.to(y_hat_BHCO.dtype)
        want = torch.as_tensor(levels, dtype=y_hat_BHCO.dtype, device=y_hat_BHCO.device)
        want = want.clamp(trained[0], trained[-1])
        hi = torch.searchsorted(trained, want).clamp(1, self.n_outputs - 1)
        lo = hi - 1
        frac = (want - trained[lo]) / (trained[hi] - trained[lo])
        return sorted_BHCO[..., lo] + frac * (sorted_BHCO[..., hi] - sorted_BHCO[..., lo])


class NormalNLL(Loss):
    """Gaussian negative log-likelihood. Outputs: loc, scale = softplus(.) + min_scale."""

    is_probabilistic = True
    n_outputs = 2

    def __init__(self, min_scale: float = 1e-6):
        super().__init__()
        self.min_scale = float(min_scale)

    def params(self, y_hat_BHCO: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y_hat_BHCO[..., 0], F.softplus(y_hat_BHCO[..., 1]) + self.min_scale

    def elementwise(self, y_hat_BHCO, y_BHC):
        loc, scale = self.params(y_hat_BHCO)
        z = (y_BHC - loc) / scale
        return 0.5 * z.square() + scale.log() + 0.5 * math.log(2 * math.pi)

    def quantiles(self, y_hat_BHCO, levels):
        loc, scale = self.params(y_hat_BHCO)
        q = torch.as_tensor(levels, dtype=loc.dtype, device=loc.device)
        return loc.unsqueeze(-1) + scale.unsqueeze(-1) * torch.special.ndtri(q)


class StudentTNLL(NormalNLL):
    """Student-t negative log-likelihood. Outputs: loc, scale = softplus(.) + min_scale,
    df = softplus(.) + 2 (so the variance exists and the point forecast, loc, is the mean)."""

    n_outputs = 3

    def params(self, y_hat_BHCO):
        loc, scale = super().params(y_hat_BHCO)
        return loc, scale, F.softplus(y_hat_BHCO[..., 2]) + 2.0

    def elementwise(self, y_hat_BHCO, y_BHC):
        loc, scale, df = self.params(y_hat_BHCO)
        z = (y_BHC - loc) / scale
        return (
            torch.lgamma(df / 2)
            - torch.lgamma((df + 1) / 2)
            + 0.5 * torch.log(df * math.pi)
            + scale.log()
            + (df + 1) / 2 * torch.log1p(z.square() / df)
        )

    def quantiles(self, y_hat_BHCO, levels):
        loc, scale, df = self.params(y_hat_BHCO)
        q = torch.as_tensor(levels, dtype=loc.dtype, device=loc.device)
        t = student_t_icdf(q, df.unsqueeze(-1))
        return loc.unsqueeze(-1) + scale.unsqueeze(-1) * t


def student_t_icdf(p: torch.Tensor, df: torch.Tensor) -> torch.Tensor:
    """Quantile function of Student's t for real df > 0 (broadcasting p against df).

    Hill's approximation (G. W. Hill, "Algorithm 396: Student's t-quantiles", CACM 13(10),
    1970; R's qt() starts from it for non-integer df), with both of its branches evaluated
    and picked by torch.where (vectorised, no data-dependent Python). Exact for df = 1 and 2;
    against scipy's t.ppf the relative error is below 2e-3 for 2 < df < 2.5 and below 1e-4
    for df >= 2.5. torch has no inverse incomplete beta, hence the approximation.
    """
    p, df = torch.broadcast_tensors(p, df)
    dt = torch.float64  # the formula cancels terms; float64 keeps it accurate
    p64, n = p.to(dt), df.to(dt)
    two_tail = 2 * torch.minimum(p64, 1 - p64)  # P(|T| > t)
    sign = torch.where(p64 < 0.5, -1.0, 1.0).to(dt)

    a = 1 / (n - 0.5)
    b = 48 / (a * a)
    c = ((20700 * a / b - 98) * a - 16) * a + 96.36
    d = ((94.5 / (b + c) - 3) / b + 1) * torch.sqrt(a * math.pi / 2) * n
    y = (d * two_tail) ** (2 / n)
    # Branch 1 (y > 0.05 + a): an asymptotic inverse expansion around the normal quantile.
    x = torch.special.ndtri(two_tail * 0.5)
    c1 = torch.where(n < 5, c + 0.3 * (n - 4.5) * (x + 0.6), c)
    c1 = (((0.05 * d * x - 5) * x - 7) * x - 2) * x + b + c1
    y1 = (((((0.4 * x * x + 6.3) * x * x + 36) * x * x + 94.5) / c1 - x * x - 3) / b + 1) * x
    y1 = torch.expm1(a * y1 * y1)
    # Branch 2: the small-probability (tail) series.
    y2 = ((1 / (((n + 6) / (n * y) - 0.089 * d - 0.822) * (n + 2) * 3) + 0.5 / (n + 4)) * y - 1) * (
        n + 1
    ) / (n + 2) + 1 / y
    t = torch.sqrt(n * torch.where(y > 0.05 + a, y1, y2))
    # Closed forms for df = 1 (Cauchy) and df = 2.
    t1 = 1 / torch.tan(two_tail * math.pi / 2)
    t2 = torch.sqrt(2 / (two_tail * (2 - two_tail)) - 2)
    t = torch.where(n == 1, t1, torch.where(n == 2, t2, t))
    return (sign * t).to(p.dtype)


LOSSES: dict[str, type[Loss]] = {
    "mae": MAE,
    "mse": MSE,
    "huber": Huber,
    "quantile": QuantileLoss,
    "normal": NormalNLL,
    "studentt": StudentTNLL,
}


def build_loss(name: str, **kwargs) -> Loss:
    """Instantiate a loss by name: mae, mse, huber(delta), quantile(quantiles), normal,
    studentt (min_scale)."""
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}': use one of {', '.join(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as err:
        raise UserError(f"loss '{name}': {err}") from None
