"""Frequencies: parsing, inference and grid arithmetic (tsforge/data/freq.py).

    pytest tests/unit/test_freq.py
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tsforge.data.freq import NS_PER, Freq, format_time
from tsforge.errors import UserError

H = NS_PER["h"]
DAY = NS_PER["D"]


def _ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


@pytest.mark.parametrize(
    "text, name, freq",
    [
        ("h", "h", Freq(H, "ns")),
        ("H", "h", Freq(H, "ns")),
        ("15min", "15min", Freq(15 * 60 * 10**9, "ns")),
        ("15T", "15min", Freq(15 * 60 * 10**9, "ns")),
        ("90s", "90s", Freq(90 * 10**9, "ns")),
        ("D", "D", Freq(DAY, "ns")),
        ("7D", "W", Freq(7 * DAY, "ns")),
        ("W", "W", Freq(7 * DAY, "ns")),
        ("MS", "MS", Freq(1, "MS")),
        ("M", "ME", Freq(1, "ME")),
        ("ME", "ME", Freq(1, "ME")),
        ("Q", "QE", Freq(3, "ME")),
        ("QS", "QS", Freq(3, "MS")),
        ("6MS", "2QS", Freq(6, "MS")),
        ("Y", "YE", Freq(12, "ME")),
        ("YS", "YS", Freq(12, "MS")),
    ],
)
def test_parse_and_canonical_name(text, name, freq):
    assert Freq.parse(text) == freq
    assert freq.name == name == str(freq)
    assert Freq.parse(name) == freq


def test_index_frequencies():
    assert Freq.parse(1, "index") == Freq.parse("1", "index") == Freq(1, "index")
    assert Freq(3, "index").name == "3"
    with pytest.raises(UserError, match="integer step"):
        Freq.parse("h", "index")
    with pytest.raises(UserError, match="does not fit"):
        Freq.parse(Freq(2, "index"), "ns")


@pytest.mark.parametrize("text", ["xx", "B", "h2", "", "1.5h"])
def test_parse_refuses_unknown_spellings(text):
    with pytest.raises(UserError, match="is not a frequency"):
        Freq.parse(text)


def test_zero_step_is_refused():
    with pytest.raises(UserError, match="step forward"):
        Freq.parse("0h")


def test_infer_fixed_with_gaps_takes_the_most_common_step():
    ts = np.array([0, 1, 2, 3, 5, 6, 9]) * H
    assert Freq.infer(ts) == Freq(H, "ns")
    assert Freq.infer(np.array([7])) is None
    assert Freq.infer(np.array([0, 4, 8, 12]), "index") == Freq(4, "index")


def test_infer_calendar_months():
    starts = np.arange("2019-11", "2021-03", dtype="M8[M]")
    month_start = starts.astype("M8[ns]").astype(np.int64)
    month_end = ((starts + 1).astype("M8[D]") - 1).astype("M8[ns]").astype(np.int64)
    assert Freq.infer(month_start) == Freq(1, "MS")
    assert Freq.infer(month_end) == Freq(1, "ME")
    assert Freq.infer(month_start[::3]) == Freq(3, "MS")
    assert Freq.infer(month_end[::12]) == Freq(12, "ME")
    # Mid-month dates 30 days apart are a fixed step, not months.
    assert Freq.infer(np.arange(5) * 30 * DAY + 14 * DAY) == Freq(30 * DAY, "ns")


def test_month_end_steps_keep_the_last_day_and_time_of_day():
    f = Freq.parse("ME")
    start = _ns("2020-01-31T23:00")
    got = [format_time(t, "ns") for t in f.step(start, np.arange(4))]
    assert got == ["2020-01-31 23:00:00", "2020-02-29 23:00:00", "2020-03-31 23:00:00",
                   "2020-04-30 23:00:00"]  # fmt: skip
    k, on = f.position(start, np.array([_ns("2020-03-31T23:00"), _ns("2020-03-30T23:00")]))
    assert k[0] == 2 and on.tolist() == [True, False]


def test_format_time():
    assert format_time(_ns("2016-07-01T00:00"), "ns") == "2016-07-01 00:00:00"
    assert format_time(_ns("2016-07-01T00:00") + 5, "ns") == "2016-07-01 00:00:00.000000005"
    assert format_time(42, "index") == "42"


_FIXED = st.sampled_from(["ns", "us", "ms", "s", "min", "h", "D", "W"])
_START = st.integers(min_value=-(4 * 10**18), max_value=4 * 10**18)
_NS_LIMIT = 9 * 10**18  # int64 nanoseconds reach about +-292 years around 1970


def _month_aligned(ts: np.ndarray) -> bool:
    """Every timestamp at one time of day on the first (or every one on the last) day of its
    month: `Freq.infer` reads such steps of 28 days or more as calendar months, by design."""
    day = ts.astype("M8[ns]").astype("M8[D]")
    tod = ts - day.astype("M8[ns]").astype(np.int64)
    month = day.astype("M8[M]")
    first = day == month.astype("M8[D]")
    last = (day + 1).astype("M8[M]") != month
    return bool(np.all(tod == tod[0]) and (first.all() or last.all()))


def test_month_aligned_steps_infer_as_calendar_months():
    # 273 days from 1970-01-01 is 1970-10-01: two month starts read as 9 months, not 273 days.
    ts = np.array([_ns("1970-01-01T00:00"), _ns("1970-10-01T00:00")])
    assert Freq.infer(ts) == Freq(9, "MS")


@settings(max_examples=200, deadline=None)
@given(unit=_FIXED, mult=st.integers(1, 1000), start=_START, length=st.integers(2, 50))
def test_fixed_step_round_trip(unit, mult, start, length):
    f = Freq.parse(f"{mult}{unit}")
    assume(abs(start) + f.n * length < _NS_LIMIT)
    ts = f.step(start, np.arange(length))
    assume(f.n < 28 * NS_PER["D"] or not _month_aligned(ts))
    assert np.all(np.diff(ts) == f.n)
    assert Freq.infer(ts) == f
    k, on = f.position(start, ts)
    assert k.tolist() == list(range(length)) and on.all()
    assert Freq.parse(f.name) == f


@settings(max_examples=200, deadline=None)
@given(
    unit=_FIXED, mult=st.integers(2, 1000), start=_START, k=st.integers(0, 10**4),
    frac=st.floats(0.01, 0.99),
)  # fmt: skip
def test_points_between_steps_are_off_grid(unit, mult, start, k, frac):
    f = Freq.parse(f"{mult}{unit}")
    assume(abs(start) + f.n * (k + 1) < _NS_LIMIT)
    t = f.step(start, k) + max(1, int(frac * f.n))
    k_found, on = f.position(start, np.array([t]))
    assert not on[0] and k_found[0] == k


@settings(max_examples=200, deadline=None)
@given(
    month=st.integers(-12 * 60, 12 * 200),  # 1910 .. 2170
    n=st.sampled_from([1, 2, 3, 6, 12, 24]),
    anchor=st.sampled_from(["MS", "ME"]),
    hour=st.integers(0, 23),
    length=st.integers(2, 40),
)
def test_calendar_step_round_trip(month, n, anchor, hour, length):
    f = Freq(n, anchor)
    m = np.datetime64(month, "M")
    day = m.astype("M8[D]") if anchor == "MS" else (m + 1).astype("M8[D]") - 1
    start = int((day.astype("M8[ns]") + np.timedelta64(hour, "h")).astype(np.int64))
    ts = f.step(start, np.arange(length))
    months = ts.astype("M8[ns]").astype("M8[M]").astype(np.int64)
    assert np.all(np.diff(months) == n)
    days = ts.astype("M8[ns]").astype("M8[D]")
    if anchor == "MS":
        assert np.all(days == days.astype("M8[M]").astype("M8[D]"))
    else:
        assert np.all((days + 1).astype("M8[M]") != days.astype("M8[M]"))
    assert np.all((ts - days.astype("M8[ns]").astype(np.int64)) == hour * H)
    assert Freq.infer(ts) == f
    k, on = f.position(start, ts)
    assert k.tolist() == list(range(length)) and on.all()
    assert Freq.parse(f.name) == f
