"""Frequencies of time series: parse them, infer them, and step along their grid.

A `Freq` is either a fixed step (nanoseconds for datetime series, or an integer for series
indexed by integers) or a calendar step of whole months anchored to the start or the end of
the month, which a fixed number of nanoseconds cannot express (months have 28 to 31 days):

    Freq.parse("15min")            fixed, 900 s          Freq.parse("MS")  month start
    Freq.parse("Q")                3 months, month end   Freq.parse(7, time_unit="index")
    Freq.infer(ts_ns, "ns")        the most common positive step of a sorted series
    f.step(start, k)               the k-th point of the grid that starts at `start`
    f.position(start, ts)          (k, on_grid) for timestamps: the inverse of `step`
    f.name                         the canonical string kept in a store's attrs ("h", "3MS")

Datetimes are int64 nanoseconds since the epoch, without a time zone. Calendar steps keep the
time of day of `start` (a series of month ends at 23:00 stays at 23:00). Quarterly and yearly
steps count from the series start; they are not tied to calendar quarters.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tsforge.errors import UserError

NS_PER = {
    "W": 7 * 86_400 * 10**9,
    "D": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "min": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}
# Spellings accepted by `parse` (pandas' aliases included), mapped to (unit, multiple).
_ALIASES: dict[str, tuple[str, int]] = {
    **{k: (k, 1) for k in NS_PER},
    "w": ("W", 1),
    "d": ("D", 1),
    "H": ("h", 1),
    "T": ("min", 1),
    "S": ("s", 1),
    "L": ("ms", 1),
    "U": ("us", 1),
    "N": ("ns", 1),
    "MS": ("MS", 1),
    "M": ("ME", 1),
    "ME": ("ME", 1),
    "QS": ("MS", 3),
    "Q": ("ME", 3),
    "QE": ("ME", 3),
    "YS": ("MS", 12),
    "AS": ("MS", 12),
    "Y": ("ME", 12),
    "YE": ("ME", 12),
    "A": ("ME", 12),
}
CALENDAR = ("MS", "ME")
MAX_STEP = 2**62  # steps are int64, and a step is added to int64 times: keep headroom
UNITS = ("index", "ns", *CALENDAR)
_DAY = NS_PER["D"]
_HELP = (
    "use a number and one of W, D, h, min, s, ms, us, ns, MS, ME (or M), QS, QE (or Q), "
    "YS, YE (or Y)"
)


@dataclasses.dataclass(frozen=True)
class Freq:
    """`n` steps of `unit`: "index" (integer time), "ns" (fixed duration), "MS"/"ME" (months)."""

    n: int
    unit: str

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {UNITS}")
        if int(self.n) < 1:
            raise UserError(f"a frequency must step forward, got {self.n} {self.unit}")
        if int(self.n) > MAX_STEP:
            raise UserError(f"a step of {self.n} {self.unit} is longer than time can count")
        object.__setattr__(self, "n", int(self.n))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | int | Freq, time_unit: str = "ns") -> Freq:
        """A frequency from its string (`"h"`, `"15min"`, `"MS"`, `"2Q"`) or an integer step.

        `time_unit` is the store's: "ns" for datetimes, "index" for integer time, where the
        frequency must be a positive integer.
        """
        if isinstance(text, Freq):
            freq = text
        elif time_unit == "index":
            if isinstance(text, (int, np.integer)) or re.fullmatch(r"\s*\d+\s*", str(text)):
                if not 1 <= int(text) <= MAX_STEP:
                    raise UserError(
                        f"--freq '{text}' is not a step forward that time can count: give a "
                        "positive integer step such as --freq 1"
                    )
                return cls(int(text), "index")
            raise UserError(
                f"--freq '{text}' is a duration but the time column holds integers: "
                "pass an integer step such as --freq 1"
            )
        else:
            m = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)\s*", str(text))
            if not m or m.group(2) not in _ALIASES:
                raise UserError(f"--freq '{text}' is not a frequency: {_HELP}")
            unit, mult = _ALIASES[m.group(2)]
            k = int(m.group(1) or 1) * mult
            n = k if unit in CALENDAR else k * NS_PER[unit]
            if not 1 <= n <= MAX_STEP:
                raise UserError(
                    f"--freq '{text}' is not a step forward that time can count: give a "
                    "positive step such as 1h, 15min or 3MS"
                )
            freq = cls(n, unit if unit in CALENDAR else "ns")
        if (freq.unit == "index") != (time_unit == "index"):
            raise UserError(
                f"--freq {freq.name} does not fit a time column of "
                f"{'integers' if time_unit == 'index' else 'datetimes'}"
            )
        return freq

    @classmethod
    def infer(cls, ts: np.ndarray, time_unit: str = "ns") -> Freq | None:
        """The most common positive step of sorted timestamps, or None with fewer than two.

        Datetime steps of 28 days or more are read as calendar months when every timestamp
        sits at the same time of day on the first (or the last) day of its month.
        """
        ts = np.asarray(ts, dtype=np.int64)
        diffs = np.diff(ts)
        diffs = diffs[diffs > 0]
        if not len(diffs):
            return None
        step = _mode(diffs)
        if time_unit == "index":
            return cls(step, "index")
        if step >= 28 * _DAY:
            months = _months(ts)
            month_steps = np.diff(months)
            month_steps = month_steps[month_steps > 0]
            for unit in CALENDAR:
                anchor = _anchor(months, unit)
                tod = ts - anchor
                if len(month_steps) and np.all(tod == tod[0]) and 0 <= tod[0] < _DAY:
                    return cls(_mode(month_steps), unit)
        return cls(step, "ns")

    # -- arithmetic ---------------------------------------------------------------------
    @property
    def is_calendar(self) -> bool:
        return self.unit in CALENDAR

    def step(self, start: int, k: int | np.ndarray) -> int | np.ndarray:
        """The k-th point (k may be an array) of the grid that starts at `start`."""
        if not self.is_calendar:
            out = np.int64(start) + np.asarray(k, dtype=np.int64) * np.int64(self.n)
            return int(out) if np.ndim(out) == 0 else out
        m0 = _months(np.int64(start))
        tod = np.int64(start) - _anchor(m0, self.unit)
        out = _anchor(m0 + np.asarray(k, dtype=np.int64) * self.n, self.unit) + tod
        return int(out) if np.ndim(out) == 0 else out

    def position(self, start: int, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, on_grid) for each timestamp: `ts == step(start, k)` exactly where on_grid."""
        ts = np.asarray(ts, dtype=np.int64)
        if not self.is_calendar:
            d = ts - np.int64(start)
            return d // self.n, d % self.n == 0
        dm = _months(ts) - _months(np.int64(start))
        k = dm // self.n
        return k, (dm % self.n == 0) & (self.step(start, k) == ts)

    # -- names --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical string: `parse(f.name) == f` (with the matching time_unit)."""
        if self.unit == "index":
            return str(self.n)
        if self.is_calendar:
            edge = self.unit[1]  # "S" | "E"
            for base, months in (("Y", 12), ("Q", 3), ("M", 1)):
                if self.n % months == 0:
                    return _times(self.n // months) + base + edge
        for base, ns in NS_PER.items():
            if self.n % ns == 0:
                return _times(self.n // ns) + base
        raise AssertionError("unreachable: every step is a multiple of 1 ns")

    def __str__(self) -> str:
        return self.name


def format_time(t: int, time_unit: str) -> str:
    """A timestamp for messages: `2016-07-01 00:00:00`, or the integer for index time."""
    if time_unit == "index":
        return str(int(t))
    t = int(t)
    unit = "s" if t % 10**9 == 0 else "ns"
    return str(np.datetime64(t, "ns").astype(f"M8[{unit}]")).replace("T", " ")


def _times(k: int) -> str:
    return "" if k == 1 else str(k)


def _mode(x: np.ndarray) -> int:
    """The most common value (the smallest among ties)."""
    values, counts = np.unique(x, return_counts=True)
    return int(values[np.argmax(counts)])


def _months(ts_ns) -> np.ndarray:
    """Months since 1970-01 of ns timestamps."""
    return np.asarray(ts_ns, dtype=np.int64).astype("M8[ns]").astype("M8[M]").astype(np.int64)


def _anchor(months, unit: str) -> np.ndarray:
    """Midnight of the first ("MS") or last ("ME") day of the given months, in ns."""
    months = np.asarray(months, dtype=np.int64)
    if unit == "MS":
        return months.astype("M8[M]").astype("M8[ns]").astype(np.int64)
    return (months + 1).astype("M8[M]").astype("M8[ns]").astype(np.int64) - _DAY
