"""Metrics by hand, masking, exact accumulation across "ranks", and the M4 Naive2 baseline
against a literal transcription of the R benchmark code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsforge.errors import UserError
from tsforge.metrics import (
    MetricAccumulator,
    coverage,
    evaluate,
    naive2,
    naive2_batch,
    owa,
    scaled_crps,
    seasonal_indices,
    seasonal_naive,
    seasonal_naive_scale,
    seasonality_test,
)


def bhc(values):
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1)


# ------------------------------------------------------------------------- by hand
def test_point_metrics_by_hand():
    y, y_hat = bhc([2.0, 4.0, 1.0, 5.0]), bhc([1.0, 4.0, 3.0, 5.0])  # errors 1, 0, 2, 0
    m = evaluate(y_hat, y)
    assert m["mae"] == pytest.approx(0.75)
    assert m["mse"] == pytest.approx(1.25)
    assert m["rmse"] == pytest.approx(math.sqrt(1.25))
    # sMAPE terms: 200 * 1 / 3, 0, 200 * 2 / 4, 0.
    assert m["smape"] == pytest.approx((200 / 3 + 100) / 4)
    assert math.isnan(m["mase"])  # no scale given


def test_smape_of_zero_against_zero_is_zero():
    assert evaluate(bhc([0.0, 1.0]), bhc([0.0, 1.0]))["smape"] == 0.0


def test_mase_by_hand():
    insample = bhc([1.0, 3.0, 3.0, 5.0, 5.0, 7.0])  # |y_t - y_{t-2}| = 2, 2, 2, 2
    scale = seasonal_naive_scale(insample, None, season=2)
    assert scale.item() == pytest.approx(2.0)
    y, y_hat = bhc([7.0, 9.0]), bhc([5.0, 8.0])  # errors 2, 1
    assert evaluate(y_hat, y, mase_scale_BC=scale)["mase"] == pytest.approx(0.75)
    # The seasonal naive forecast of that history: its last season repeated.
    naive = seasonal_naive(insample, horizon=5, season=2)
    torch.testing.assert_close(naive.flatten(), torch.tensor([5.0, 7.0, 5.0, 7.0, 5.0]).double())


def test_seasonal_naive_scale_uses_only_observed_pairs():
    x = bhc([1.0, 100.0, 2.0, 4.0, 7.0])
    mask = bhc([1.0, 0.0, 1.0, 1.0, 1.0])  # step 1 is missing: pairs (2,1) and (1,0) drop
    assert seasonal_naive_scale(x, mask, 1).item() == pytest.approx((2 + 3) / 2)
    assert math.isnan(seasonal_naive_scale(bhc([1.0, 2.0]), bhc([1.0, 0.0]), 1).item())


def test_windows_without_a_usable_scale_are_left_out_of_mase():
    y, y_hat = torch.ones(2, 3, 1).double(), torch.zeros(2, 3, 1).double()
    scale = torch.tensor([[2.0], [0.0]]).double()  # the second window's history is constant
    assert evaluate(y_hat, y, mase_scale_BC=scale)["mase"] == pytest.approx(0.5)


def test_owa_by_hand():
    assert owa(smape=10.0, mase=1.0, smape_naive2=20.0, mase_naive2=2.0) == pytest.approx(0.5)
    assert owa(12.0, 3.0, 12.0, 3.0) == pytest.approx(1.0)
    assert owa(smape=6.0, mase=3.0, smape_naive2=12.0, mase_naive2=2.0) == pytest.approx(1.0)


def test_coverage_of_known_intervals():
    y = bhc([0.0, 1.0, 2.0, 3.0, 4.0])
    lo, hi = bhc([0.0, 0.0, 2.5, 0.0, 5.0]), bhc([1.0, 0.5, 3.0, 3.0, 6.0])
    assert coverage(lo, hi, y) == pytest.approx(2 / 5)  # inclusive bounds: 0 and 3 are in
    assert coverage(lo, hi, y, bhc([1.0, 0.0, 0.0, 1.0, 1.0])) == pytest.approx(2 / 3)
    # Through the accumulator: 0.8 -> the 0.1 and 0.9 columns.
    acc = MetricAccumulator(coverage=(0.8,))
    assert acc.quantile_levels == (0.1, 0.9)
    acc.update(y, y, quantiles_BHCQ=torch.stack([lo, hi], dim=-1))
    assert acc.compute()["coverage_80"] == pytest.approx(2 / 5)


def test_scaled_crps_of_a_perfect_forecast_is_zero():
    y = torch.rand(3, 4, 2).double() + 1
    levels = [0.1, 0.5, 0.9]
    perfect = y.unsqueeze(-1).expand(3, 4, 2, 3)
    assert scaled_crps(perfect, y, levels) == 0.0


def test_scaled_crps_matches_neuralforecasts_formula():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(3, 4, 2, generator=g).double() + 1
    levels = np.array([0.1, 0.5, 0.9])
    q = (y.unsqueeze(-1) + torch.randn(3, 4, 2, 3, generator=g).double()).sort(-1).values
    # neuralforecast.losses.numpy: mqloss is the mean pinball over points and levels;
    # scaled_crps = 2 * mqloss * n_points / sum |y|.
    err = y.numpy()[..., None] - q.numpy()
    mqloss = np.maximum(levels * err, (levels - 1) * err).mean()
    expected = 2 * mqloss * y.numel() / np.abs(y.numpy()).sum()
    assert scaled_crps(q, y, list(levels)) == pytest.approx(expected, rel=1e-12)
    # Levels given out of order give the same value once the columns follow them.
    assert scaled_crps(q[..., [2, 0, 1]], y, [0.9, 0.1, 0.5]) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------- masking
def test_masked_points_do_not_affect_metrics():
    g = torch.Generator().manual_seed(1)
    y = torch.rand(4, 6, 2, generator=g).double() + 0.5
    y_hat = y + 0.3 * torch.randn(4, 6, 2, generator=g).double()
    q = torch.stack([y_hat - 1, y_hat, y_hat + 1], dim=-1)
    scale = torch.rand(4, 2, generator=g).double() + 0.5
    mask = (torch.rand(4, 6, 2, generator=g) > 0.3).double()

    def run(y, y_hat, q, mask):
        acc = MetricAccumulator(quantiles=(0.1, 0.5, 0.9), coverage=(0.8,))
        acc.update(y_hat, y, mask, mase_scale_BC=scale, quantiles_BHCQ=q)
        return acc.compute()

    clean = run(y, y_hat, q, mask)
    dirty = mask == 0
    y2, y_hat2, q2 = y.clone(), y_hat.clone(), q.clone()
    y2[dirty], y_hat2[dirty], q2[dirty] = math.nan, 1e9, -math.inf
    assert run(y2, y_hat2, q2, mask) == clean
    # And they equal the metrics of the observed points alone.
    obs = mask.bool()
    flat = lambda t: t[obs].view(1, -1, 1)  # noqa: E731
    b_idx = torch.arange(4)[:, None, None].expand(4, 6, 2)[obs]
    c_idx = torch.arange(2)[None, None, :].expand(4, 6, 2)[obs]
    acc = MetricAccumulator(quantiles=(0.1, 0.5, 0.9), coverage=(0.8,))
    per_point_scale = scale[b_idx, c_idx].view(1, -1)  # one "window" per point, H = 1
    acc.update(
        y_hat[obs].view(-1, 1, 1), y[obs].view(-1, 1, 1), mase_scale_BC=per_point_scale.T,
        quantiles_BHCQ=q[obs].view(-1, 1, 1, 3),
    )
    for key, value in acc.compute().items():
        assert value == pytest.approx(clean[key], rel=1e-12), key
    assert flat(y).shape[1] == int(mask.sum())


# --------------------------------------------------------------- exact across ranks
def random_eval_batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 5, 2, generator=g).double() + 0.5
    y_hat = y + 0.2 * torch.randn(n, 5, 2, generator=g).double()
    q = torch.stack([y_hat - 0.3, y_hat, y_hat + 0.3], dim=-1)
    mask = (torch.rand(n, 5, 2, generator=g) > 0.2).double()
    scale = torch.rand(n, 2, generator=g).double() + 0.1
    return y_hat, y, mask, scale, q


def test_two_ranks_merged_equal_one_process():
    y_hat, y, mask, scale, q = random_eval_batch(0)
    kw = dict(quantiles=(0.1, 0.5, 0.9), coverage=(0.8,))

    def feed(acc, rows):
        acc.update(y_hat[rows], y[rows], mask[rows], mase_scale_BC=scale[rows],
                   quantiles_BHCQ=q[rows])
        return acc

    half_a, half_b = slice(0, 3), slice(3, 8)  # uneven halves, as the last batch may be
    rank0, rank1 = feed(MetricAccumulator(**kw), half_a), feed(MetricAccumulator(**kw), half_b)
    # A single process that saw the same batches: bit-for-bit the same sums.
    single = feed(feed(MetricAccumulator(**kw), half_a), half_b)
    merged = MetricAccumulator(**kw).merge(rank0).merge(rank1)
    assert torch.equal(merged.state(), single.state())
    assert merged.compute() == single.compute()
    # What an all_reduce does: sum the state tensors.
    reduced = MetricAccumulator(**kw)
    reduced.load_state(rank0.state() + rank1.state())
    assert reduced.compute() == single.compute()
    # One process seeing the whole batch at once: the same up to float64 addition order.
    whole = feed(MetricAccumulator(**kw), slice(0, 8))
    for key, value in whole.compute().items():
        assert value == pytest.approx(single.compute()[key], rel=1e-12, abs=1e-15), key


def test_not_an_average_of_averages():
    # Rank 0: one point with error 1; rank 1: three points with error 3. MAE is 2.5, not 2.
    a, b = MetricAccumulator(), MetricAccumulator()
    a.update(bhc([1.0]), bhc([0.0]))
    b.update(bhc([3.0, 3.0, 3.0]), bhc([0.0, 0.0, 0.0]))
    assert a.merge(b).compute()["mae"] == pytest.approx(2.5)


def test_accumulator_checks_its_inputs():
    with pytest.raises(UserError, match="different settings"):
        MetricAccumulator(quantiles=(0.5,)).merge(MetricAccumulator())
    with pytest.raises(UserError, match="pass quantiles_BHCQ"):
        MetricAccumulator(quantiles=(0.5,)).update(bhc([1.0]), bhc([1.0]))
    with pytest.raises(UserError, match="expected"):
        MetricAccumulator().load_state(torch.zeros(3))
    acc = MetricAccumulator()
    acc.update(bhc([1.0]), bhc([0.0]))
    acc.reset()
    assert math.isnan(acc.compute()["mae"])


# ------------------------------------------------------------------------- Naive2
def r_decompose_seasonal(x, f):
    """R's decompose(type = "multiplicative")$seasonal, transcribed loop by loop."""
    n = len(x)
    filt = ([0.5] + [1.0] * (f - 1) + [0.5]) if f % 2 == 0 else [1.0] * f
    filt = [w / f for w in filt]
    k, o = len(filt), len(filt) // 2
    trend = [math.nan] * n
    for i in range(n):  # stats::filter(sides = 2): y[i] = sum_j filt[j] x[i + o - j]
        if i - o >= 0 and i + o - (k - 1) >= 0 and i + o < n:
            trend[i] = sum(filt[j] * x[i + o - j] for j in range(k))
    season = [x[i] / trend[i] for i in range(n)]
    index = list(range(0, n, f))
    figure = []
    for i in range(f):
        vals = [season[j + i] for j in index if j + i < n and not math.isnan(season[j + i])]
        figure.append(sum(vals) / len(vals))
    mean = sum(figure) / f
    figure = [v / mean for v in figure]
    return [figure[t % f] for t in range(n)]


