"""Split specs resolved to forecast ranges (tsforge/data/splits.py).

    pytest tests/unit/test_splits.py
"""

import numpy as np
import pytest

from tsforge.data import splits
from tsforge.errors import UserError


def test_ett_borders():
    lo, hi = splits.resolve(splits.preset("ett_hour"), np.array([17420]), "test")
    assert (lo[0], hi[0]) == (11520, 14400)
    lo, hi = splits.resolve(splits.preset("ett_hour"), np.array([17420]), "val")
    assert (lo[0], hi[0]) == (8640, 11520)
    lo, hi = splits.resolve(splits.preset("ett_hour"), np.array([17420]), "train")
    assert (lo[0], hi[0]) == (0, 8640)


def test_ratio_matches_protocol():
    n = 7588  # exchange_rate rows
    lo, hi = splits.resolve(splits.preset("ratio_70_10_20"), np.array([n]), "test")
    assert hi[0] - lo[0] == int(0.2 * n) and hi[0] == n
    lo, hi = splits.resolve(splits.preset("ratio_70_10_20"), np.array([n]), "train")
    assert hi[0] == int(0.7 * n)


def test_holdout_per_series():
    lengths = np.array([748, 1008])
    lo, hi = splits.resolve(splits.preset("m4_hourly"), lengths, "test")
    np.testing.assert_array_equal(lo, lengths - 48)
    np.testing.assert_array_equal(hi, lengths)
    lo, hi = splits.resolve(splits.preset("m4_hourly"), lengths, "val")
    np.testing.assert_array_equal(hi, lengths - 48)


def test_short_series_get_empty_ranges():
    lo, hi = splits.resolve(splits.preset("ett_hour"), np.array([100]), "test")
    assert hi[0] - lo[0] == 0


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"kind": "nope"}, "kind"),
        ({"kind": "borders", "train": 10}, "needs the key 'val'"),
        ({"kind": "borders", "train": 10, "val": 5, "test": 20}, "train <= val"),
        ({"kind": "ratio", "train": 0.9, "test": 0.2}, "train \\+ test"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(UserError, match=match):
        splits.validate(spec)


def test_unknown_preset():
    with pytest.raises(UserError, match="ett_hour"):
        splits.preset("ett")
