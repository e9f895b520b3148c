"""The chunked Zarr store: a "CSR panel" of many time series.

One Zarr v3 group per dataset:

    values[T_total, C]   float32, every series' rows one after another; columns are the
                         targets first, then time-varying covariates (historical, future-known)
    indptr[n_series+1]   int64, series i is rows indptr[i]:indptr[i+1]
    series/id[n]         str
    series/start[n]      int64, first timestamp (ns since epoch) or first integer index
    series/static[n, S]  float32, static covariates (only when S > 0)
    series/stats/{count,mean,std,min,max}[n, C]   over each series' finite values
    attrs                schema_version, freq, time_unit, columns, roles, splits,
                         fingerprint, codec, chunk_rows, n_series, n_timesteps, n_channels

No per-window index is stored: window counts follow from `indptr`. A `StoreWriter` writes to
a temporary folder beside the target and renames it into place on `commit()`, so a failed
write leaves nothing at the target path; with `overwrite=True` it replaces only a store (one
that `is_store` recognises by its metadata), swapped in atomically once the new one is
complete (`tsforge.data.outputs.place`). Values are appended chunk by chunk, so writing never
holds more than one chunk of rows plus O(n_series) metadata. `Store` checks the metadata it
opens, so a folder that is not a store, or a store whose metadata was damaged, is a
`UserError` naming the path rather than a failure later on.

    with StoreWriter("data.zarr", columns=["y"], roles=ColumnRoles(target=["y"]), freq="h") as w:
        w.add_series("a", start_ns, values_TC)
        store = w.commit()
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from tsforge.data.outputs import place
from tsforge.errors import UserError

SCHEMA_VERSION = 1
DEFAULT_CHUNK_BYTES = 512 * 1024  # decoded chunk size to aim for: 256 KiB - 1 MiB
TIME_UNITS = ("ns", "index")
_STATS = ("count", "mean", "std", "min", "max")
CNAMES = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")  # what Blosc builds here (not snappy)
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
CLEVELS = range(10)
# Attributes every store carries, with their types: what `is_store` and `Store` look for.
_ATTR_TYPES = {
    "schema_version": int,
    "freq": str,
    "time_unit": str,
    "columns": list,
    "roles": dict,
    "splits": dict,
    "codec": dict,
    "fingerprint": str,
    "n_series": int,
}
# What Zarr and its codecs raise for a chunk that does not decode (blosc: RuntimeError).
_DAMAGED = (RuntimeError, ValueError, zarr.errors.BaseZarrError)
_MAX_META_BYTES = 16 << 20  # a store's zarr.json is a few KiB; never read a huge one whole


@dataclasses.dataclass(frozen=True)
class ColumnRoles:
    """What each column of `values` (and of `series/static`) is for."""

    target: tuple[str, ...]
    hist_exog: tuple[str, ...] = ()  # known up to the forecast start only
    futr_exog: tuple[str, ...] = ()  # known over the horizon too (calendar, prices, ...)
    static: tuple[str, ...] = ()  # one value per series

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if not self.target:
            raise UserError("no target column given: name at least one with --target")
        seen: set[str] = set()
        for name in self.value_columns + self.static:
            if name in seen:
                raise UserError(f"column '{name}' has two roles: give each column one role")
            seen.add(name)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Columns of `values`, in order: targets, historical, future-known covariates."""
        return self.target + self.hist_exog + self.futr_exog

    def to_dict(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class Codec:
    """The compressor of `values`, always explicit (never a library default)."""

    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "shuffle"  # "noshuffle" | "shuffle" | "bitshuffle"

    def build(self, typesize: int = 4) -> BloscCodec:
        # Checked here, with the option to fix: Blosc itself accepts a clevel out of range
        # and names it only when the first chunk fails to compress.
        if self.cname not in CNAMES:
            raise UserError(f"--codec '{self.cname}' is not one of {'|'.join(CNAMES)}")
        if self.shuffle not in SHUFFLES:
            raise UserError(f"--shuffle '{self.shuffle}' is not one of {'|'.join(SHUFFLES)}")
        if isinstance(self.clevel, bool) or self.clevel not in CLEVELS:
            raise UserError(f"--clevel {self.clevel} is out of range: give a level from 0 to 9")
        try:
            return BloscCodec(
                cname=self.cname, clevel=self.clevel, shuffle=self.shuffle, typesize=typesize
            )
        except (ValueError, TypeError) as err:
            raise UserError(
                f"codec {self.cname}/clevel={self.clevel}/{self.shuffle} is not valid ({err}): "
                "use cname lz4|lz4hc|zstd|zlib|blosclz, clevel 0-9, "
                "shuffle noshuffle|shuffle|bitshuffle"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": "blosc", **dataclasses.asdict(self)}


def chunk_rows_for(n_channels: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one decoded float32 chunk is about `chunk_bytes`."""
    return max(1024, int(chunk_bytes) // (4 * max(1, n_channels)))


class _Grow:
    """An append-only numpy array that doubles its capacity: O(n) memory, no per-row objects."""

    def __init__(self, width: int, dtype):
        self.data = np.empty((1024, width) if width else (1024,), dtype=dtype)
        self.n = 0

    def append(self, row) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = row
        self.n += 1

    def array(self) -> np.ndarray:
        return self.data[: self.n].copy()


class _Stats:
    """Per-series, per-channel count/mean/std/min/max of finite values, kept O(n_series)."""

    def __init__(self, n_channels: int):
        self.cols = {k: _Grow(n_channels, np.int64 if k == "count" else np.float32) for k in _STATS}

    def add(self, values_TC: np.ndarray) -> None:
        finite = np.isfinite(values_TC)
        count = finite.sum(0)
        x = np.where(finite, values_TC, 0.0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = x.sum(0) / count
            var = np.where(finite, (x - mean) ** 2, 0.0).sum(0) / count
            lo = np.where(finite, values_TC, np.inf).min(0, initial=np.inf)
            hi = np.where(finite, values_TC, -np.inf).max(0, initial=-np.inf)
        empty = count == 0
        for name, arr in (("mean", mean), ("std", np.sqrt(var)), ("min", lo), ("max", hi)):
            self.cols[name].append(np.where(empty, np.nan, arr))
        self.cols["count"].append(count)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: col.array() for name, col in self.cols.items()}


class StoreWriter:
    """Writes a store series by series into a temporary folder; `commit()` renames it in place.

    Memory is one chunk of rows plus O(n_series) metadata, whatever the input size.
    Used as a context manager, an exception aborts the write and removes the temporary folder.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        roles: ColumnRoles,
        freq: str,
        time_unit: str = "ns",
        codec: Codec = Codec(),
        chunk_rows: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        if os.path.lexists(self.path) and not overwrite:
            raise UserError(f"{self.path} already exists: pass --overwrite or choose another --out")
        if os.path.lexists(self.path) and not is_store(self.path):
            raise UserError(
                f"{self.path} is not a tsforge store, so --overwrite will not replace it: "
                "remove it yourself or choose another --out"
            )
        if time_unit not in TIME_UNITS:
            raise UserError(f"time_unit '{time_unit}' is not one of {TIME_UNITS}")
        self.roles = roles
        self.freq = freq
        self.time_unit = time_unit
        self.codec = codec
        self.n_channels = len(roles.value_columns)
        self.n_static = len(roles.static)
        self.chunk_rows = int(chunk_rows or chunk_rows_for(self.n_channels, chunk_bytes))
        if self.chunk_rows < 1:
            raise UserError(f"--chunk-rows must be at least 1, got {self.chunk_rows}")
        compressor = codec.build()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._done = False
        try:
            self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
            self.values = self.group.create_array(
                "values",
                shape=(0, self.n_channels),
                chunks=(self.chunk_rows, self.n_channels),
                dtype="float32",
                compressors=compressor,
                fill_value=np.nan,
            )
        except BaseException:
            # Not yet a context manager's: nobody else would remove the folder.
            self.abort()
            raise
        self._buf = np.empty((self.chunk_rows, self.n_channels), dtype=np.float32)
        self._buf_rows = 0
        self._written = 0
        self._lengths = _Grow(0, np.int64)
        self._ids: list[str] = []
        self._starts = _Grow(0, np.int64)
        self._static = _Grow(self.n_static, np.float32)
        self._stats = _Stats(self.n_channels)
        self._hash = hashlib.blake2b(digest_size=16)

    # -- writing ------------------------------------------------------------------------
    def add_series(
        self, uid: str, start: int, values_TC: np.ndarray, static_S: np.ndarray | None = None
    ) -> None:
        """Append one series: `values_TC` is [T, C] in `roles.value_columns` order."""
        values_TC = np.asarray(values_TC, dtype=np.float32)
        if values_TC.ndim == 1:
            values_TC = values_TC[:, None]
        if values_TC.ndim != 2 or values_TC.shape[1] != self.n_channels:
            raise ValueError(
                f"series {uid!r}: values must be [T, {self.n_channels}], got {values_TC.shape}"
            )
        if self.n_static:
            static_S = np.asarray(static_S, dtype=np.float32).reshape(self.n_static)
            self._static.append(static_S)
            self._hash.update(static_S.tobytes())
        self._ids.append(str(uid))
        self._starts.append(int(start))
        self._lengths.append(len(values_TC))
        self._stats.add(values_TC)
        self._hash.update(f"{uid}\0{int(start)}\0{len(values_TC)}\0".encode())
        self._hash.update(np.ascontiguousarray(values_TC).tobytes())
        self._append_rows(values_TC)

    def _append_rows(self, rows: np.ndarray) -> None:
        i = 0
        while i < len(rows):
            take = min(self.chunk_rows - self._buf_rows, len(rows) - i)
            self._buf[self._buf_rows : self._buf_rows + take] = rows[i : i + take]
            self._buf_rows += take
            i += take
            if self._buf_rows == self.chunk_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._buf_rows:
            return
        end = self._written + self._buf_rows
        self.values.resize((end, self.n_channels))
        self.values[self._written : end] = self._buf[: self._buf_rows]
        self._written = end
        self._buf_rows = 0

    # -- finishing ----------------------------------------------------------------------
    def commit(self, *, splits: dict | None = None, extra_attrs: dict | None = None) -> Store:
        """Write metadata, rename the temporary folder into place and open the result."""
        if not self._ids:
            raise UserError(f"no series to write to {self.path}: the input holds no usable series")
        self._flush()
        n = len(self._ids)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self._lengths.array(), out=indptr[1:])
        self._array("indptr", indptr)
        series = self.group.create_group("series")
        ids = np.array(self._ids, dtype=object)
        series.create_array("id", shape=(n,), dtype=str, chunks=(min(n, 1 << 16),))[:] = ids
        self._array("start", self._starts.array(), series)
        if self.n_static:
            self._array("static", self._static.array(), series)
        stats = series.create_group("stats")
        for name, arr in self._stats.arrays().items():
            self._array(name, arr, stats)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "freq": self.freq,
            "time_unit": self.time_unit,
            "columns": list(self.roles.value_columns),
            "roles": self.roles.to_dict(),
            "splits": splits or {},
            "codec": self.codec.to_dict(),
            "chunk_rows": self.chunk_rows,
            "n_series": n,
            "n_timesteps": int(indptr[-1]),
            "n_channels": self.n_channels,
        }
        # The fingerprint covers content only: chunking, codec and split presets may differ.
        content = ("freq", "time_unit", "columns", "roles", "n_series", "n_timesteps")
        self._hash.update(repr([(k, meta[k]) for k in content]).encode())
        meta["fingerprint"] = self._hash.hexdigest()
        self.group.attrs.update({**(extra_attrs or {}), **meta})
        # An old store (overwrite=True) stays whole until the new one has taken its place.
        place(self.tmp, self.path)
        self._done = True
        return Store(self.path)

    def _array(self, name: str, arr: np.ndarray, group: Any = None) -> None:
        group = self.group if group is None else group
        chunks = (max(1, min(len(arr), 1 << 18)),) + arr.shape[1:]
        out = group.create_array(
            name, shape=arr.shape, chunks=chunks, dtype=arr.dtype, compressors=Codec().build()
        )
        if arr.size:
            out[...] = arr

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()


class Store:
    """A read-only view of a store. Per-series metadata is loaded (O(n_series)); values stay
    on disk and are read by row ranges."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not os.path.lexists(self.path):
            raise UserError(
                f"store {self.path} does not exist: create it with 'tsforge data ingest'"
            )
        attrs = read_metadata(self.path)
        version = attrs["schema_version"]
        if version != SCHEMA_VERSION:
            raise UserError(
                f"store {self.path} has schema version {version}, this tsforge reads "
                f"{SCHEMA_VERSION}: re-ingest it with this version"
            )
        try:
            self.group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            self.attrs = dict(self.group.attrs)
            self.values = _Values(self.group["values"], self.path)
            indptr = self.group["indptr"]
            if indptr.shape != (attrs["n_series"] + 1,):  # before reading it whole
                raise ValueError(f"indptr has shape {indptr.shape}")
            self.indptr: np.ndarray = indptr[:]
            self.roles = ColumnRoles(**attrs["roles"])
            self._check_layout()
        except MemoryError:  # numpy refuses the claimed size before allocating anything
            raise _not_a_store(self.path, f"its metadata claims {attrs['n_series']:,} series, "
                               "more than memory holds") from None  # fmt: skip
        except (*_DAMAGED, KeyError, TypeError, OSError) as err:
            raise _not_a_store(self.path, f"{type(err).__name__}: {err}") from None
        self._cache: dict[str, np.ndarray] = {}

    def _check_layout(self) -> None:
        """The arrays agree with each other and with the attributes (ValueError if not)."""
        n, columns = self.attrs["n_series"], self.attrs["columns"]
        if list(self.roles.value_columns) != columns:
            raise ValueError(f"columns {columns} are not the roles' {self.roles.value_columns}")
        if self.values.ndim != 2 or self.values.shape[1] != len(columns):
            raise ValueError(f"values has shape {self.values.shape} for {len(columns)} columns")
        ptr = self.indptr
        if ptr.dtype.kind not in "iu" or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
            raise ValueError("indptr is not a run of increasing row offsets from 0")
        if ptr[-1] != self.values.shape[0]:
            raise ValueError(f"indptr ends at {ptr[-1]}, values have {self.values.shape[0]} rows")
        for name in ("id", "start"):
            if self.group[f"series/{name}"].shape != (n,):
                raise ValueError(f"series/{name} does not hold one entry per series")

    # -- metadata -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def freq(self) -> str:
        return self.attrs["freq"]

    @property
    def time_unit(self) -> str:
        return self.attrs["time_unit"]

    @property
    def columns(self) -> list[str]:
        return list(self.attrs["columns"])

    @property
    def splits(self) -> dict:
        return dict(self.attrs.get("splits", {}))

    @property
    def chunk_rows(self) -> int:
        return int(self.values.chunks[0])

    @property
    def n_series(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_timesteps(self) -> int:
        return int(self.indptr[-1])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def column_index(self, names: tuple[str, ...] | list[str]) -> list[int]:
        cols = self.columns
        return [cols.index(n) for n in names]

    def _series(self, name: str) -> np.ndarray:
        if name not in self._cache:
            try:
                self._cache[name] = self.group[f"series/{name}"][:]
            except (*_DAMAGED, KeyError) as err:
                raise _damaged(self.path, f"series/{name}", err) from None
        return self._cache[name]

    @property
    def ids(self) -> np.ndarray:
        return self._series("id")

    @property
    def starts(self) -> np.ndarray:
        return self._series("start")

    @property
    def static(self) -> np.ndarray:
        if not self.roles.static:
            return np.zeros((self.n_series, 0), dtype=np.float32)
        return self._series("static")

    def stats(self, name: str) -> np.ndarray:
        """Per-series, per-channel statistic over the whole series: count|mean|std|min|max."""
        return self._series(f"stats/{name}")

    # -- values -------------------------------------------------------------------------
    def rows(self, start: int, stop: int) -> np.ndarray:
        """values[start:stop] as a numpy array (one Zarr read)."""
        return self.values[start:stop]

    def series_values(self, i: int) -> np.ndarray:
        """All rows of series i, [T_i, C]."""
        return self.rows(int(self.indptr[i]), int(self.indptr[i + 1]))

    def info(self) -> dict[str, Any]:
        """The keys of `tsforge data info`."""
        return {
            "path": str(self.path),
            "n_series": self.n_series,
            "n_timesteps": self.n_timesteps,
            "n_channels": self.n_channels,
            "columns": self.columns,
            "roles": self.attrs["roles"],
            "freq": self.freq,
            "time_unit": self.time_unit,
            "fingerprint": self.fingerprint,
            "chunks": list(self.values.chunks),
            "codec": self.attrs["codec"],
            "splits": self.splits,
            "schema_version": self.attrs["schema_version"],
        }


class _Values:
    """A store's `values` array, read as Zarr reads it, except that a damaged chunk is a
    `UserError` naming the store rather than a decoder's error deep inside a command."""

    def __init__(self, array, path: Path):
        self._array, self._path = array, path

    def __getitem__(self, key) -> np.ndarray:
        try:
            return self._array[key]
        except _DAMAGED as err:
            raise _damaged(self._path, "values", err) from None

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not delegated: copying and pickling find no loop
            raise AttributeError(name)
        return getattr(self._array, name)


def open_store(path: str | os.PathLike) -> Store:
    return Store(path)


def _damaged(path: Path, array: str, err: Exception) -> UserError:
    return UserError(f"store {path} has a damaged chunk of {array} ({type(err).__name__}: "
                     f"{err}): re-create it with 'tsforge data ingest'")  # fmt: skip


def _not_a_store(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a tsforge store ({why}): give the folder that 'tsforge "
                     "data ingest' wrote, or re-create it with 'tsforge data ingest'")  # fmt: skip


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of the store at `path`, read from its zarr.json without opening it with
    Zarr; a `UserError` naming the path says why it is not a store."""
    path = Path(path)
    meta = path / "zarr.json"
    if not path.is_dir():
        raise _not_a_store(path, "not a folder")
    if meta.is_symlink() or not meta.is_file():
        raise _not_a_store(path, "no zarr.json in it")
    try:
        if meta.stat().st_size > _MAX_META_BYTES:
            raise _not_a_store(path, "its zarr.json is too large to be a store's")
        doc = json.loads(meta.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise _not_a_store(path, "its zarr.json is not valid JSON") from None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict) or doc.get("node_type") != "group":
        raise _not_a_store(path, "its zarr.json has no tsforge metadata")
    for key, kind in _ATTR_TYPES.items():
        if key not in attrs:
            raise _not_a_store(path, f"its metadata has no '{key}'")
        if not isinstance(attrs[key], kind) or isinstance(attrs[key], bool):
            raise _not_a_store(path, f"its metadata '{key}' is not a {kind.__name__}")
    roles = attrs["roles"]
    fields = {f.name for f in dataclasses.fields(ColumnRoles)}
    for key, names in roles.items():
        if key not in fields or not (
            isinstance(names, list) and all(isinstance(c, str) for c in names)
        ):
            raise _not_a_store(path, f"its metadata 'roles' has a bad entry '{key}'")
    if attrs["time_unit"] not in TIME_UNITS or attrs["n_series"] < 1:
        raise _not_a_store(path, "its metadata 'time_unit' or 'n_series' is out of range")
    return attrs


def is_store(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder that tsforge wrote as a store (its own metadata says so);
    a link is never one, whatever it points to."""
    if Path(path).is_symlink():
        return False
    try:
        read_metadata(path)
    except (UserError, OSError):
        return False
    return True