def r_seasonality_test(x, ppy):
    """SeasonalityTest from the M4 benchmark code, with R's acf written out."""
    n = len(x)
    if n < 3 * ppy:
        return False
    lag_max = min(int(math.floor(10 * math.log10(n))), n - 1)
    mean = sum(x) / n
    denom = sum((v - mean) ** 2 for v in x)
    xacf = [
        sum((x[t] - mean) * (x[t + k] - mean) for t in range(n - k)) / denom
        for k in range(1, lag_max + 1)
    ]
    if ppy > lag_max:
        return False  # xacf[ppy] is NA
    clim = [1.645 / math.sqrt(n) * math.sqrt(1 + 2 * sum(a * a for a in xacf[:j]))
            for j in range(lag_max + 1)]
    return abs(xacf[ppy - 1]) > clim[ppy - 1]


def seasonal_series(n, m, seed, strength=0.3):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    pattern = 1 + strength * np.sin(2 * np.pi * np.arange(m) / m + rng.uniform(0, 6))
    return (50 + 0.1 * t) * pattern[t % m] * (1 + 0.02 * rng.standard_normal(n))


@pytest.mark.parametrize("m,n", [(4, 23), (7, 40), (12, 61), (24, 300)])
def test_deseasonalisation_matches_the_r_code(m, n):
    y = seasonal_series(n, m, seed=m)
    np.testing.assert_allclose(seasonal_indices(y, m), r_decompose_seasonal(list(y), m), rtol=1e-12)


