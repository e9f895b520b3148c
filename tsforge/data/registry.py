"""The built-in datasets: where their files come from, how to check them, how to store them.

    from tsforge.data import registry
    registry.DATASETS["ETTh1"].files     # official file names, URLs and SHA-256
    registry.download("ETTh1")           # TSFORGE_DATA_DIR first, else the official URL
    store = registry.prepare("ETTh1")    # a ready Zarr store, cached by name + raw checksum

Files are looked for under their official names (`ETTh1.csv`, `m4/Hourly-train.csv`) in
`TSFORGE_DATA_DIR` first, then in the cache folder (`TSFORGE_CACHE_DIR`, else
`$XDG_CACHE_HOME/tsforge` or `~/.cache/tsforge`), and only then downloaded there: to a
temporary file that is renamed into place once its SHA-256 matches. A mismatch is refused
and the download deleted. An entry without a recorded SHA-256 is fetched but reported as
UNVERIFIED, never as verified; record the checksum in the entry once the file is vouched for.
Converted stores live in `<cache>/stores/<name>-<digest>.zarr`, the digest covering the raw
files' SHA-256 and the conversion version, so a changed file or converter builds a new store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import zarr

from tsforge.data import m4, synthetic
from tsforge.data.outputs import place
from tsforge.data.splits import PRESETS
from tsforge.data.store import Store
from tsforge.errors import UserError

# Bump when a conversion changes what ends up in a store: cached stores are then rebuilt.
CONVERT_VERSION = 1
DOWNLOAD_TIMEOUT_S = 60

_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
# The Autoformer bundle (Wu et al. 2021) as the Time-Series-Library keeps it; the original
# release is a cloud-drive folder with no stable file links.
_TSLIB = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/"
_M4 = "https://raw.githubusercontent.com/Mcompetitions/M4-methods/master/Dataset/"

# The default synthetic dataset: big enough to train on, small enough to build in seconds.
SYNTHETIC_DEFAULTS = dict(
    n_series=64, seed=0, min_length=400, max_length=1200, freq="h",
    n_channels=1, n_futr_exog=1, n_static=1,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RawFile:
    """One official file: its name under a data folder, where it is published, its SHA-256."""

    name: str
    url: str
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A registry entry. `kind` says how it becomes a store: generated, wide CSV or M4."""

    name: str
    kind: str  # "synthetic" | "wide" | "m4"
    freq: str  # the data's frequency (M4 stores use integer time: see m4.py)
    split: str  # preset name, shown by `tsforge data list`
    split_spec: dict
    files: tuple[RawFile, ...] = ()
    season_length: int = 1  # for seasonal-naive baselines and MASE
    source: str = ""


def _wide(name, file, url, sha256, freq, split, season, source) -> Dataset:
    spec = dict(PRESETS[split])
    return Dataset(name, "wide", freq, split, spec, (RawFile(file, url, sha256),), season, source)


def _m4(freq_name: str, freq: str, sha_train: str | None, sha_test: str | None) -> Dataset:
    files = (
        RawFile(f"m4/{freq_name}-train.csv", f"{_M4}Train/{freq_name}-train.csv", sha_train),
        RawFile(f"m4/{freq_name}-test.csv", f"{_M4}Test/{freq_name}-test.csv", sha_test),
    )
    spec = {"kind": "holdout", "horizon": m4.HORIZONS[freq_name]}
    return Dataset(
        f"M4-{freq_name}", "m4", freq, f"m4_{freq_name.lower()}", spec, files,
        m4.SEASONALITY[freq_name], "Makridakis et al., IJF 2020; github.com/Mcompetitions",
    )  # fmt: skip


