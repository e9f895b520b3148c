"""The synthetic dataset: seeded series with trend, seasonalities, level shifts, noise, missing
values and covariates, generated in vectorised blocks and streamed to a store or a CSV file.

    from tsforge.data import synthetic
    store = synthetic.build_store("synth.zarr", n_series=100_000, n_futr_exog=2, n_static=1)
    summary = synthetic.write_csv("synth.csv", n_series=1_000, missing_rate=0.01)  # long format
    for s in synthetic.iter_series(n_series=10, seed=3): ...

Each series (target channel c, step t, absolute time tau) is

    y = level * (1 + trend * t / max_length)           trend
      + sum over periods P of sum_k a_k sin(2 pi k tau / P + phi_k)   daily, weekly, yearly
      + level shifts at random steps
      + beta * hist(t - 6)                            a leading historical covariate
      + effect * event(t)                             planned events, known ahead
      + noise                                         a few percent of the level

Seasonal phases follow the calendar (tau), so calendar covariates (hour of day, day of week,
...) carry real information about the future. Series are made a block at a time, every
random draw shaped for a whole block, so the cost is a few numpy calls per block and memory
is one block; the same arguments give the same values, and the first k series do not depend
on `n_series`. Changing the formulas changes `GENERATOR_VERSION`, which keys cached stores.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tsforge.data import splits
from tsforge.data.freq import NS_PER, Freq
from tsforge.data.store import Codec, ColumnRoles, Store, StoreWriter
from tsforge.errors import UserError

GENERATOR_VERSION = 1

_SECOND_NS, _DAY_NS = NS_PER["s"], NS_PER["D"]
# Seasonal periods and how many harmonics each gets; a period is used when a series of
# max_length steps holds at least one cycle of it and one cycle spans two steps or more.
_PERIODS = (("day", _DAY_NS, 3), ("week", 7 * _DAY_NS, 2), ("year", 365.2425 * _DAY_NS, 2))
# Relative amplitude ranges of each seasonality (fraction of the level).
_AMPLITUDE = {"day": (0.2, 0.5), "week": (0.05, 0.25), "year": (0.1, 0.3)}
# Calendar covariates, most informative first, each scaled to [-0.5, 0.5] as in the
# Informer-style "timeF" encodings, with the length of their cycle.
_CALENDAR = (
    ("hour_of_day", _DAY_NS),
    ("day_of_week", 7 * _DAY_NS),
    ("day_of_year", 366 * _DAY_NS),
    ("minute_of_hour", 3600 * _SECOND_NS),
    ("day_of_month", 28 * _DAY_NS),
)
_HIST_LAG = 6  # steps by which a historical covariate leads the target
_STATIC_NAMES = ("log_level", "seasonal_strength")
_MAX_BLOCK_SERIES = 256
_BLOCK_VALUES = 1 << 18  # series x max_length per block: a few MiB of float64 per channel


@dataclasses.dataclass(frozen=True)
class Series:
    """One generated series; `values_TC` columns are targets, historical, future-known."""

    uid: str
    start: int  # first timestamp, ns since the epoch
    values_TC: np.ndarray  # [T, C] float32
    static_S: np.ndarray  # [S] float32


def step_ns(freq: str) -> int:
    """Step in ns of a fixed frequency such as 'h', '15min', 'D', '2W' (read by `Freq.parse`,
    as everywhere else); calendar frequencies (months, quarters, years) are refused."""
    try:
        parsed = Freq.parse(str(freq))
    except UserError:
        parsed = None
    if parsed is None or parsed.is_calendar:
        raise UserError(
            f"synthetic freq '{freq}' is not supported: use a fixed step such as "
            "'s', '15min', 'h', '6h', 'D' or 'W'"
        )
    return parsed.n


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """The generator's arguments, validated once."""

    n_series: int
    seed: int = 0
    min_length: int = 200
    max_length: int = 1000
    freq: str = "h"
    n_channels: int = 1
    n_hist_exog: int = 0
    n_futr_exog: int = 0
    n_static: int = 0
    missing_rate: float = 0.0
    start: str = "2020-01-01"

    def __post_init__(self):
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(f"synthetic data: {what}")

        # Values may come from a config file as text or floats: coerce them, or say which.
        for f in dataclasses.fields(self):
            kind = {"int": int, "float": float, "str": str}[f.type]
            value = getattr(self, f.name)
            try:
                ok = kind is not int or float(value) == int(value)
                object.__setattr__(self, f.name, kind(value))
            except (TypeError, ValueError):
                ok = False
            need(ok, f"{f.name} must be {'an' if kind is int else 'a'} {f.type}, got {value!r}")
        need(self.n_series >= 1, f"n_series must be >= 1, got {self.n_series}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(
            1 <= self.min_length <= self.max_length,
            f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}",
        )
        need(self.n_channels >= 1, f"n_channels must be >= 1, got {self.n_channels}")
        for name in ("n_hist_exog", "n_futr_exog", "n_static"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        need(
            0.0 <= self.missing_rate < 1.0,
            f"missing_rate must be in [0, 1), got {self.missing_rate}",
        )
        step_ns(self.freq)
        self.start_ns  # noqa: B018 - validates the start date

    @property
    def step_ns(self) -> int:
        return step_ns(self.freq)

    @property
    def start_ns(self) -> int:
        try:
            return int(np.datetime64(self.start, "ns").astype(np.int64))
        except ValueError:
            raise UserError(
                f"synthetic start '{self.start}' is not a date: use e.g. '2020-01-01'"
            ) from None

    @property
    def periods(self) -> list[tuple[str, float, int]]:
        step, span = self.step_ns, self.step_ns * self.max_length
        return [(n, p, k) for n, p, k in _PERIODS if 2 * step <= p <= span]

    @property
    def calendar(self) -> list[str]:
        # A feature whose cycle is a multiple of the step is constant: hour_of_day on daily data.
        return [name for name, cycle in _CALENDAR if self.step_ns % cycle]

    @property
    def roles(self) -> ColumnRoles:
        c = self.n_channels
        target = ["y"] if c == 1 else [f"y_{i}" for i in range(c)]
        cal = self.calendar[: self.n_futr_exog]
        futr = cal + [f"event_{i}" for i in range(self.n_futr_exog - len(cal))]
        static = list(_STATIC_NAMES[: self.n_static])
        static += [f"static_{i}" for i in range(self.n_static - len(static))]
        hist = [f"hist_{i}" for i in range(self.n_hist_exog)]
        return ColumnRoles(target=target, hist_exog=hist, futr_exog=futr, static=static)

    @property
    def block_series(self) -> int:
        return max(1, min(_MAX_BLOCK_SERIES, _BLOCK_VALUES // self.max_length))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> SyntheticSpec:
        """The spec of `iter_series(**kwargs)`; an unknown argument is a UserError."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in known:
                raise UserError(
                    f"synthetic data has no argument '{key}': use {', '.join(known)}"
                )
        if "n_series" not in kwargs:
            raise UserError("synthetic data needs n_series")
        return cls(**kwargs)


def column_roles(**gen_kwargs) -> ColumnRoles:
    """The columns `iter_series(**gen_kwargs)` produces, by role."""
    return SyntheticSpec.from_kwargs(gen_kwargs).roles


def iter_series(
    *,
    n_series: int,
    seed: int = 0,
    min_length: int = 200,
    max_length: int = 1000,
    freq: str = "h",
    n_channels: int = 1,
    n_hist_exog: int = 0,
    n_futr_exog: int = 0,
    n_static: int = 0,
    missing_rate: float = 0.0,
    start: str = "2020-01-01",
) -> Iterator[Series]:
    """Yield `n_series` series lazily, one vectorised block at a time."""
    spec = SyntheticSpec(
        n_series=n_series, seed=seed, min_length=min_length, max_length=max_length, freq=freq,
        n_channels=n_channels, n_hist_exog=n_hist_exog, n_futr_exog=n_futr_exog,
        n_static=n_static, missing_rate=missing_rate, start=start,
    )
    return _iter(spec)


def _iter(spec: SyntheticSpec) -> Iterator[Series]:
    width = max(7, len(str(spec.n_series - 1)))
    per_block = spec.block_series
    for b in range(-(-spec.n_series // per_block)):
        block = _Block(spec, b)
        first = b * per_block
        for j in range(min(per_block, spec.n_series - first)):
            n = int(block.lengths[j])
            yield Series(
                uid=f"synth-{first + j:0{width}d}",
                start=int(block.starts[j]),
                values_TC=np.ascontiguousarray(block.values_BTC[j, :n]),
                static_S=block.static_BS[j],
            )


class _Block:
    """All series of block `b`, drawn at full block size so that series do not depend on
    how many of the block are kept. Each component has its own random stream so adding a
    covariate does not change the draws of the others."""

    def __init__(self, spec: SyntheticSpec, b: int):
        B, T, C = spec.block_series, spec.max_length, spec.n_channels
        rng = {k: np.random.default_rng([spec.seed, b, i]) for i, k in enumerate(
            ("shape", "target", "shifts", "noise", "hist", "events", "static", "missing"))}
        step = spec.step_ns
        self.lengths = rng["shape"].integers(spec.min_length, spec.max_length + 1, B)
        offsets = rng["shape"].integers(0, spec.max_length, B)
        self.starts = spec.start_ns + offsets * step
        t = np.arange(T)
        tau_BT = self.starts[:, None] + t[None, :] * step  # int64 ns, exact

        # Level and trend, per series and target channel.
        r = rng["target"]
        level_BC = np.exp(r.normal(3.0, 1.0, (B, C)))
        trend_BC = r.normal(0.0, 0.3, (B, C))
        y_BCT = level_BC[..., None] * (1.0 + trend_BC[..., None] * (t / T))
        strength_BC = np.zeros((B, C))
        for name, period, harmonics in _PERIODS:
            amp_BC = level_BC * r.uniform(*_AMPLITUDE[name], (B, C))
            phase_BCK = r.uniform(0, 2 * np.pi, (B, C, harmonics))
            if (name, period, harmonics) not in spec.periods:
                continue  # drawn anyway, so the draws after it do not move
            strength_BC += amp_BC / level_BC
            angle_BT = 2 * np.pi * (np.mod(tau_BT, period) / period)
            for k in range(1, harmonics + 1):
                y_BCT += (amp_BC / k)[..., None] * np.sin(
                    k * angle_BT[:, None, :] + phase_BCK[..., k - 1, None]
                )

        # Level shifts: up to two per series and channel, at uniform steps.
        r = rng["shifts"]
        n_shifts = 2
        at_BCS = r.integers(0, T, (B, C, n_shifts))
        size_BCS = r.normal(0.0, 0.15, (B, C, n_shifts)) * (r.random((B, C, n_shifts)) < 0.3)
        for s in range(n_shifts):
            after = t[None, None, :] >= at_BCS[..., s, None]
            y_BCT += np.where(after, (size_BCS[..., s] * level_BC)[..., None], 0.0)

        # A historical covariate leads the target by _HIST_LAG steps: its past helps.
        hist_BHT = np.zeros((B, spec.n_hist_exog, T))
        if spec.n_hist_exog:
            r = rng["hist"]
            e = r.normal(size=(B, spec.n_hist_exog, T + _HIST_LAG + 8))
            smooth = np.cumsum(e, axis=-1)
            smooth = (smooth[..., 8:] - smooth[..., :-8]) / np.sqrt(8.0)  # moving sum, unit var
            hist_BHT = smooth[..., _HIST_LAG:]
            beta_BCH = r.normal(0.0, 0.1, (B, C, spec.n_hist_exog))
            y_BCT += np.einsum(
                "bch,bht->bct", beta_BCH * level_BC[..., None], smooth[..., :T]
            )

        # Future-known covariates: calendar features, then planned events with an effect.
        cal = spec.roles.futr_exog
        n_cal = sum(1 for name in cal if not name.startswith("event_"))
        futr_BFT = np.zeros((B, spec.n_futr_exog, T))
        for f, name in enumerate(cal[:n_cal]):
            futr_BFT[:, f] = _calendar_feature(name, tau_BT)
        n_events = spec.n_futr_exog - n_cal
        if n_events:
            r = rng["events"]
            flags_BET = (r.random((B, n_events, T)) < 0.05).astype(np.float64)
            effect_BCE = r.uniform(0.2, 0.5, (B, C, n_events)) * level_BC[..., None]
            y_BCT += np.einsum("bce,bet->bct", effect_BCE, flags_BET)
            futr_BFT[:, n_cal:] = flags_BET

        noise_BC = level_BC * rng["noise"].uniform(0.02, 0.08, (B, C))
        y_BCT += noise_BC[..., None] * rng["noise"].normal(size=(B, C, T))

        observed = np.concatenate([y_BCT, hist_BHT], axis=1)
        if spec.missing_rate > 0:
            drop = rng["missing"].random(observed.shape) < spec.missing_rate
            observed = np.where(drop, np.nan, observed)
        values_BCT = np.concatenate([observed, futr_BFT], axis=1)
        self.values_BTC = values_BCT.transpose(0, 2, 1).astype(np.float32)

        known = np.stack([np.log(level_BC[:, 0]), strength_BC[:, 0]], axis=1)
        extra = rng["static"].normal(size=(B, max(0, spec.n_static - known.shape[1])))
        self.static_BS = np.concatenate([known, extra], axis=1)[:, : spec.n_static].astype(
            np.float32
        )



def _calendar_feature(name: str, tau_BT: np.ndarray) -> np.ndarray:
    days = tau_BT // _DAY_NS
    if name == "minute_of_hour":
        return (tau_BT // (60 * _SECOND_NS)) % 60 / 59.0 - 0.5
    if name == "hour_of_day":
        return (tau_BT // (3600 * _SECOND_NS)) % 24 / 23.0 - 0.5
    if name == "day_of_week":
        return (days + 3) % 7 / 6.0 - 0.5  # 1970-01-01 was a Thursday; Monday is 0
    d = days.astype("datetime64[D]")
    if name == "day_of_month":
        return (d - d.astype("datetime64[M]")).astype(np.int64) / 30.0 - 0.5
    return (d - d.astype("datetime64[Y]")).astype(np.int64) / 365.0 - 0.5  # day_of_year


def build_store(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    split: str | dict = "ratio_70_10_20",
    codec: Codec | None = None,
    chunk_rows: int | None = None,
    **gen_kwargs,
) -> Store:
    """Generate series into a new store at `out` (streamed: memory is one block)."""
    spec = SyntheticSpec.from_kwargs(gen_kwargs)
    split_spec = splits.parse(split, "split")
    with StoreWriter(
        out, roles=spec.roles, freq=spec.freq, codec=codec or Codec(), chunk_rows=chunk_rows,
        overwrite=overwrite,
    ) as writer:
        for s in _iter(spec):
            writer.add_series(s.uid, s.start, s.values_TC, s.static_S)
        source = {"name": "synthetic", "generator_version": GENERATOR_VERSION, **spec.to_dict()}
        return writer.commit(splits=split_spec, extra_attrs={"source": source})


def write_csv(path: str | os.PathLike, **gen_kwargs) -> dict:
    """Write the series as a long CSV (`unique_id, ds, <targets>, <hist>, <futr>, <static>`),
    a block at a time; missing values are empty cells. Returns the column roles and sizes,
    ready to pass to ingest."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    spec = SyntheticSpec.from_kwargs(gen_kwargs)
    roles = spec.roles
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    names = ["unique_id", "ds", *roles.value_columns, *roles.static]
    schema = pa.schema(
        [("unique_id", pa.string()), ("ds", pa.timestamp("s"))]
        + [(n, pa.float32()) for n in names[2:]]
    )
    n_rows, batch = 0, []
    try:
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        with open(tmp, "wb") as fh, pacsv.CSVWriter(fh, schema, write_options=options) as writer:
            fh.write((",".join(names) + "\n").encode())  # unquoted, as most tools write it
            for i, s in enumerate(_iter(spec), start=1):
                batch.append(s)
                if len(batch) == spec.block_series or i == spec.n_series:
                    writer.write_table(_csv_table(batch, spec.step_ns, schema))
                    n_rows += sum(len(x.values_TC) for x in batch)
                    batch = []
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(path),
        "n_series": spec.n_series,
        "n_rows": n_rows,
        "freq": spec.freq,
        **roles.to_dict(),
    }


def _csv_table(batch: list[Series], step_ns: int, schema):
    import pyarrow as pa

    lengths = np.array([len(s.values_TC) for s in batch])
    values = np.concatenate([s.values_TC for s in batch])
    static = np.repeat(np.stack([s.static_S for s in batch]), lengths, axis=0)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ds = np.repeat([s.start for s in batch], lengths) + offset * step_ns
    cols = [
        pa.array(np.repeat([s.uid for s in batch], lengths), pa.string()),
        pa.array(ds // _SECOND_NS, pa.int64()).cast(pa.timestamp("s")),
    ]
    cols += [pa.array(col, pa.float32(), from_pandas=True) for col in values.T]
    cols += [pa.array(col, pa.float32()) for col in static.T]
    return pa.Table.from_arrays(cols, schema=schema)
