"""The window loader on real Zarr stores: values against brute-force slices, the order,
rank slices, resume with other worker counts and world sizes, evaluation passes, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsforge.data import scaling
from tsforge.data.loader import WindowLoader, WindowSpec, train_series_stats
from tsforge.data.splits import resolve
from tsforge.data.store import ColumnRoles, StoreWriter
from tsforge.data.transport import layout_of
from tsforge.errors import UserError

SPLIT = {"kind": "ratio", "train": 0.7, "test": 0.15}
ROLES = ColumnRoles(target=["a", "b"], hist_exog=["h"], futr_exog=["f"], static=["s1", "s2"])
LENGTHS = [5, 40, 400, 23, 150, 0, 333, 61, 250]  # uneven, one empty, some shorter than W


def write_store(path, lengths=LENGTHS, seed=0, chunk_rows=64):
    rng = np.random.default_rng(seed)
    with StoreWriter(path, roles=ROLES, freq="h", chunk_rows=chunk_rows) as w:
        for i, n in enumerate(lengths):
            x = (rng.standard_normal((n, 4)) + 10 * i).astype(np.float32)
            x[rng.random((n, 4)) < 0.05] = np.nan
            w.add_series(f"s{i}", 0, x, np.array([i, -i], np.float32))
        return w.commit(splits=SPLIT)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("loader") / "s.zarr")


def ids_of(loader, batch):
    return loader.index.window_id(batch["series"].numpy(), batch["channel"].numpy(),
                                  batch["t"].numpy())


def take(loader, n):
    """n batches, across epochs."""
    out = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def cat(parts):
    """One global batch from the ranks' parts."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def expected_window(store, spec, s, c, t):
    """Raw target, mask and covariates of window (s, c, t), straight from the series."""
    L, H = spec.input_size, spec.horizon
    x = store.series_values(s)
    rows = np.arange(t - L, t + H)
    vals = np.full((L + H, x.shape[1]), np.nan, np.float32)
    vals[rows >= 0] = x[rows[rows >= 0]]
    y = vals[:, :2] if spec.multivariate else vals[:, [c]]
    mask = np.isfinite(y)
    return np.where(mask, y, 0), mask, np.nan_to_num(vals[:L, [2]]), np.nan_to_num(vals[:, [3]])


@pytest.mark.parametrize("multivariate", [False, True])
@pytest.mark.parametrize("min_input_size", [None, 4])
def test_epoch_matches_brute_force_slices(store, multivariate, min_input_size):
    spec = WindowSpec(12, 6, min_input_size=min_input_size, multivariate=multivariate)
    loader = WindowLoader(store, spec, global_batch_size=32, scaling="none", seed=1)
    L, H = spec.input_size, spec.horizon
    seen, crossing, padded = [], 0, 0
    for batch in loader:
        seen.append(ids_of(loader, batch))
        for i in range(len(batch["t"])):
            s, c, t = (int(batch[k][i]) for k in ("series", "channel", "t"))
            y, mask, hist, futr = expected_window(store, spec, s, c, t)
            assert (c == -1) == multivariate
            first_row = store.indptr[s] + max(t - L, 0)
            crossing += first_row // 64 != (store.indptr[s] + t + H - 1) // 64
            padded += t < L
            np.testing.assert_array_equal(batch["insample_y"][i].numpy(), y[:L])
            np.testing.assert_array_equal(batch["outsample_y"][i].numpy(), y[L:])
            np.testing.assert_array_equal(batch["insample_mask"][i].numpy(), mask[:L])
            np.testing.assert_array_equal(batch["outsample_mask"][i].numpy(), mask[L:])
            np.testing.assert_array_equal(batch["hist_exog"][i].numpy(), hist)
            np.testing.assert_array_equal(batch["futr_exog"][i].numpy(), futr)
            np.testing.assert_array_equal(batch["stat_exog"][i].numpy(), [s, -s])
        assert batch["valid"].all()
    seen = np.concatenate(seen)
    # one epoch: every window at most once, all but the dropped partial batch
    assert len(np.unique(seen)) == len(seen) == loader.n_windows // 32 * 32
    assert crossing > 0  # windows that cross a chunk boundary were checked
    assert (padded > 0) == bool(min_input_size)


