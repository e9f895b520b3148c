"""The global window order: permutations, determinism, locality, sampling, rank slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsforge.data.order import EpochOrder, EvalOrder, SampledOrder, rank_positions
from tsforge.errors import UserError

KEY = (7, 1234, 99)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 200), st.integers(1, 8), st.integers(0, 3))
def test_each_epoch_is_a_permutation(n, block, group, epoch):
    order = EpochOrder(EpochOrder.uniform_blocks(n, block), group, KEY)
    ids = order.ids(epoch, np.arange(n))
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_order_depends_on_key_and_epoch_only():
    n = 5000
    blocks = EpochOrder.uniform_blocks(n, 100)
    a = EpochOrder(blocks, 4, KEY).ids(0, np.arange(n))
    assert np.array_equal(a, EpochOrder(blocks, 4, KEY).ids(0, np.arange(n)))
    assert not np.array_equal(a, EpochOrder(blocks, 4, KEY).ids(1, np.arange(n)))
    assert not np.array_equal(a, EpochOrder(blocks, 4, (8, 1234, 99)).ids(0, np.arange(n)))
    assert not np.array_equal(a, EpochOrder(blocks, 4, (7, 1234, 98)).ids(0, np.arange(n)))


def test_any_positions_agree_with_the_whole_epoch():
    n = 4000
    blocks = EpochOrder.uniform_blocks(n, 64)
    order = EpochOrder(blocks, 3, KEY)
    whole = order.ids(2, np.arange(n))
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos = rng.integers(0, n, 300)
        assert np.array_equal(EpochOrder(blocks, 3, KEY).ids(2, pos), whole[pos])


def test_shuffle_keeps_block_locality():
    n, block, group = 100_000, 1000, 4
    blocks = EpochOrder.uniform_blocks(n, block)
    ids = EpochOrder(blocks, group, KEY).ids(0, np.arange(n)).reshape(-1, 500)
    blocks_per_batch = [len(np.unique(b // block)) for b in ids]
    assert max(blocks_per_batch) <= 2 * group  # a batch lies in at most two groups
    assert np.mean(blocks_per_batch) > group - 1  # and is mixed across the group's blocks


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.integers(1, 5))
def test_uneven_and_empty_blocks_make_a_permutation(sizes, group):
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n = int(starts[-1])
    ids = EpochOrder(starts, group, KEY).ids(1, np.arange(n))
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_sampled_is_deterministic_and_position_based():
    offsets = np.array([0, 10, 10, 300, 1000])
    a = SampledOrder(offsets, KEY)
    ids = a.ids(0, np.arange(10_000))
    assert ids.min() >= 0 and ids.max() < 1000
    assert np.array_equal(ids[5000:5100], SampledOrder(offsets, KEY).ids(0, np.arange(5000, 5100)))
    assert not np.array_equal(ids, a.ids(1, np.arange(10_000)))


def test_sampled_by_series_and_weights():
    offsets = np.array([0, 10, 10, 300, 1000])  # series 1 has no windows
    n = 40_000
    by_series = SampledOrder(offsets, KEY, sample_by="series").ids(0, np.arange(n))
    series = np.searchsorted(offsets, by_series, side="right") - 1
    freq = np.bincount(series, minlength=4) / n
    assert freq[1] == 0 and np.allclose(freq[[0, 2, 3]], 1 / 3, atol=0.02)
    weighted = SampledOrder(offsets, KEY, sample_by="series",
                            series_weights=np.array([3.0, 5.0, 0.0, 1.0])).ids(0, np.arange(n))
    series = np.searchsorted(offsets, weighted, side="right") - 1
    freq = np.bincount(series, minlength=4) / n
    assert freq[1] == 0 and freq[2] == 0 and np.allclose(freq[[0, 3]], [0.75, 0.25], atol=0.02)
    within = weighted[series == 0]
    assert set(np.unique(within)) == set(range(10))  # uniform within a series


@pytest.mark.parametrize("weights", [np.array([1.0, -1.0]), np.array([0.0, 1.0]), np.ones(3)])
def test_sampled_refuses_bad_weights(weights):
    with pytest.raises(UserError):
        SampledOrder(np.array([0, 5, 5]), KEY, sample_by="series", series_weights=weights)


def test_rank_slices_are_disjoint_and_complete():
    for world in (1, 2, 4):
        parts = [rank_positions(3, 64, r, world) for r in range(world)]
        assert all(len(p) == 64 // world for p in parts)
        assert np.array_equal(np.concatenate(parts), np.arange(3 * 64, 4 * 64))


def test_rank_slices_refuse_indivisible_batch():
    with pytest.raises(UserError, match="not divisible by world size 3"):
        rank_positions(0, 64, 0, 3)


def test_eval_order_pads_past_the_end():
    ids = EvalOrder(10).ids(0, np.arange(8, 12))
    assert ids.tolist() == [8, 9, 0, 0]
