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


# -- parse: the one reader of a split as users write it ----------------------------------------
@pytest.mark.parametrize(
    "text, spec",
    [
        ("m4_hourly", {"kind": "holdout", "horizon": 48}),
        ("holdout:48", {"kind": "holdout", "horizon": 48, "test": 0}),
        (" holdout:7 ", {"kind": "holdout", "horizon": 7, "test": 0}),
        ('{"kind": "ratio", "train": 0.6, "test": 0.3}',
         {"kind": "ratio", "train": 0.6, "test": 0.3}),
        ({"kind": "holdout", "horizon": 5, "test": 2},
         {"kind": "holdout", "horizon": 5, "test": 2}),
        (None, None),
        ("", None),
    ],
)
def test_parse_accepts_every_form(text, spec):
    assert splits.parse(text, "data.split") == spec


@pytest.mark.parametrize(
    "text, match",
    [
        ("holdout:0", r"data\.split 'holdout:0': H in holdout:H must be a whole number"),
        ("holdout:", r"H in holdout:H"),
        ("holdout:4.5", r"H in holdout:H"),
        ("holdout:-3", r"H in holdout:H"),
        ("ett", r"data\.split 'ett' is an unknown split preset .* holdout:H .* JSON spec"),
        ("{kind: none}", r"data\.split '\{kind: none\}' is not valid JSON"),
        ('{"kind": "holdout"}', r"needs the key 'horizon'"),
        ('{"kind": "holdout", "horizon": 4, "test": -1}', r"test must be >= 0"),
        ('{"kind": "holdout", "horizon": 4, "val": 2}', r"has no key 'val'"),
    ],
)
def test_parse_refuses_naming_the_flag_and_the_forms(text, match):
    with pytest.raises(UserError, match=match) as err:
        splits.parse(text, "data.split")
    assert "\n" not in str(err.value)


def test_holdout_colon_validates_on_the_last_steps_and_tests_on_none():
    spec = splits.parse("holdout:5", "--split")
    lengths = np.array([20, 7, 3])
    lo, hi = splits.resolve(spec, lengths, "val")
    np.testing.assert_array_equal(hi, lengths)
    np.testing.assert_array_equal(lo, np.maximum(lengths - 5, 0))
    lo, hi = splits.resolve(spec, lengths, "train")
    np.testing.assert_array_equal(hi, np.maximum(lengths - 5, 0))
    lo, hi = splits.resolve(spec, lengths, "test")
    np.testing.assert_array_equal(hi - lo, [0, 0, 0])


def test_holdout_with_test_rows_between():
    spec = splits.parse({"kind": "holdout", "horizon": 4, "test": 2})
    for split, want in (("train", (0, 14)), ("val", (14, 18)), ("test", (18, 20))):
        lo, hi = splits.resolve(spec, np.array([20]), split)
        assert (lo[0], hi[0]) == want