_ETT_SOURCE = "Zhou et al., Informer, AAAI 2021; CC BY-ND 4.0"
_BUNDLE = "Autoformer bundle (Wu et al. 2021)"
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("synthetic", "synthetic", "h", "ratio_70_10_20", dict(PRESETS["ratio_70_10_20"]),
                season_length=24, source="tsforge.data.synthetic"),
        _wide("ETTh1", "ETTh1.csv", _ETT + "ETTh1.csv",
              "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
              "h", "ett_hour", 24, _ETT_SOURCE),
        _wide("ETTh2", "ETTh2.csv", _ETT + "ETTh2.csv",
              "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
              "h", "ett_hour", 24, _ETT_SOURCE),
        _wide("ETTm1", "ETTm1.csv", _ETT + "ETTm1.csv",
              "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
              "15min", "ett_minute", 96, _ETT_SOURCE),
        _wide("ETTm2", "ETTm2.csv", _ETT + "ETTm2.csv", None,
              "15min", "ett_minute", 96, _ETT_SOURCE),
        _wide("Weather", "weather.csv", _TSLIB + "weather/weather.csv", None,
              "10min", "ratio_70_10_20", 144, _BUNDLE + "; MPI for Biogeochemistry"),
        _wide("Exchange", "exchange_rate.csv", _TSLIB + "exchange_rate/exchange_rate.csv",
              "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842",
              "D", "ratio_70_10_20", 1, _BUNDLE + "; LSTNet (Lai et al. 2018)"),
        _wide("ILI", "national_illness.csv", _TSLIB + "illness/national_illness.csv",
              "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a",
              "W", "ratio_70_10_20", 52, _BUNDLE + "; CDC FluView ILINet"),
        _m4("Hourly", "h",
            "ea59b7783573c49077a835ab6465c7d66f1474783360f310988a9a737fbca62f",
            "71a57fccb15e534d973626ada4fb87febf789e9317715b7cc6dd3b5f90db6f42"),
        _m4("Daily", "D", None, None),
        _m4("Weekly", "W", None, None),
        _m4("Monthly", "M", None, None),
        _m4("Quarterly", "Q", None, None),
        _m4("Yearly", "Y", None, None),
    )
}  # fmt: skip


def get(name: str) -> Dataset:
    """The entry called `name`; case, '-' and '_' do not matter ('m4_hourly' is M4-Hourly)."""
    def key(s: str) -> str:
        return s.lower().replace("-", "").replace("_", "")

    for entry in DATASETS.values():
        if key(entry.name) == key(name):
            return entry
    raise UserError(f"unknown dataset '{name}': use one of {', '.join(DATASETS)}")


# -- folders ------------------------------------------------------------------------------
def data_dir() -> Path | None:
    """`TSFORGE_DATA_DIR`: a folder that may already hold files under their official names."""
    value = os.environ.get("TSFORGE_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_folder(override: str | os.PathLike | None = None) -> Path:
    """Where downloads and converted stores go: `override`, else TSFORGE_CACHE_DIR, else the
    user's cache folder."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("TSFORGE_CACHE_DIR"):
        return Path(os.environ["TSFORGE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsforge"


def make_folder(folder: Path) -> None:
    """Make `folder` (in the cache or a --dir) and its parents; a file in the way is bad
    input, named with the settings that lead there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot make the folder {folder}: a file is in its way: point "
                        f"TSFORGE_CACHE_DIR (or --dir) at a folder, or move the file "
                        f"away") from None  # fmt: skip


# -- fetching -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Fetched:
    """A raw file ready on disk; `verified` only when it matched a recorded SHA-256."""

    name: str
    path: Path
    sha256: str
    verified: bool
    origin: str  # "data_dir" | "cache" | "download"


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def warn(message: str) -> None:
    print(f"tsforge: warning: {message}", file=sys.stderr)


def fetch(raw: RawFile, dest_dir: str | os.PathLike | None = None, *, repair: bool = True
          ) -> Fetched:  # fmt: skip
    """`raw` from TSFORGE_DATA_DIR, else from `dest_dir` (the cache folder by default), else
    downloaded into `dest_dir` under its official name. A SHA-256 mismatch is a UserError.
    A file in `dest_dir` that does not match is downloaded again with `repair` (a cache's own
    file), and refused without it (a folder of the user's: the file may be their only copy)."""
    local = data_dir()
    if local is not None and (local / raw.name).is_file():
        path = local / raw.name
        digest = sha256_of(path)
        if raw.sha256 and digest != raw.sha256:
            raise UserError(
                f"{path} has SHA-256 {digest}, the registry expects {raw.sha256}: replace it "
                f"with the official file from {raw.url}"
            )
        return _checked(raw, path, digest, "data_dir")
    dest = cache_folder(dest_dir) / raw.name
    if dest.is_file():
        digest = sha256_of(dest)
        if not raw.sha256 or digest == raw.sha256:
            return _checked(raw, dest, digest, "cache")
        if not repair:
            raise UserError(
                f"{dest} is not the official {raw.name} (SHA-256 {digest}, the registry "
                f"expects {raw.sha256}), and it will not be replaced: move it away or choose "
                "another --dir"
            )
        warn(f"{dest} does not match its SHA-256; downloading it again")
        dest.unlink()
    digest = _download(raw, dest)
    return _checked(raw, dest, digest, "download")