def test_seasonality_test_matches_the_r_code():
    rng = np.random.default_rng(0)
    cases = [(seasonal_series(n, m, seed=n), m) for m, n in [(4, 30), (12, 48), (24, 260)]]
    cases += [(rng.standard_normal(n) + 10, m) for m, n in [(4, 40), (7, 50), (12, 100)] * 3]
    cases += [(seasonal_series(11, 4, seed=1), 4), (seasonal_series(72, 24, seed=2), 24)]
    outcomes = set()
    for y, m in cases:
        expected = r_seasonality_test(list(y), m)
        assert seasonality_test(y, m) == expected, (len(y), m)
        outcomes.add(expected)
    assert outcomes == {True, False}
    # Shorter than 3 seasons, or m beyond R's acf lag.max (n = 72: 18 < 24): not seasonal.
    assert not seasonality_test(seasonal_series(11, 4, seed=1), 4)
    assert not seasonality_test(seasonal_series(72, 24, seed=2), 24)


def test_naive2_of_a_purely_multiplicative_series():
    s = np.array([0.8, 1.2, 0.9, 1.1])  # mean 1
    y = 10 * s[np.arange(26) % 4]
    assert seasonality_test(y, 4)
    np.testing.assert_allclose(seasonal_indices(y, 4), s[np.arange(26) % 4])
    expected = 10 * s[(26 + np.arange(6)) % 4]  # the cycle continues after the last step
    np.testing.assert_allclose(naive2(y, horizon=6, season=4), expected)


