"""Mixtures of sources (`tsforge.data.mixture`), KernelSynth (`tsforge.data.kernelsynth`) and
the random-walk and repeating-profile priors (`tsforge.data.priors`): the global order is the
same for any number of workers and ranks, resume is exact, the realised shares follow the
weights, held-out windows are visited once, generated series are a function of their seed
(and have the property each prior is for), and bad `data.sources` are refused naming the
entry.

    python -m pytest -q tests/unit/test_mixture.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tsforge.config.checks import compose_config
from tsforge.data import kernelsynth, priors
from tsforge.data.mixture import Mixture, MixtureLoader, SourceSpec
from tsforge.data.store import ColumnRoles, StoreWriter
from tsforge.data.windows import WindowSpec
from tsforge.errors import UserError

SPEC = WindowSpec(input_size=24, horizon=8)
KEYS = ("insample_y", "outsample_y", "outsample_mask", "source", "series", "channel", "t")


def make_store(path, lengths, n_targets=1, seed=0):
    rng = np.random.default_rng(seed)
    roles = ColumnRoles(target=[f"y{c}" for c in range(n_targets)])
    with StoreWriter(path, roles=roles, freq="h", chunk_rows=128) as w:
        for i, n in enumerate(lengths):
            w.add_series(f"s{i}", 0, rng.standard_normal((n, n_targets)).astype(np.float32))
        w.commit(splits={"kind": "ratio", "train": 0.7, "test": 0.15})
    return str(path)


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    a = make_store(root / "a.zarr", [300, 20, 500, 90], n_targets=2)  # a series too short
    b = make_store(root / "b.zarr", [200, 260], seed=1)
    return Mixture([SourceSpec("a", "store", path=a, weight=0.5),
                    SourceSpec("b", "store", path=b, weight=0.3),
                    SourceSpec("kernelsynth", "kernelsynth", weight=0.2)])  # fmt: skip


def take(loader, n):
    """n batches, crossing epochs as the training loop does."""
    out = []
    while len(out) < n:
        for batch in loader:
            out.append({k: batch[k].clone() for k in KEYS})
            if len(out) == n:
                break
    return out


def same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        for k in KEYS:
            assert torch.equal(x[k], y[k]), k


def test_kernelsynth_series_are_a_function_of_their_seed():
    seeds = [[0, 0, 0, 0, p] for p in range(6)]
    a, b = kernelsynth.sample(seeds, 120), kernelsynth.sample(seeds, 120)
    assert a.shape == (6, 120) and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert all(not np.allclose(a[i], a[j]) for i in range(6) for j in range(i))
    assert not np.array_equal(kernelsynth.sample([[1, 0, 0, 0, 0]], 120)[0], a[0])


def test_kernelsynth_draws_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []
    cholesky = np.linalg.cholesky

    def spy(K):
        seen.extend(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
        return cholesky(K)

    monkeypatch.setattr(np.linalg, "cholesky", spy)
    kernelsynth.sample([[0, i] for i in range(3)], 64)
    assert seen and set(seen) == {1}  # ranks and workers give the parallelism, not BLAS


def test_kernelsynth_covariance_matches_the_dense_kernels():
    x = np.arange(50) / kernelsynth.REFERENCE_LENGTH
    d = np.abs(x[:, None] - x[None, :])
    rbf = np.exp(-0.5 * (d / 0.1) ** 2)
    periodic = np.exp(-2 * np.sin(np.pi * d * kernelsynth.REFERENCE_LENGTH / 24) ** 2)
    linear = 1.0 + np.outer(x, x)
    K = kernelsynth.covariance([("rbf", 0.1), ("periodic", 24.0), ("linear", 1.0)],
                               ["*", "+"], 50)  # fmt: skip
    assert np.allclose(K, rbf * periodic + linear)


@pytest.mark.parametrize("name", sorted(priors.GENERATED))
def test_prior_series_are_a_function_of_their_seed(name):
    sample = priors.GENERATED[name]
    seeds = [[0, 0, 0, 0, p] for p in range(6)]
    a, b = sample(seeds, 200), sample(seeds, 200)
    assert a.shape == (6, 200) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert all(not np.allclose(a[i], a[j]) for i in range(6) for j in range(i))


def test_random_walks_are_best_forecast_by_their_last_value():
    """What the prior is for: over many walks, the last value beats the window's mean."""
    y_BW = priors.randomwalk([[1, p] for p in range(200)], 240).astype(np.float64)
    past, future = y_BW[:, :192], y_BW[:, 192:]
    naive = np.abs(future - past[:, -1:]).mean(axis=1)
    mean = np.abs(future - past.mean(axis=1, keepdims=True)).mean(axis=1)
    assert np.median(naive / mean) < 0.75 and np.mean(naive < mean) > 0.65


