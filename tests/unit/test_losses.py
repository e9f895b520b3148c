"""Losses against hand-computed values, masking, output mapping and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from tsforge.errors import UserError
from tsforge.losses import LOSSES, build_loss, masked_mean, student_t_icdf


def bhco(values, n_outputs=1):
    """A [1, H, 1, O] forecast from a flat list of H * O values."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, n_outputs)


def bhc(values):
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1)


Y = bhc([1.0, 2.0, 3.0, 4.0])
Y_HAT = bhco([1.5, 2.0, 0.0, 4.0])  # errors 0.5, 0, 3, 0


def test_point_losses_by_hand():
    assert build_loss("mae")(Y_HAT, Y).item() == pytest.approx((0.5 + 3) / 4)
    assert build_loss("mse")(Y_HAT, Y).item() == pytest.approx((0.25 + 9) / 4)
    # Huber(1): 0.5 e^2 inside, |e| - 0.5 outside.
    assert build_loss("huber", delta=1.0)(Y_HAT, Y).item() == pytest.approx((0.125 + 2.5) / 4)
    # Huber(2): 0.5 * 0.25 and 2 * (3 - 1).
    assert build_loss("huber", delta=2.0)(Y_HAT, Y).item() == pytest.approx((0.125 + 4.0) / 4)


def test_masked_points_do_not_count():
    mask = bhc([1.0, 1.0, 0.0, 1.0])
    garbage = Y_HAT.clone()
    garbage[0, 2, 0, 0] = 1e6
    for name in ("mae", "mse", "huber"):
        loss = build_loss(name)
        expected = loss(Y_HAT[:, [0, 1, 3]], Y[:, [0, 1, 3]])
        assert loss(Y_HAT, Y, mask).item() == pytest.approx(expected.item())
        assert loss(garbage, Y, mask).item() == pytest.approx(expected.item())
    q = build_loss("quantile", quantiles=[0.1, 0.5, 0.9])
    y_hat_q = torch.randn(1, 4, 1, 3)
    expected = q(y_hat_q[:, [0, 1, 3]], Y[:, [0, 1, 3]])
    y_hat_q[0, 2] = 1e6
    assert q(y_hat_q, Y, mask).item() == pytest.approx(expected.item())


def test_fully_masked_batch_gives_zero_not_nan():
    for name in LOSSES:
        loss = build_loss(name)
        y_hat = torch.randn(2, 3, 1, loss.n_outputs, requires_grad=True)
        value = loss(y_hat, torch.randn(2, 3, 1), torch.zeros(2, 3, 1))
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(y_hat.grad).all()


def test_masked_mean_weights():
    values = torch.tensor([1.0, 2.0, 3.0])
    assert masked_mean(values, None).item() == pytest.approx(2.0)
    assert masked_mean(values, torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(2.0)
    assert masked_mean(values, torch.tensor([True, True, False])).item() == pytest.approx(1.5)


def test_pinball_by_hand():
    loss = build_loss("quantile", quantiles=[0.1, 0.5, 0.9])
    # y = 1, forecasts 0, 1, 3: e = 1, 0, -2 -> 0.1 * 1, 0, 0.1 * 2; mean over levels 0.1.
    assert loss(bhco([0.0, 1.0, 3.0], 3), bhc([1.0])).item() == pytest.approx(0.1)
    # y = 5 above all: 0.1 * 5 + 0.5 * 4 + 0.9 * 2 = 4.3, / 3.
    assert loss(bhco([0.0, 1.0, 3.0], 3), bhc([5.0])).item() == pytest.approx(4.3 / 3)
    # A one-level quantile loss at 0.5 is half the MAE.
    half = build_loss("quantile", quantiles=[0.5])
    assert half(Y_HAT, Y).item() == pytest.approx(build_loss("mae")(Y_HAT, Y).item() / 2)


def test_quantile_outputs_interpolate_and_sort():
    loss = build_loss("quantile", quantiles=[0.9, 0.1, 0.5])  # kept sorted
    assert loss.levels == (0.1, 0.5, 0.9) and loss.n_outputs == 3
    y_hat = bhco([1.0, 2.0, 4.0], 3)
    q = loss.quantiles(y_hat, [0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95])
    torch.testing.assert_close(q.flatten(), torch.tensor([1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.0]))
    assert loss.point(y_hat).item() == 2.0
    # Crossed outputs are rearranged, so quantiles stay monotone.
    crossed = bhco([4.0, 2.0, 1.0], 3)
    ends = loss.quantiles(crossed, [0.1, 0.9]).flatten()
    torch.testing.assert_close(ends, torch.tensor([1.0, 4.0]))


def test_normal_nll_matches_torch_distributions():
    loss = build_loss("normal")
    raw = torch.randn(2, 5, 3, 2)
    y = torch.randn(2, 5, 3)
    dist = torch.distributions.Normal(raw[..., 0], torch.nn.functional.softplus(raw[..., 1]) + 1e-6)
    assert loss(raw, y).item() == pytest.approx(-dist.log_prob(y).mean().item(), rel=1e-5)
    torch.testing.assert_close(loss.point(raw), raw[..., 0])
    levels = [0.1, 0.5, 0.9]
    expected = torch.stack([dist.icdf(torch.tensor(p)) for p in levels], dim=-1)
    torch.testing.assert_close(loss.quantiles(raw, levels), expected)


def test_normal_nll_by_hand():
    # loc 0, raw scale s.t. softplus = 1: NLL(y=1) = 0.5 + 0.5 log(2 pi).
    raw_scale = math.log(math.e - 1) - 1e-6
    y_hat = bhco([0.0, raw_scale], 2)
    value = build_loss("normal")(y_hat, bhc([1.0])).item()
    assert value == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi), rel=1e-5)