def test_padded_windows_appear_and_are_masked(store):
    spec = WindowSpec(12, 6, min_input_size=4)
    loader = WindowLoader(store, spec, split="train", mode="eval", global_batch_size=64,
                          scaling="none")
    batches = list(loader)
    t = torch.cat([b["t"] for b in batches])
    mask = torch.cat([b["insample_mask"] for b in batches])
    valid = torch.cat([b["valid"] for b in batches])
    padded = (t < 12) & valid
    assert padded.any()
    for i in torch.nonzero(padded).flatten().tolist():
        assert not mask[i, : 12 - int(t[i]), 0].any()


@pytest.mark.parametrize("multivariate", [False, True])
@pytest.mark.parametrize("scale_by", ["window", "series"])
@pytest.mark.parametrize("method", ["standard", "robust"])
def test_scaled_batches_invert_to_the_data(store, scale_by, method, multivariate):
    spec = WindowSpec(12, 6, multivariate=multivariate)
    raw = WindowLoader(store, spec, global_batch_size=64, scaling="none", seed=3)
    scaled = WindowLoader(store, spec, global_batch_size=64, scaling=method,
                          scale_by=scale_by, seed=3)
    for a, b in zip(take(raw, 3), take(scaled, 3)):
        for part in ("insample", "outsample"):
            back = scaling.inverse(b[f"{part}_y"], b["loc"], b["scale"]) * b[f"{part}_mask"]
            torch.testing.assert_close(back, a[f"{part}_y"], rtol=1e-5, atol=1e-4)
            assert torch.equal(a[f"{part}_mask"], b[f"{part}_mask"])
            assert (b[f"{part}_y"][b[f"{part}_mask"] == 0] == 0).all()
    if scale_by == "series":  # statistics of the train rows (the fit: test_scaling.py)
        _, train_hi = resolve(SPLIT, store.lengths, "train")
        loc, scale = scaling.fit_series(store, train_hi, [0, 1], method)
        batch = take(scaled, 1)[0]
        s, c = batch["series"].numpy(), batch["channel"].numpy()
        at = s if multivariate else (s, c)
        np.testing.assert_array_equal(batch["loc"][:, 0].numpy(), loc[at].reshape(len(s), -1))
        np.testing.assert_array_equal(batch["scale"][:, 0].numpy(), scale[at].reshape(len(s), -1))


def test_series_stats_handed_in_scale_as_fitted_ones(store):
    """Per-series statistics computed elsewhere (predict: the training store's) scale the
    batches exactly as the loader's own fit does."""
    spec = WindowSpec(12, 6)
    args = dict(global_batch_size=64, scale_by="series", seed=3)
    stats = train_series_stats(store, SPLIT, "standard")
    fitted = WindowLoader(store, spec, **args)
    given = WindowLoader(store, spec, series_stats=stats, **args)
    for a, b in zip(take(fitted, 2), take(given, 2)):
        assert_same(a, b)
    other = (stats[0] + 1.0, stats[1] * 2.0)
    batch = take(WindowLoader(store, spec, series_stats=other, **args), 1)[0]
    s, c = batch["series"].numpy(), batch["channel"].numpy()
    np.testing.assert_array_equal(batch["loc"][:, 0, 0].numpy(), other[0][s, c])
    np.testing.assert_array_equal(batch["scale"][:, 0, 0].numpy(), other[1][s, c])
    with pytest.raises(ValueError, match=r"series_stats must be two arrays of shape \(9, 2\)"):
        WindowLoader(store, spec, series_stats=(stats[0][:3], stats[1][:3]), **args)