def test_profiles_repeat_with_one_of_their_periods():
    """What the prior is for: a seasonal naive at some period of PERIODS is better than the
    last value for most series (not all: a smooth weekly profile under a trend moves less
    from one step to the next than from one week to the next)."""
    y_BW = priors.profiles([[2, p] for p in range(100)], 400).astype(np.float64)
    lag1 = np.abs(np.diff(y_BW, axis=1)).mean(axis=1)
    best = np.min([np.abs(y_BW[:, p:] - y_BW[:, :-p]).mean(axis=1)
                   for p in sorted(set(priors.PERIODS))], axis=0)  # fmt: skip
    assert np.median(best / lag1) < 0.7 and np.mean(best < lag1) > 0.6


def test_priors_mix_with_stores_the_same_for_any_world_size_and_workers(tmp_path):
    a = make_store(tmp_path / "a.zarr", [300, 500])
    mix = Mixture([SourceSpec("a", "store", path=a, weight=1.0),
                   SourceSpec("randomwalk", "randomwalk", weight=1.0),
                   SourceSpec("profiles", "profiles", weight=1.0)])  # fmt: skip
    one = take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4), 5)
    ranks = [take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4, rank=r,
                                world_size=2), 5) for r in range(2)]  # fmt: skip
    same([{k: torch.cat([ranks[0][i][k], ranks[1][i][k]]) for k in KEYS} for i in range(5)], one)
    same(take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4,
                            num_workers=2), 5), one)  # fmt: skip
    assert len({int(s) for b in one for s in b["source"]}) == 3
    assert all(torch.isfinite(b["insample_y"]).all() for b in one)
    kernel_only = Mixture([SourceSpec("a", "store", path=a, weight=1.0),
                           SourceSpec("kernelsynth", "kernelsynth", weight=1.0)])  # fmt: skip
    assert "priors" not in repr(kernel_only.fingerprint) and mix.fingerprint != Mixture(
        [SourceSpec("a", "store", path=a, weight=1.0),
         SourceSpec("randomwalk", "kernelsynth", weight=1.0),
         SourceSpec("profiles", "kernelsynth", weight=1.0)]).fingerprint


def test_same_batches_for_any_world_size_and_workers(mix):
    one = take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4), 6)
    ranks = [take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4, rank=r,
                                world_size=2), 6) for r in range(2)]  # fmt: skip
    joined = [{k: torch.cat([ranks[0][i][k], ranks[1][i][k]]) for k in KEYS} for i in range(6)]
    same(joined, one)
    workers = take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=3, num_steps=4,
                                 num_workers=2), 6)  # fmt: skip
    same(workers, one)
    assert len({int(s) for b in one for s in b["source"]}) == 3  # every source drawn
    other_seed = take(MixtureLoader(mix, SPEC, global_batch_size=16, seed=4, num_steps=4), 1)
    assert not torch.equal(other_seed[0]["insample_y"], one[0]["insample_y"])


def test_resume_continues_with_the_same_batches(mix):
    args = dict(global_batch_size=16, seed=5, num_steps=4)
    uninterrupted = MixtureLoader(mix, SPEC, **args)
    straight = take(uninterrupted, 9)
    first = MixtureLoader(mix, SPEC, **args)
    take(first, 5)  # into the second epoch
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches_consumed"] == 1
    assert sum(state["source_windows"]) == 5 * 16
    again = MixtureLoader(mix, SPEC, **args, rank=1, world_size=2)  # another world size
    again.load_state_dict(state)
    rest = take(again, 4)
    assert all(torch.equal(r["insample_y"], s["insample_y"][8:]) for r, s in
               zip(rest, straight[5:]))  # fmt: skip
    assert again.shares() == uninterrupted.shares()  # counted over global batches
    other = MixtureLoader(mix, SPEC, global_batch_size=32, seed=5, num_steps=4)
    with pytest.raises(UserError, match="other loader settings"):
        other.load_state_dict(state)


def test_realised_shares_follow_the_weights(mix):
    loader = MixtureLoader(mix, SPEC, global_batch_size=64, seed=0, num_steps=10)
    drawn = loader._batches.source_of(0, np.arange(200_000))
    assert np.bincount(drawn, minlength=3) / len(drawn) == pytest.approx([0.5, 0.3, 0.2],
                                                                        abs=0.01)  # fmt: skip
    seen = np.concatenate([b["source"].numpy() for b in take(loader, 10)])
    shares = loader.shares()
    assert list(shares) == ["a", "b", "kernelsynth"]
    assert [shares[k] for k in shares] == pytest.approx(np.bincount(seen, minlength=3) / 640)


