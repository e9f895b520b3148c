"""Scalers: window statistics, per-series fits on train rows only, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsforge.data import scaling
from tsforge.data.splits import resolve
from tsforge.data.store import ColumnRoles, StoreWriter

SPLIT = {"kind": "ratio", "train": 0.6, "test": 0.2}


def make_store(path, n_series=7, seed=0):
    rng = np.random.default_rng(seed)
    roles = ColumnRoles(target=["a", "b"], hist_exog=["h"])
    with StoreWriter(path, roles=roles, freq="h", chunk_rows=50) as w:
        for i in range(n_series):
            n = int(rng.integers(1, 180))
            x = (rng.standard_normal((n, 3)) * (i + 1) + 10 * i).astype(np.float32)
            x[rng.random((n, 3)) < 0.1] = np.nan
            if i == 3:
                x[:, 1] = np.nan  # a channel with no observed value
            w.add_series(f"s{i}", 0, x)
        return w.commit(splits=SPLIT)


def masked(rng, shape, p_missing=0.2):
    y = rng.standard_normal(shape).astype(np.float32) * 3 + 5
    mask = (rng.random(shape) > p_missing).astype(np.float32)
    mask[0] = 0  # a window with no observed row
    return y * mask, mask


def test_window_standard_matches_masked_numpy():
    rng = np.random.default_rng(1)
    y, m = masked(rng, (16, 24, 2))
    loc, scale = scaling.window_stats(y, m, "standard")
    for b in range(1, 16):
        for c in range(2):
            obs = y[b, m[b, :, c] > 0, c]
            assert loc[b, 0, c] == pytest.approx(obs.mean(), rel=1e-5, abs=1e-5)
            assert scale[b, 0, c] == pytest.approx(obs.std(), rel=1e-4)
    assert np.all(loc[0] == 0) and np.all(scale[0] == 1)


def test_window_robust_matches_masked_numpy():
    rng = np.random.default_rng(2)
    y, m = masked(rng, (8, 31, 1))
    loc, scale = scaling.window_stats(y, m, "robust")
    for b in range(1, 8):
        obs = y[b, m[b, :, 0] > 0, 0]
        q25, q50, q75 = np.quantile(obs, [0.25, 0.5, 0.75])
        assert loc[b, 0, 0] == pytest.approx(q50, rel=1e-5)
        assert scale[b, 0, 0] == pytest.approx(q75 - q25, rel=1e-4)
    assert loc[0, 0, 0] == 0 and scale[0, 0, 0] == 1  # nothing observed


def test_constant_window_gets_unit_scale():
    y = np.full((2, 10, 1), 7.0, np.float32)
    loc, scale = scaling.window_stats(y, np.ones_like(y), "standard")
    assert np.all(loc == 7) and np.all(scale == 1)


@pytest.mark.parametrize("method", scaling.METHODS)
def test_round_trip(method):
    rng = np.random.default_rng(3)
    y, m = masked(rng, (6, 20, 3), p_missing=0.0)
    loc, scale = scaling.window_stats(y, m, method)
    z = scaling.apply(y.copy(), loc, scale, None)
    back = scaling.inverse(torch.from_numpy(z), torch.from_numpy(loc), torch.from_numpy(scale))
    np.testing.assert_allclose(back.numpy(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_fit_series_uses_train_rows_only(tmp_path, method, monkeypatch):
    if method == "robust":
        monkeypatch.setattr(scaling, "ROBUST_MAX_ROWS", 40)  # exercise the subsampled path
    store = make_store(tmp_path / "s.zarr")
    _, train_hi = resolve(SPLIT, store.lengths, "train")
    loc, scale = scaling.fit_series(store, train_hi, [0, 1], method)
    assert loc.shape == scale.shape == (store.n_series, 2)
    for s in range(store.n_series):
        rows = store.series_values(s)[: train_hi[s], :2].astype(np.float64)
        step = max(1, -(-len(rows) // 40)) if method == "robust" else 1
        rows = rows[::step]
        for c in range(2):
            obs = rows[np.isfinite(rows[:, c]), c]
            if not len(obs):
                assert loc[s, c] == 0 and scale[s, c] == 1
                continue
            if method == "standard":
                want_loc, want_scale = obs.mean(), obs.std()
            else:
                q25, want_loc, q75 = np.quantile(obs, [0.25, 0.5, 0.75])
                want_scale = q75 - q25
            assert loc[s, c] == pytest.approx(want_loc, rel=1e-5, abs=1e-5)
            if want_scale > 1e-6 * max(abs(want_loc), 1e-6):
                assert scale[s, c] == pytest.approx(want_scale, rel=1e-4)
            else:
                assert scale[s, c] == 1


def test_fit_series_none(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_series=2)
    loc, scale = scaling.fit_series(store, np.array([5, 5]), [0], "none")
    assert np.all(loc == 0) and np.all(scale == 1)