def test_epochs_differ_and_depend_on_the_seed(store):
    spec = WindowSpec(12, 6)
    a = WindowLoader(store, spec, global_batch_size=16, seed=5)
    e0 = np.concatenate([ids_of(a, b) for b in a])
    e1 = np.concatenate([ids_of(a, b) for b in a])
    again = WindowLoader(store, spec, global_batch_size=16, seed=5)
    assert np.array_equal(e0, np.concatenate([ids_of(again, b) for b in again]))
    other = WindowLoader(store, spec, global_batch_size=16, seed=6)
    assert not np.array_equal(e0, np.concatenate([ids_of(other, b) for b in other]))
    assert not np.array_equal(e0, e1)
    assert len(np.unique(e1)) == len(e1) == len(e0)


def test_world_size_and_resume_give_the_uninterrupted_batches(store):
    spec = WindowSpec(12, 6)
    kw = dict(global_batch_size=60, seed=11)
    reference = take(WindowLoader(store, spec, **kw), 40)  # spans an epoch boundary
    per_epoch = len(WindowLoader(store, spec, **kw))
    assert per_epoch < 40

    # world size 2, without interruption: the ranks' parts make the reference batches
    ranks = [WindowLoader(store, spec, rank=r, world_size=2, **kw) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == per_epoch
    first = [take(r, 15) for r in ranks]
    for k in range(15):
        assert_same(cat([first[0][k], first[1][k]]), reference[k])

    # resume after those 15 batches on 3 ranks, one of them with 2 worker processes
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict()
    assert set(state) == {"epoch", "batches_consumed", "seed", "fingerprint", "settings_hash"}
    resumed = []
    for r in range(3):  # built with another seed: the state's seed is the run's
        loader = WindowLoader(store, spec, rank=r, world_size=3, num_workers=2 if r == 0 else 0,
                              seed=0, **{k: v for k, v in kw.items() if k != "seed"})
        loader.load_state_dict(state)
        resumed.append(take(loader, 25))
    for k in range(25):
        assert_same(cat([resumed[r][k] for r in range(3)]), reference[15 + k])


def test_resume_mid_epoch_with_workers(store):
    spec = WindowSpec(12, 6, multivariate=True)
    kw = dict(global_batch_size=20, seed=2, mode="sampled", num_steps=9)
    reference = take(WindowLoader(store, spec, **kw), 14)
    a = WindowLoader(store, spec, num_workers=2, **kw)
    head = take(a, 5)
    b = WindowLoader(store, spec, **kw)
    b.load_state_dict(a.state_dict())
    tail = take(b, 9)
    for got, want in zip(head + tail, reference):
        assert_same(got, want)
    assert a.state_dict()["epoch"] == 0 and b.state_dict()["epoch"] == 1


@pytest.mark.parametrize("multivariate", [False, True])
def test_packed_batches_fit_the_worker_slabs(store, multivariate):
    spec = WindowSpec(12, 6, multivariate=multivariate)
    loader = WindowLoader(store, spec, global_batch_size=30, rank=1, world_size=3)
    packed = loader._batches.batch_nbytes()
    assert layout_of(loader._batches.build(0, 0))[1] == packed  # so workers use the slabs


def test_batches_too_big_for_a_slab_still_arrive(store, monkeypatch):
    spec = WindowSpec(12, 6)
    kw = dict(global_batch_size=16, seed=9, mode="sampled", num_steps=3)
    reference = take(WindowLoader(store, spec, **kw), 3)
    monkeypatch.setattr("tsforge.data.batches.WindowBatches.batch_nbytes", lambda self: 8)
    for got, want in zip(take(WindowLoader(store, spec, num_workers=1, **kw), 3), reference):
        assert_same(got, want)


def test_eval_visits_each_window_once_across_ranks(store):
    spec = WindowSpec(12, 6)
    world = 3
    loaders = [WindowLoader(store, spec, split="val", global_batch_size=30, rank=r,
                            world_size=world) for r in range(world)]
    parts = [list(ld) for ld in loaders]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(loaders[0])
    ids, n_pads = [], 0
    for rank_batches in parts:
        for b in rank_batches:
            v = b["valid"]
            ids.append(ids_of(loaders[0], b)[v.numpy()])
            n_pads += int((~v).sum())
            for key in ("insample_mask", "outsample_mask", "insample_y", "outsample_y"):
                assert (b[key][~v] == 0).all()
    ids = np.concatenate(ids)
    n = loaders[0].n_windows
    assert np.array_equal(np.sort(ids), np.arange(n))
    assert n_pads == len(parts[0]) * 30 - n
    assert [len(list(loaders[0])) for _ in range(2)] == [len(loaders[0])] * 2  # full passes


def test_sampled_mode_weights_and_determinism(store):
    spec = WindowSpec(12, 6)
    weights = np.zeros(len(LENGTHS))
    weights[[2, 6]] = [1.0, 3.0]
    kw = dict(mode="sampled", num_steps=5, global_batch_size=200, sample_by="series")
    a = WindowLoader(store, spec, series_weights=weights, **kw)
    assert len(a) == 5
    series = torch.cat([b["series"] for b in a]).numpy()
    assert set(np.unique(series)) == {2, 6}
    assert 0.65 < np.mean(series == 6) < 0.85
    b = WindowLoader(store, spec, series_weights=weights, **kw)
    assert np.array_equal(series, torch.cat([x["series"] for x in b]).numpy())


def assert_small_cache_gives_the_same_batches(store, cache_mb: float) -> None:
    spec = WindowSpec(12, 6)
    kw = dict(global_batch_size=64, seed=4, mode="sampled", num_steps=4)
    big = take(WindowLoader(store, spec, **kw), 4)
    small = take(WindowLoader(store, spec, cache_mb=cache_mb, **kw), 4)
    for a, b in zip(big, small):
        assert_same(a, b)


def test_small_cache_gives_the_same_batches(store):
    assert_small_cache_gives_the_same_batches(store, cache_mb=0.002)  # 2 slots of 81 rows


def test_small_cache_gives_the_same_batches_without_covariates(tmp_path):
    # A univariate store has no historical or future-known columns: the path that splits a
    # batch whose chunks do not fit the cache must still join the halves' arrays.
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "u.zarr", roles=ColumnRoles(target=["y"]), freq="h",
                     chunk_rows=64) as w:  # fmt: skip
        for i, n in enumerate(LENGTHS):
            w.add_series(f"s{i}", 0, rng.standard_normal((n, 1)).astype(np.float32))
        store = w.commit(splits=SPLIT)
    assert_small_cache_gives_the_same_batches(store, cache_mb=0.0006)  # 2 slots of 81 rows