def _checked(raw: RawFile, path: Path, digest: str, origin: str) -> Fetched:
    verified = bool(raw.sha256) and digest == raw.sha256
    if not verified:
        warn(
            f"{path} is UNVERIFIED: the registry holds no SHA-256 for {raw.name} "
            f"(this file's is {digest}); check it against a trusted copy"
        )
    return Fetched(raw.name, path, digest, verified, origin)


def _download(raw: RawFile, dest: Path) -> str:
    """Stream `raw.url` to a temporary file beside `dest`, check it, rename it into place."""
    make_folder(dest.parent)
    tmp = dest.parent / f".{dest.name}.part-{uuid.uuid4().hex[:8]}"
    h = hashlib.sha256()
    request = urllib.request.Request(raw.url, headers={"User-Agent": "tsforge"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(
            tmp, "wb"
        ) as fh:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
        digest = h.hexdigest()
        if raw.sha256 and digest != raw.sha256:
            raise UserError(
                f"{raw.url} has SHA-256 {digest}, the registry expects {raw.sha256}; "
                f"the download was deleted: check the URL, or put the official file in "
                f"TSFORGE_DATA_DIR as {raw.name}"
            )
        os.replace(tmp, dest)
        return digest
    except (urllib.error.URLError, OSError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", None) or err
        raise UserError(
            f"could not download {raw.url} ({reason}): check the network, or put the file "
            f"in TSFORGE_DATA_DIR as {raw.name}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def download(name: str, dest_dir: str | os.PathLike | None = None) -> list[Fetched]:
    """Every file of dataset `name`, found or fetched and checked (see `fetch`); a file of
    another content already in a `dest_dir` of the user's is refused, never replaced."""
    return [fetch(raw, dest_dir, repair=dest_dir is None) for raw in get(name).files]


# -- stores -------------------------------------------------------------------------------
def prepare(
    name: str, *, cache_dir: str | os.PathLike | None = None, overwrite: bool = False
) -> Store:
    """A ready store of dataset `name`, built once and re-used while its inputs are unchanged."""
    entry = get(name)
    root = cache_folder(cache_dir)
    if entry.kind == "synthetic":
        inputs = {"generator": synthetic.GENERATOR_VERSION, **SYNTHETIC_DEFAULTS}
        fetched = []
    else:
        fetched = [fetch(raw, root) for raw in entry.files]
        inputs = {f.name: f.sha256 for f in fetched}
    inputs.update(convert=CONVERT_VERSION, split=entry.split_spec)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    path = root / "stores" / f"{entry.name}-{digest}.zarr"
    make_folder(path.parent)
    with _lock(path.parent / f".{path.name}.lock"):  # concurrent ranks build it once
        if path.exists() and not overwrite:
            with contextlib.suppress(UserError):  # a broken store is rebuilt below
                return Store(path)
        _convert(entry, fetched, path)
    return Store(path)


def _convert(entry: Dataset, fetched: list[Fetched], out: Path) -> None:
    """Build the store beside `out`, record where it came from, then rename it into place."""
    source = {
        "name": entry.name,
        "files": [
            {"name": f.name, "url": raw.url, "sha256": f.sha256, "verified": f.verified}
            for f, raw in zip(fetched, entry.files)
        ],
        "season_length": entry.season_length,
        "data_freq": entry.freq,
    }
    tmp = out.parent / f".{out.name}.build-{uuid.uuid4().hex[:8]}"
    try:
        if entry.kind == "synthetic":
            synthetic.build_store(tmp, split=entry.split_spec, **SYNTHETIC_DEFAULTS)
        elif entry.kind == "m4":
            train, test = (f.path for f in fetched)
            m4.write_store(train, test, tmp, horizon=entry.split_spec["horizon"])
        else:
            from tsforge.data.ingest import ingest  # imported when needed

            # Every column but `date` is a channel, as in the published long-horizon protocol.
            ingest(
                fetched[0].path, tmp, format="wide", time_col="date", freq=entry.freq,
                split=entry.split_spec, series_id=entry.name,
            )  # fmt: skip
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
        group.attrs["source"] = {**group.attrs.get("source", {}), **source}
        place(tmp, out)  # a store rebuilt with --overwrite stays whole until the new is in
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on `path` across processes (POSIX); a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def table() -> list[dict]:
    """One row per file (one for synthetic): what `tsforge data list` prints."""
    rows = []
    for d in DATASETS.values():
        common = {"name": d.name, "freq": d.freq, "split": d.split, "season": d.season_length}
        if not d.files:
            rows.append({**common, "file": "-", "sha256": None, "url": "generated locally"})
        for raw in d.files:
            rows.append({**common, "file": raw.name, "sha256": raw.sha256, "url": raw.url})
    return rows