def test_student_t_nll_matches_torch_distributions():
    loss = build_loss("studentt")
    raw = torch.randn(2, 5, 3, 3)
    y = 3 * torch.randn(2, 5, 3)
    sp = torch.nn.functional.softplus
    dist = torch.distributions.StudentT(sp(raw[..., 2]) + 2, raw[..., 0], sp(raw[..., 1]) + 1e-6)
    assert loss(raw, y).item() == pytest.approx(-dist.log_prob(y).mean().item(), rel=1e-5)
    torch.testing.assert_close(loss.point(raw), raw[..., 0])


def test_student_t_quantiles():
    from scipy import stats
    p = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99], dtype=torch.float64)
    for df in (1.0, 2.0, 2.5, 3.0, 5.0, 30.0):
        got = student_t_icdf(p, torch.tensor(df, dtype=torch.float64)).numpy()
        ref = stats.t.ppf(p.numpy(), df)
        assert abs(got - ref).max() <= 1e-4 * max(1.0, abs(ref).max()), df
    loss = build_loss("studentt")
    raw = torch.tensor([[[[1.0, 0.5, 0.3]]]])
    q = loss.quantiles(raw, [0.5, 0.9])
    loc, scale, df = (v.item() for v in loss.params(raw))
    assert q[..., 0].item() == pytest.approx(loc)
    assert q[..., 1].item() == pytest.approx(loc + scale * stats.t.ppf(0.9, df), rel=1e-4)


def test_losses_have_gradients_and_declare_outputs():
    expected = {"mae": 1, "mse": 1, "huber": 1, "quantile": 3, "normal": 2, "studentt": 3}
    for name, n_outputs in expected.items():
        loss = build_loss(name)
        assert loss.n_outputs == n_outputs
        assert loss.is_probabilistic == (name in ("quantile", "normal", "studentt"))
        y_hat = torch.randn(2, 4, 2, n_outputs, requires_grad=True)
        loss(y_hat, torch.randn(2, 4, 2), torch.ones(2, 4, 2)).backward()
        assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
        assert loss.point(y_hat).shape == (2, 4, 2)


def test_errors_say_what_to_fix():
    with pytest.raises(UserError, match="unknown loss 'l1'"):
        build_loss("l1")
    with pytest.raises(UserError, match="quantiles must be"):
        build_loss("quantile", quantiles=[0.5, 1.2])
    with pytest.raises(UserError, match="loss 'mae'"):
        build_loss("mae", delta=1.0)
    with pytest.raises(UserError, match="build the model with the loss's n_outputs"):
        build_loss("quantile")(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1))
    with pytest.raises(UserError, match="point loss"):
        build_loss("mse").quantiles(torch.zeros(1, 2, 1, 1), [0.5])