def test_state_of_another_store_or_settings_is_refused(store, tmp_path):
    spec = WindowSpec(12, 6)
    loader = WindowLoader(store, spec, global_batch_size=16)
    state = loader.state_dict()
    other = write_store(tmp_path / "other.zarr", seed=1)
    with pytest.raises(UserError, match="fingerprint"):
        WindowLoader(other, spec, global_batch_size=16).load_state_dict(state)
    with pytest.raises(UserError, match="other loader settings"):
        WindowLoader(store, spec, global_batch_size=32).load_state_dict(state)
    with pytest.raises(UserError, match="other loader settings"):
        WindowLoader(store, WindowSpec(12, 7), global_batch_size=16).load_state_dict(state)


def test_bad_arguments_are_refused(store):
    spec = WindowSpec(12, 6)
    with pytest.raises(UserError, match="not divisible by world size 3"):
        WindowLoader(store, spec, global_batch_size=16, world_size=3)
    with pytest.raises(UserError, match="fewer than the global batch size"):
        WindowLoader(store, spec, global_batch_size=10**6)
    with pytest.raises(UserError, match="mode"):
        WindowLoader(store, spec, mode="shuffle")
    with pytest.raises(UserError, match="scaling"):
        WindowLoader(store, spec, scaling="minmax")
