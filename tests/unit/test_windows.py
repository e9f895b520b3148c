"""Window index maths against brute-force enumeration of the window definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsforge.data.windows import WindowIndex, WindowSpec
from tsforge.errors import UserError


def brute_force(lo, hi, spec: WindowSpec, n_targets: int) -> list[tuple[int, int, int]]:
    """Every (series, channel, t) in id order, straight from the definition."""
    L, H = spec.input_size, spec.horizon
    channels = [-1] if spec.multivariate else list(range(n_targets))
    out = []
    for s, (a, b) in enumerate(zip(lo, hi)):
        first = max(a, L - spec.pad)
        for t in range(first, b - H + 1):
            if (t - first) % spec.stride == 0 and t - L >= -spec.pad:
                out.extend((s, c, t) for c in channels)
    return out


@st.composite
def cases(draw):
    n = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    lo, hi = [], []
    for length in lengths:
        a = draw(st.integers(0, length))
        lo.append(a)
        hi.append(draw(st.integers(a, length)))
    L = draw(st.integers(1, 12))
    spec = WindowSpec(
        input_size=L,
        horizon=draw(st.integers(1, 12)),
        stride=draw(st.integers(1, 4)),
        min_input_size=draw(st.one_of(st.none(), st.integers(1, L))),
        multivariate=draw(st.booleans()),
    )
    return np.array(lo), np.array(hi), spec, draw(st.integers(1, 3)), lengths


@settings(max_examples=150, deadline=None)
@given(cases())
def test_counts_and_locate_match_brute_force(case):
    lo, hi, spec, n_targets, _ = case
    index = WindowIndex(lo, hi, spec, n_targets)
    expected = brute_force(lo, hi, spec, n_targets)
    assert index.n_windows == len(expected)
    per_series = np.bincount([s for s, _, _ in expected], minlength=len(lo))
    assert index.counts.tolist() == per_series.tolist()
    ids = np.arange(index.n_windows)
    s, c, t = index.locate(ids)
    got = list(zip(s.tolist(), c.tolist(), t.tolist()))
    if not spec.multivariate and n_targets == 1:
        expected = [(a, 0, b) for a, _, b in expected]
    assert got == expected  # a bijection onto the brute-force set, in id order
    assert index.window_id(s, c, t).tolist() == ids.tolist()


@settings(max_examples=100, deadline=None)
@given(cases())
def test_first_ids_at_rows_cut_ids_by_read_row(case):
    lo, hi, spec, n_targets, lengths = case
    index = WindowIndex(lo, hi, spec, n_targets)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    s, _, t = index.locate(np.arange(index.n_windows))
    read_row = indptr[s] + np.maximum(t - spec.input_size, 0)
    assert np.all(np.diff(read_row) >= 0)  # ids run in read-row order
    rows = np.arange(indptr[-1] + 2)
    want = [(read_row < r).sum() for r in rows]
    assert index.first_ids_at_rows(indptr, rows).tolist() == want


def test_locate_skips_series_without_windows():
    spec = WindowSpec(input_size=3, horizon=2)
    index = WindowIndex(np.array([0, 0, 0, 0]), np.array([10, 2, 0, 6]), spec, n_targets=1)
    assert index.counts.tolist() == [6, 0, 0, 2]
    s, _, t = index.locate(np.array([5, 6, 7]))
    assert s.tolist() == [0, 3, 3] and t.tolist() == [8, 3, 4]


def test_padding_allows_short_inputs():
    spec = WindowSpec(input_size=8, horizon=2, min_input_size=3)
    index = WindowIndex(np.array([0]), np.array([10]), spec, n_targets=1)
    _, _, t = index.locate(np.arange(index.n_windows))
    assert t.tolist() == list(range(3, 9))


def test_legacy_drop_last_keeps_whole_batches_of_forecast_starts():
    # ETTh1's test split at L=H=96: 2785 forecast starts; batches of 32 (DLinear's code) keep
    # 2784, batches of 128 (PatchTST's) keep 2688. The kept windows are the first ones.
    spec = WindowSpec(input_size=96, horizon=96)
    lo, hi = np.array([11520]), np.array([14400])
    full = WindowIndex(lo, hi, spec, n_targets=7)
    assert full.n_windows == 2785 * 7
    for batch, kept in ((32, 2784), (128, 2688), (1, 2785)):
        index = WindowIndex(lo, hi, spec, n_targets=7, drop_last_of=batch)
        assert index.n_windows == kept * 7
        ids = np.arange(index.n_windows)
        assert [a.tolist() for a in index.locate(ids)] == [a.tolist() for a in full.locate(ids)]


@pytest.mark.parametrize(
    "kwargs",
    [dict(input_size=0, horizon=1), dict(input_size=4, horizon=0),
     dict(input_size=4, horizon=1, stride=0), dict(input_size=4, horizon=1, min_input_size=5),
     dict(input_size=4, horizon=1, min_input_size=0)],
)
def test_spec_refuses_bad_sizes(kwargs):
    with pytest.raises(UserError):
        WindowSpec(**kwargs)
