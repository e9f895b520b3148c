"""Models: output shapes, covariates, channel independence, architecture details, overfitting
a tiny batch, determinism and torch.compile-friendliness. Small shapes, CPU, a few seconds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError
from tsforge.models import MODELS, build_model
from tsforge.models.dlinear import moving_average
from tsforge.models.nhits import interpolation_matrix

B, L, H = 4, 32, 8

# Reduced widths so every test stays fast; defaults are exercised by construction tests.
SMALL = {
    "nhits": dict(mlp_units=[[32, 32]] * 2),
    "nbeats": dict(mlp_units=[[32, 32]] * 2),
    "dlinear": dict(),
    "patchtst": dict(patch_len=8, stride=4, d_model=16, n_heads=4, d_ff=32),
    "patch_decoder": dict(patch_len=8, output_patch_len=16, d_model=16, n_heads=2, n_layers=2,
                          d_ff=32),  # fmt: skip
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(n_channels=1, hist=0, futr=0, stat=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        insample_y=torch.randn(B, L, n_channels, generator=g),
        insample_mask=torch.ones(B, L, n_channels),
        hist_exog=torch.randn(B, L, hist, generator=g) if hist else None,
        futr_exog=torch.randn(B, L + H, futr, generator=g) if futr else None,
        stat_exog=torch.randn(B, stat, generator=g) if stat else None,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n_channels", [1, 3])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_output_shape(name, n_channels, n_outputs):
    model = build_model(
        name, input_size=L, horizon=H, n_channels=n_channels, n_outputs=n_outputs, **SMALL[name]
    )
    batch = make_batch(n_channels)
    assert model(**batch).shape == (B, H, n_channels, n_outputs)
    batch["insample_mask"] = None
    assert model(**batch).shape == (B, H, n_channels, n_outputs)


@pytest.mark.parametrize("exog", [(2, 0, 0), (0, 3, 0), (0, 0, 4), (2, 3, 4)])
@pytest.mark.parametrize("n_channels", [1, 2])
def test_nhits_with_covariates(exog, n_channels):
    hist, futr, stat = exog
    model = build_model(
        "nhits", input_size=L, horizon=H, n_channels=n_channels, n_outputs=2,
        hist_exog_size=hist, futr_exog_size=futr, stat_exog_size=stat, **SMALL["nhits"],
    )
    batch = make_batch(n_channels, hist, futr, stat)
    y = model(**batch)
    assert y.shape == (B, H, n_channels, 2)
    # The covariates reach the forecast.
    for key in ("hist_exog", "futr_exog", "stat_exog"):
        if batch[key] is not None:
            changed = dict(batch, **{key: batch[key] + 1.0})
            assert not torch.allclose(model(**changed), y)


def test_models_without_covariates_accept_and_ignore_them_in_forward():
    batch = make_batch(1, hist=2, futr=2, stat=2)
    for name in ("nbeats", "dlinear", "patchtst", "patch_decoder"):
        assert not MODELS[name].supports_exog
        model = build_model(name, input_size=L, horizon=H, **SMALL[name]).eval()
        plain = dict(batch, hist_exog=None, futr_exog=None, stat_exog=None)
        torch.testing.assert_close(model(**batch), model(**plain))


def test_build_model_validates_name_exog_and_keywords():
    with pytest.raises(UserError, match="unknown model 'nope'"):
        build_model("nope", input_size=L, horizon=H)
    with pytest.raises(UserError, match="takes no covariates"):
        build_model("dlinear", input_size=L, horizon=H, hist_exog_size=2)
    with pytest.raises(UserError, match="no argument d_modle"):
        build_model("patchtst", input_size=L, horizon=H, d_modle=8)
    # Zero covariate sizes are accepted by every model.
    for name in MODELS:
        build_model(name, input_size=L, horizon=H, hist_exog_size=0, **SMALL[name])
    assert all(not cls.multivariate for cls in MODELS.values())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_channels_are_independent_and_share_weights(name):
    torch.manual_seed(0)
    model = build_model(name, input_size=L, horizon=H, n_channels=2, **SMALL[name]).eval()
    x = torch.randn(B, L, 2)
    y = model(x)
    for c in range(2):
        # Feeding the other channel anything does not change this channel's forecast.
        other = x.clone()
        other[..., 1 - c] = torch.randn(B, L)
        torch.testing.assert_close(model(other)[:, :, c], y[:, :, c])
    # Shared weights: the same series in both channels gives the same forecast.
    same = x[..., :1].expand(B, L, 2).contiguous()
    y_same = model(same)
    torch.testing.assert_close(y_same[:, :, 0], y_same[:, :, 1])


def test_nhits_default_is_neuralforecasts_architecture():
    model = build_model("nhits", input_size=480, horizon=96)
    assert len(model.blocks) == 3

    def block_params(pool, n_knots):
        n_in, theta = math.ceil(480 / pool), 480 + n_knots
        return (n_in * 512 + 512) + 3 * (512 * 512 + 512) + (512 * theta + theta)

    expected = block_params(2, 96 // 4) + block_params(2, 96 // 2) + block_params(1, 96)
    assert sum(p.numel() for p in model.parameters()) == expected
    block = model.blocks[0]
    assert isinstance(block.pool, nn.MaxPool1d) and block.pool.ceil_mode
    kinds = [type(m).__name__ for m in block.mlp]
    assert kinds == ["Linear", "Linear", "ReLU", "Linear", "ReLU", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("n_knots,horizon", [(1, 5), (3, 7), (24, 96), (48, 96)])
def test_nhits_interpolation_matrix_matches_f_interpolate(n_knots, horizon):
    knots = torch.randn(5, 2, n_knots)
    for mode in ("linear", "nearest"):
        expected = F.interpolate(knots, size=horizon, mode=mode)
        torch.testing.assert_close(knots @ interpolation_matrix(n_knots, horizon, mode), expected)


def test_nhits_and_nbeats_level_with_the_last_value():
    # With the final layers zeroed every block outputs 0: the forecast is the naive one.
    for name in ("nhits", "nbeats"):
        model = build_model(name, input_size=L, horizon=H, n_outputs=2, **SMALL[name])
        with torch.no_grad():
            for block in model.blocks:
                block.mlp[-1].weight.zero_()
                block.mlp[-1].bias.zero_()
        x = torch.randn(B, L, 1)
        torch.testing.assert_close(model(x), x[:, -1:, :, None].expand(B, H, 1, 2))


def test_nbeats_interpretable_trend_is_a_polynomial():
    model = build_model(
        "nbeats", input_size=L, horizon=H, stack_types=["trend"], n_blocks=[1],
        n_polynomials=2, mlp_units=[[16, 16]],
    )
    y = model(torch.randn(B, L, 1))[:, :, 0, 0]
    # A degree-2 polynomial in t has zero third differences.
    torch.testing.assert_close(y.diff(n=3, dim=1), torch.zeros(B, H - 3), atol=1e-4, rtol=0)


def test_nbeats_shared_weights_share_parameters():
    kw = dict(input_size=L, horizon=H, stack_types=["trend", "seasonality"], mlp_units=[[16, 16]])
    shared = build_model("nbeats", n_blocks=[3, 3], shared_weights=True, **kw)
    single = build_model("nbeats", n_blocks=[1, 1], **kw)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert len(shared.blocks) == 6 and count(shared) == count(single)
    with pytest.raises(UserError, match="stack type 'fourier'"):
        build_model("nbeats", **dict(kw, stack_types=["fourier"], n_blocks=[1]))


def test_dlinear_moving_average_matches_the_papers_code():
    x = torch.randn(B, L, 3)
    k = 25
    front = x[:, :1].repeat(1, (k - 1) // 2, 1)
    end = x[:, -1:].repeat(1, (k - 1) // 2, 1)
    padded = torch.cat([front, x, end], dim=1)
    expected = nn.AvgPool1d(k, stride=1)(padded.permute(0, 2, 1)).permute(0, 2, 1)
    torch.testing.assert_close(moving_average(x, k), expected)
    with pytest.raises(UserError, match="odd"):
        build_model("dlinear", input_size=L, horizon=H, moving_avg_window=4)


def test_dlinear_individual_has_weights_per_channel():
    model = build_model("dlinear", input_size=L, horizon=H, n_channels=3, individual=True)
    assert model.linear_seasonal.weight_CLF.shape == (3, L, H)
    x = torch.randn(B, L, 1).expand(B, L, 3).contiguous()
    y = model(x)
    assert not torch.allclose(y[:, :, 0], y[:, :, 1])


def test_dlinear_revin_makes_forecasts_shift_and_scale_equivariant():
    plain = build_model("dlinear", input_size=L, horizon=H).eval()
    assert plain.revin is None  # off by default, as in the paper
    model = build_model("dlinear", input_size=L, horizon=H, n_channels=2, revin=True).eval()
    x = torch.randn(B, L, 2)
    torch.testing.assert_close(model(3 * x + 5), 3 * model(x) + 5, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain(3 * x + 5), 3 * plain(x) + 5, atol=1e-2)


def test_patchtst_defaults_are_patchtst64():
    model = build_model("patchtst", input_size=512, horizon=96)
    assert model.n_patches == 64
    layer = model.layers[0]
    assert layer.n_heads == 16 and layer.qkv.in_features == 128 and layer.ff[0].out_features == 256
    assert len(model.layers) == 3 and model.revin is not None and layer.res_attention


def test_patchtst_revin_makes_forecasts_shift_and_scale_equivariant():
    model = build_model("patchtst", input_size=L, horizon=H, **SMALL["patchtst"]).eval()
    x = torch.randn(B, L, 1)
    torch.testing.assert_close(model(3 * x + 5), 3 * model(x) + 5, atol=1e-4, rtol=1e-4)


def sine_batch(n=16, length=48, horizon=12):
    g = torch.Generator().manual_seed(0)
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    period = 8 + 8 * torch.rand(n, 1, 1, generator=g)
    t = torch.arange(length + horizon, dtype=torch.float32)[None, :, None]
    y = torch.sin(2 * math.pi * t / period + phase)
    return y[:, :length], y[:, length:]


OVERFIT = {
    **SMALL,
    "nbeats": dict(
        stack_types=["trend", "seasonality"], n_blocks=[2, 2], shared_weights=True,
        mlp_units=[[32, 32]] * 2,
    ),
    "patchtst": dict(SMALL["patchtst"], dropout=0.0),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    x, y = sine_batch()
    model = build_model(name, input_size=48, horizon=12, **OVERFIT[name])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = (model(x)[..., 0] - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deterministic_with_a_fixed_seed(name):
    def run():
        torch.manual_seed(123)
        model = build_model(name, input_size=L, horizon=H, n_outputs=2, **SMALL[name])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = make_batch(1)
        for _ in range(2):  # dropout masks come from the seeded generator too
            opt.zero_grad()
            model(**batch).square().mean().backward()
            opt.step()
        return model.eval()(**batch), model.state_dict()

    (y1, s1), (y2, s2) = run(), run()
    assert torch.equal(y1, y2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_compiles_as_one_graph(name):
    kw = dict(SMALL[name])
    if MODELS[name].supports_exog:
        kw.update(hist_exog_size=1, futr_exog_size=1, stat_exog_size=1)
    model = build_model(name, input_size=L, horizon=H, n_channels=2, **kw).eval()
    batch = make_batch(2, hist=1, futr=1, stat=1)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(**batch), model(**batch))


def test_patch_decoder_loads_weights_trained_at_another_horizon_and_input_size():
    torch.manual_seed(0)
    short = build_model("patch_decoder", input_size=L, horizon=H, n_channels=2, n_outputs=3,
                        **SMALL["patch_decoder"]).eval()  # fmt: skip
    for input_size, horizon in ((L, 40), (20, 5), (L + 3, 16)):  # rolled out, padded patches
        other = build_model("patch_decoder", input_size=input_size, horizon=horizon,
                            n_channels=2, n_outputs=3, **SMALL["patch_decoder"]).eval()  # fmt: skip
        other.load_state_dict(short.state_dict())  # strict: the same names and shapes
        x = torch.randn(B, input_size, 2)
        assert other(x).shape == (B, horizon, 2, 3)
    # The first output patch is the short model's forecast; the rest is rolled out from it.
    x = torch.randn(B, L, 2)
    torch.testing.assert_close(other_long(short, 40)(x)[:, :H], short(x))


def other_long(short: nn.Module, horizon: int, **kw) -> nn.Module:
    model = build_model("patch_decoder", input_size=L, horizon=horizon, n_channels=2, n_outputs=3,
                        **{**SMALL["patch_decoder"], **kw}).eval()  # fmt: skip
    model.load_state_dict(short.state_dict())
    return model


def test_patch_decoder_rolls_out_the_chosen_output():
    torch.manual_seed(0)
    short = build_model("patch_decoder", input_size=L, horizon=16, n_channels=2, n_outputs=3,
                        **SMALL["patch_decoder"]).eval()  # fmt: skip
    x = torch.randn(B, L, 2)
    median, low = other_long(short, 40)(x), other_long(short, 40, rollout_output=0)(x)
    torch.testing.assert_close(median[:, :16], low[:, :16])  # the first patch: no feedback
    assert not torch.allclose(median[:, 16:], low[:, 16:])  # later patches follow the input fed
    with pytest.raises(UserError, match="rollout_output"):
        other_long(short, 40, rollout_output=3)
    with pytest.raises(UserError, match="multiple of patch_len"):
        build_model("patch_decoder", input_size=L, horizon=H, patch_len=8, output_patch_len=12)
    for bad in (dict(n_heads=0), dict(n_layers=0), dict(d_model=10, n_heads=4),
                dict(d_model=9, n_heads=3), dict(dropout=1.0)):  # fmt: skip
        with pytest.raises(UserError, match="patch_decoder"):
            build_model("patch_decoder", input_size=L, horizon=H, **bad)


def test_patch_decoder_normalises_each_window_ignoring_masked_steps():
    torch.manual_seed(0)
    model = build_model("patch_decoder", input_size=L, horizon=40, **SMALL["patch_decoder"]).eval()
    x = torch.randn(B, L, 1)
    torch.testing.assert_close(model(3 * x + 5), 3 * model(x) + 5, atol=1e-4, rtol=1e-4)
    mask = torch.ones(B, L, 1)
    mask[:, 5] = 0.0
    spiked = x.clone()
    spiked[:, 5] = 1e6  # a missing value's content reaches nothing
    torch.testing.assert_close(model(spiked, mask), model(x, mask))


SIZES = {"patch_decoder": 1e6, "patch_decoder_small": 1e7, "patch_decoder_base": 1e8,
         "patch_decoder_large": 1e9}  # fmt: skip


@pytest.mark.parametrize("config", sorted(SIZES))
def test_patch_decoder_sizes_match_their_names(config):
    """Built on the meta device: shapes only, so the 1B model costs nothing."""
    from omegaconf import OmegaConf

    from tsforge.config import CONF_DIR

    kwargs = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / f"{config}.yaml"))
    kwargs.pop("defaults")
    for n_outputs in (1, 9):  # a point loss, nine quantile levels
        with torch.device("meta"):
            model = build_model("patch_decoder", input_size=512, horizon=96, n_outputs=n_outputs,
                                **kwargs)  # fmt: skip
        n_params = sum(p.numel() for p in model.parameters())
        assert 0.7 * SIZES[config] <= n_params <= 1.3 * SIZES[config], (n_outputs, n_params)