def test_naive2_without_seasonality_is_the_naive_forecast():
    y = np.random.default_rng(3).standard_normal(40) + 5
    assert not seasonality_test(y, 4)
    np.testing.assert_array_equal(naive2(y, 5, 4), np.full(5, y[-1]))
    np.testing.assert_array_equal(naive2(y, 3, 1), np.full(3, y[-1]))


def test_naive2_batch_reads_the_observed_part_of_each_window():
    a, b = seasonal_series(40, 4, seed=5), seasonal_series(32, 4, seed=6)
    x = torch.zeros(2, 40, 1, dtype=torch.float64)
    mask = torch.zeros(2, 40, 1, dtype=torch.float64)
    x[0, :, 0], mask[0] = torch.from_numpy(a), 1.0
    x[1, 8:, 0], mask[1, 8:] = torch.from_numpy(b), 1.0  # left-padded shorter series
    out = naive2_batch(x, mask, horizon=6, season=4)
    np.testing.assert_allclose(out[0, :, 0].numpy(), naive2(a, 6, 4))
    np.testing.assert_allclose(out[1, :, 0].numpy(), naive2(b, 6, 4))


def test_owa_of_naive2_against_itself_is_one():
    ys = [seasonal_series(60, 4, seed=k) for k in range(3)]
    history = torch.tensor(np.stack([y[:52] for y in ys]))[..., None]
    truth = torch.tensor(np.stack([y[52:] for y in ys]))[..., None]
    forecast = naive2_batch(history, None, horizon=8, season=4)
    m = evaluate(forecast, truth, mase_scale_BC=seasonal_naive_scale(history, None, 4))
    assert owa(m["smape"], m["mase"], m["smape"], m["mase"]) == pytest.approx(1.0)
    assert 0 < m["smape"] < 200 and m["mase"] > 0
