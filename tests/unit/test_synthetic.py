"""The synthetic generator: determinism, shapes, covariates, learnability, store and CSV output."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsforge.data import synthetic
from tsforge.data.store import Store
from tsforge.errors import UserError

SMALL = dict(n_series=12, min_length=50, max_length=120)


def _series(**kw):
    return list(synthetic.iter_series(**{**SMALL, **kw}))


def test_same_seed_gives_identical_series_and_other_seeds_differ():
    kw = dict(n_hist_exog=1, n_futr_exog=2, n_static=2, missing_rate=0.05)
    a, b, c = _series(seed=7, **kw), _series(seed=7, **kw), _series(seed=8, **kw)
    for x, y in zip(a, b):
        assert (x.uid, x.start) == (y.uid, y.start)
        np.testing.assert_array_equal(x.values_TC, y.values_TC)  # NaNs in the same places
        np.testing.assert_array_equal(x.static_S, y.static_S)
    assert any(
        len(x.values_TC) != len(z.values_TC) or not np.allclose(x.values_TC, z.values_TC)
        for x, z in zip(a, c)
    )


def test_first_series_do_not_depend_on_n_series_and_generation_is_lazy():
    few = _series(n_series=3)
    many = list(itertools.islice(synthetic.iter_series(**{**SMALL, "n_series": 10**9}), 3))
    for x, y in zip(few, many):
        np.testing.assert_array_equal(x.values_TC, y.values_TC)


def test_shapes_lengths_roles_and_ids():
    kw = dict(n_channels=2, n_hist_exog=1, n_futr_exog=3, n_static=3)
    roles = synthetic.column_roles(**SMALL, **kw)
    assert roles.target == ("y_0", "y_1") and roles.hist_exog == ("hist_0",)
    assert roles.futr_exog == ("hour_of_day", "day_of_week", "day_of_year")
    assert roles.static == ("log_level", "seasonal_strength", "static_0")
    series = _series(**kw)
    assert len({s.uid for s in series}) == len(series) == SMALL["n_series"]
    for s in series:
        assert 50 <= len(s.values_TC) <= 120
        assert s.values_TC.shape[1] == 6 and s.values_TC.dtype == np.float32
        assert s.static_S.shape == (3,) and np.isfinite(s.values_TC).all()
        assert s.start % (3600 * 10**9) == 0  # aligned to the step


def test_calendar_covariates_follow_the_timestamps_and_events_come_after_them():
    s = _series(n_futr_exog=2)[0]
    hours = (s.start // (3600 * 10**9) + np.arange(len(s.values_TC))) % 24
    np.testing.assert_allclose(s.values_TC[:, 1], hours / 23 - 0.5, atol=1e-6)
    weekly = synthetic.column_roles(n_series=1, freq="W", n_futr_exog=3).futr_exog
    assert weekly == ("day_of_year", "day_of_month", "event_0")
    flags = _series(freq="W", n_futr_exog=3, max_length=400)[0].values_TC[:, 3]
    assert set(np.unique(flags)) <= {0.0, 1.0}


def test_missing_values_only_in_observed_columns_near_the_rate():
    series = _series(n_series=40, n_hist_exog=1, n_futr_exog=1, missing_rate=0.1)
    values = np.concatenate([s.values_TC for s in series])
    rate = np.isnan(values[:, :2]).mean()
    assert 0.08 < rate < 0.12
    assert not np.isnan(values[:, 2]).any()  # the calendar is always known


def test_signal_is_well_above_the_noise():
    """A regression on trend and calendar harmonics explains most of each series."""
    r2 = []
    for s in synthetic.iter_series(n_series=16, seed=1, min_length=400, max_length=1200):
        y = s.values_TC[:, 0].astype(np.float64)
        tau = s.start + np.arange(len(y)) * 3600 * 10**9
        cols = [np.ones_like(y), np.arange(len(y)) / len(y)]
        for period, harmonics in ((86400e9, 3), (7 * 86400e9, 2)):
            angle = 2 * np.pi * np.mod(tau, period) / period
            for k in range(1, harmonics + 1):
                cols += [np.sin(k * angle), np.cos(k * angle)]
        X = np.stack(cols, 1)
        residual = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
        r2.append(1 - residual.var() / y.var())
    assert np.median(r2) > 0.9


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32), lo=st.integers(1, 60), extra=st.integers(0, 60),
    freq=st.sampled_from(["h", "15min", "D", "W", "30s"]), channels=st.integers(1, 3),
    futr=st.integers(0, 6), static=st.integers(0, 3), missing=st.sampled_from([0.0, 0.3]),
)  # fmt: skip
def test_any_valid_arguments_give_well_formed_reproducible_series(
    seed, lo, extra, freq, channels, futr, static, missing
):
    kw = dict(n_series=3, seed=seed, min_length=lo, max_length=lo + extra, freq=freq,
              n_channels=channels, n_hist_exog=1, n_futr_exog=futr, n_static=static,
              missing_rate=missing)  # fmt: skip
    roles = synthetic.column_roles(**kw)
    step, origin = synthetic.step_ns(freq), synthetic.SyntheticSpec(**kw).start_ns
    for s, again in zip(synthetic.iter_series(**kw), synthetic.iter_series(**kw)):
        assert lo <= len(s.values_TC) <= lo + extra and (s.start - origin) % step == 0
        assert s.values_TC.shape[1] == len(roles.value_columns) and len(s.static_S) == static
        np.testing.assert_array_equal(s.values_TC, again.values_TC)
        assert np.isfinite(s.values_TC[:, channels + 1 :]).all()  # future-known: no gaps
        assert np.isfinite(s.static_S).all()


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(n_series=0), "n_series"),
        (dict(n_series=1, min_length=10, max_length=5), "min_length"),
        (dict(n_series=1, freq="M"), "freq 'M'"),
        (dict(n_series=1, missing_rate=1.0), "missing_rate"),
        (dict(n_series=1, start="yesterday-ish"), "start"),
        (dict(n_series=1.5), "n_series must be an int, got 1.5"),
        (dict(n_series=2, n_seris=3), "no argument 'n_seris': use n_series, seed"),
    ],
)
def test_bad_arguments_are_user_errors(kw, fragment):
    with pytest.raises(UserError, match=fragment):
        synthetic.column_roles(**kw)


def test_arguments_from_a_config_file_are_coerced():
    spec = synthetic.SyntheticSpec(n_series="4", max_length=300.0, missing_rate="0.1")
    assert (spec.n_series, spec.max_length, spec.missing_rate) == (4, 300, 0.1)


def test_build_store_holds_the_generated_series(tmp_path):
    kw = dict(SMALL, n_futr_exog=1, n_static=1, seed=3, missing_rate=0.02)
    store = synthetic.build_store(tmp_path / "s.zarr", chunk_rows=256, **kw)
    assert isinstance(store, Store) and store.n_series == SMALL["n_series"]
    assert store.columns == ["y", "hour_of_day"] and store.roles.static == ("log_level",)
    assert store.freq == "h" and store.splits == {"kind": "ratio", "train": 0.7, "test": 0.2}
    assert store.attrs["source"]["name"] == "synthetic" and store.attrs["source"]["seed"] == 3
    for i, s in enumerate(synthetic.iter_series(**kw)):
        assert store.ids[i] == s.uid and store.starts[i] == s.start
        np.testing.assert_array_equal(store.series_values(i), s.values_TC)
        np.testing.assert_array_equal(store.static[i], s.static_S)
    holdout = {"kind": "holdout", "horizon": 8}
    assert synthetic.build_store(tmp_path / "t.zarr", split=holdout, **kw).splits == holdout
    with pytest.raises(UserError, match="split preset"):
        synthetic.build_store(tmp_path / "u.zarr", split="thirds", **kw)
    with pytest.raises(UserError, match="already exists"):
        synthetic.build_store(tmp_path / "s.zarr", **kw)


def test_write_csv_is_long_format_with_empty_cells_for_missing_values(tmp_path):
    kw = dict(SMALL, n_hist_exog=1, n_futr_exog=1, n_static=1, missing_rate=0.05)
    out = synthetic.write_csv(tmp_path / "long.csv", **kw)
    series = list(synthetic.iter_series(**kw))
    assert out["n_rows"] == sum(len(s.values_TC) for s in series)
    assert out["target"] == ["y"] and out["static"] == ["log_level"]
    text = (tmp_path / "long.csv").read_text()
    header, first = text.splitlines()[:2]
    assert header == "unique_id,ds,y,hist_0,hour_of_day,log_level"
    assert first.startswith(f"{series[0].uid},20")  # "2020-01-... hh:mm:ss"
    assert ",," in text  # a missing value is an empty cell
    table = pacsv.read_csv(tmp_path / "long.csv")
    values = np.stack([table[c].to_numpy(zero_copy_only=False) for c in header.split(",")[2:5]], 1)
    np.testing.assert_array_equal(
        values.astype(np.float32), np.concatenate([s.values_TC for s in series])
    )
    ds = table["ds"].cast("int64").to_numpy()[: len(series[0].values_TC)]
    assert ds[0] * 10**9 == series[0].start and (np.diff(ds) == 3600).all()
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_csv_ingests_into_the_store_build_store_writes(tmp_path):
    from tsforge.data.ingest import ingest
    kw = dict(SMALL, n_hist_exog=1, n_futr_exog=2, n_static=1, missing_rate=0.02, seed=5)
    cols = synthetic.write_csv(tmp_path / "long.csv", **kw)
    ingest(
        tmp_path / "long.csv", tmp_path / "ingested.zarr", target=cols["target"],
        hist_exog=cols["hist_exog"], futr_exog=cols["futr_exog"], static=cols["static"],
        on_nan="keep", freq=cols["freq"],
    )  # fmt: skip
    got, want = Store(tmp_path / "ingested.zarr"), synthetic.build_store(tmp_path / "b.zarr", **kw)
    assert list(got.ids) == list(want.ids) and got.columns == want.columns
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.starts, want.starts)
    np.testing.assert_array_equal(got.rows(0, got.n_timesteps), want.rows(0, want.n_timesteps))
    np.testing.assert_array_equal(got.static, want.static)