def test_temperature_weights_from_sizes(tmp_path):
    specs = [SourceSpec("x", "kernelsynth", windows=100), SourceSpec("y", "kernelsynth",
                                                                    windows=10_000)]  # fmt: skip
    assert Mixture(specs).weights([100, 10_000]) == pytest.approx([1 / 101, 100 / 101])
    assert Mixture(specs, 2.0).weights([100, 10_000]) == pytest.approx([1 / 11, 10 / 11])
    loader = MixtureLoader(Mixture(specs, 2.0), SPEC, global_batch_size=8)
    assert loader.weights == pytest.approx([1 / 11, 10 / 11])


def test_held_out_windows_are_each_visited_once(mix):
    loaders = [MixtureLoader(mix, SPEC, split="val", global_batch_size=64, rank=r,
                             world_size=2) for r in range(2)]  # fmt: skip
    total = loaders[0].n_windows
    assert total == sum(s.n_windows for s in loaders[0].sources) > 0
    seen = set()
    for parts in zip(*loaders):
        for b in parts:
            ok = b["valid"].numpy()
            ids = [b[k].numpy()[ok].tolist() for k in ("source", "series", "channel", "t")]
            seen.update(zip(*ids))
    assert len(seen) == total
    again = [b["insample_y"] for b in loaders[0]]
    assert torch.equal(again[0], next(iter(loaders[0]))["insample_y"])


def test_a_source_without_windows_is_named(tmp_path):
    short = make_store(tmp_path / "short.zarr", [20, 30])
    mix = Mixture([SourceSpec("short", "store", path=short, weight=1.0),
                   SourceSpec("kernelsynth", "kernelsynth", weight=1.0)])  # fmt: skip
    with pytest.raises(UserError, match="source 'short'.*no training window"):
        MixtureLoader(mix, SPEC, global_batch_size=8)


@pytest.mark.parametrize(
    "sources, message",
    [
        ("[{name: nope, weight: 1}]", r"data.sources\[0\].name=nope is no dataset"),
        ("[{name: kernelsynth, weight: 1}, {name: synthetic, path: x.zarr, weight: 1}]",
         r"data.sources\[1\] has both"),
        ("[{name: kernelsynth, weight: 0}]", r"data.sources\[0\].weight=0"),
        ("[{name: kernelsynth, weight: -1}]", r"data.sources\[0\].weight=-1"),
        ("[{path: /nonexistent/x.zarr, weight: 1}]", r"data.sources\[0\].path=.*no such store"),
        ("[{name: kernelsynth, weight: 1}, {name: synthetic}]", r"data.sources\[1\] has no wei"),
        ("[{weight: 1}]", r"data.sources\[0\] has neither"),
        ("[]", "data.sources is empty"),
        ("[{name: synthetic, windows: 10}]", r"data.sources\[0\].windows=10"),
        ("[{name: kernelsynth, windows: 0}]", r"data.sources\[0\].windows=0"),
        ("[{name: kernelsynth}, {name: kernelsynth}]", r"data.sources\[1\] repeats"),
    ],
)  # fmt: skip
def test_bad_sources_are_refused_naming_the_entry(sources, message):
    with pytest.raises(UserError, match=message):
        compose_config(["data=mixture", f"data.sources={sources}"])


@pytest.mark.parametrize(
    "override",
    ["data.sampling=epoch", "data.scale_by=series", "data.multivariate=true", "data.temperature=0"],
)
def test_settings_a_mixture_cannot_take_are_refused(override):
    with pytest.raises(UserError, match=override.split("=")[0]):
        compose_config(["data=mixture", "data.sources=[{name: kernelsynth}]", override])


def test_per_source_losses_pool_to_the_batch_loss():
    from tsforge.losses import build_loss
    from tsforge.train.by_source import SourceLosses

    gen = torch.Generator().manual_seed(0)
    y_hat, y = torch.randn(6, 4, 1, 3, generator=gen), torch.randn(6, 4, 1, generator=gen)
    mask = (torch.rand(6, 4, 1, generator=gen) > 0.2).float()
    source = torch.tensor([0, 2, 0, 2, 2, 0])
    loss = build_loss("quantile", quantiles=[0.1, 0.5, 0.9])
    by_source = SourceLosses(["a", "b", "c"], torch.device("cpu"))
    by_source.add(loss, y_hat, y, mask, source)
    values = by_source.values(_single(), {"a": 0.5, "b": 0.0, "c": 0.5})
    assert "train/loss/b" not in values and values["data/share/a"] == 0.5
    for label, s in (("a", 0), ("c", 2)):
        sel = source == s
        assert values[f"train/loss/{label}"] == pytest.approx(
            float(loss(y_hat[sel], y[sel], mask[sel])), rel=1e-6
        )
    assert by_source.values(_single(), {}) == {}  # reset after each log record


def _single():
    from tsforge.train.distributed import DistEnv

    return DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)


def test_a_bad_source_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "tsforge.launch", "data=mixture",
         "data.sources=[{name: kernelsynth, weight: 1}, {name: nope, weight: 1}]",
         f"hydra.run.dir={tmp_path / 'run'}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.sources[1].name=nope" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
