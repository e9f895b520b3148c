"""The dataset registry: entries, checksums, downloads (from a local HTTP server), stores, CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from tsforge.data import m4, registry, synthetic
from tsforge.data.registry import RawFile
from tsforge.errors import UserError

BENCHMARKS = {"ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "Exchange", "ILI"}
M4_FREQS = ("Hourly", "Daily", "Weekly", "Monthly", "Quarterly", "Yearly")


@pytest.fixture(autouse=True)
def _folders(tmp_path, monkeypatch):
    """No test reads the real data folder or writes to the user's cache unless it says so."""
    shared = os.environ.get("TSFORGE_DATA_DIR")
    monkeypatch.delenv("TSFORGE_DATA_DIR", raising=False)
    monkeypatch.setenv("TSFORGE_CACHE_DIR", str(tmp_path / "cache"))
    return shared


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving `served/`; `hits` lists the paths asked for."""
    root = tmp_path / "served"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}/", root=root, hits=hits)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _serve(server, name: str, data: bytes) -> str:
    (server.root / name).write_bytes(data)
    return server.url + name


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- entries ------------------------------------------------------------------------------
def test_registry_holds_every_dataset_with_official_names_urls_and_splits():
    expected = {"synthetic", *BENCHMARKS, *(f"M4-{f}" for f in M4_FREQS)}
    assert set(registry.DATASETS) == expected
    etth1 = registry.get("ETTh1")
    assert etth1.files == (RawFile(
        "ETTh1.csv", "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    ),)  # fmt: skip
    assert etth1.split == "ett_hour" and registry.get("ETTm2").split == "ett_minute"
    names = {d.name: [f.name for f in d.files] for d in registry.DATASETS.values()}
    assert names["Exchange"] == ["exchange_rate.csv"] and names["ILI"] == ["national_illness.csv"]
    assert names["Weather"] == ["weather.csv"]
    for freq, horizon in zip(M4_FREQS, (48, 14, 13, 18, 8, 6)):
        d = registry.get(f"M4-{freq}")
        assert names[d.name] == [f"m4/{freq}-train.csv", f"m4/{freq}-test.csv"]
        base = "https://raw.githubusercontent.com/Mcompetitions/M4-methods/master/Dataset/"
        assert [f.url for f in d.files] == [
            f"{base}Train/{freq}-train.csv", f"{base}Test/{freq}-test.csv"
        ]
        assert d.split == f"m4_{freq.lower()}"
        assert d.split_spec == {"kind": "holdout", "horizon": horizon}
    for d in registry.DATASETS.values():
        assert all(f.url.startswith("https://") for f in d.files)
        assert all(f.sha256 is None or len(f.sha256) == 64 for f in d.files)


def test_registry_checksums_are_those_of_the_shared_files(_folders):
    """Every SHA-256 in the registry is one we hold the file for, and agrees with SHA256SUMS."""
    if not _folders or not (Path(_folders) / "SHA256SUMS").is_file():
        pytest.skip("TSFORGE_DATA_DIR is not set or holds no SHA256SUMS")
    sums = dict(
        reversed(line.split()) for line in (Path(_folders) / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
    recorded = {f.name: f.sha256 for d in registry.DATASETS.values() for f in d.files if f.sha256}
    assert recorded == {name: sums[name] for name in recorded}
    held = {f.name for d in registry.DATASETS.values() for f in d.files} & set(sums)
    assert set(recorded) == held  # no file we hold is left without its checksum


def test_names_are_matched_loosely_and_unknown_ones_listed():
    assert registry.get("m4_hourly").name == "M4-Hourly"
    assert registry.get("etth1").name == "ETTh1"
    with pytest.raises(UserError, match="unknown dataset 'ETTh3': use one of synthetic, ETTh1"):
        registry.get("ETTh3")


# -- fetching -----------------------------------------------------------------------------
def test_the_data_dir_is_used_first_and_checked(tmp_path, monkeypatch, server):
    data = tmp_path / "data"
    (data / "m4").mkdir(parents=True)
    (data / "m4" / "x.csv").write_bytes(b"V1\n")
    monkeypatch.setenv("TSFORGE_DATA_DIR", str(data))
    got = registry.fetch(RawFile("m4/x.csv", server.url + "x.csv", _sha(b"V1\n")))
    assert got.origin == "data_dir" and got.verified and got.path == data / "m4" / "x.csv"
    assert server.hits == []
    with pytest.raises(UserError, match=r"x.csv has SHA-256 .* registry expects 0+: replace"):
        registry.fetch(RawFile("m4/x.csv", server.url + "x.csv", "0" * 64))
    assert (data / "m4" / "x.csv").exists()  # the user's own file is never deleted


def test_download_is_verified_renamed_into_place_and_then_reused(tmp_path, server):
    payload = b"date,a\n2020-01-01,1\n" * 1000
    raw = RawFile("sub/f.csv", _serve(server, "f.csv", payload), _sha(payload))
    got = registry.fetch(raw, tmp_path / "dl")
    assert got.path == tmp_path / "dl" / "sub" / "f.csv" and got.path.read_bytes() == payload
    assert got.verified and got.origin == "download" and got.sha256 == raw.sha256
    assert os.listdir(tmp_path / "dl" / "sub") == ["f.csv"]  # no temporary file left
    assert registry.fetch(raw, tmp_path / "dl").origin == "cache"
    assert server.hits == ["/f.csv"]


def test_a_checksum_mismatch_is_refused_and_the_download_deleted(tmp_path, server):
    raw = RawFile("f.csv", _serve(server, "f.csv", b"tampered"), _sha(b"original"))
    with pytest.raises(UserError, match="registry expects .* the download was deleted"):
        registry.fetch(raw, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_a_corrupt_cached_file_is_fetched_again(tmp_path, server, capsys):
    raw = RawFile("f.csv", _serve(server, "f.csv", b"good"), _sha(b"good"))
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "f.csv").write_bytes(b"truncated")
    assert registry.fetch(raw, tmp_path / "dl").origin == "download"
    assert (tmp_path / "dl" / "f.csv").read_bytes() == b"good"
    assert "downloading it again" in capsys.readouterr().err


def test_without_a_checksum_a_download_is_marked_unverified(tmp_path, server, capsys):
    raw = RawFile("f.csv", _serve(server, "f.csv", b"anything"), None)
    got = registry.fetch(raw, tmp_path / "dl")
    assert not got.verified and got.sha256 == _sha(b"anything")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UNVERIFIED" in err and got.sha256 in err


def test_http_errors_are_user_errors(tmp_path, server):
    with pytest.raises(UserError, match=r"could not download .*missing.csv \(HTTP 404"):
        registry.fetch(RawFile("missing.csv", server.url + "missing.csv", None), tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


# -- the command line ---------------------------------------------------------------------
@pytest.fixture
def cli():
    """`tsforge ...` as main() runs it."""
    from tsforge.cli.main import main

    return main


def test_cli_list_shows_every_entry(cli, capsys):
    assert cli(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in registry.DATASETS:
        assert f"\n{name} " in out
    assert registry.get("ETTh1").files[0].url in out and "(none: unverified)" in out


def test_cli_download_verifies_and_refuses_a_mismatch(cli, capsys, tmp_path, server, monkeypatch):
    payload = b"date,OT\n2016-07-01 00:00:00,1.0\n"
    raw = RawFile("ETTh1.csv", _serve(server, "e.csv", payload), _sha(payload))
    good = dataclasses.replace(registry.get("ETTh1"), files=(raw,))
    monkeypatch.setitem(registry.DATASETS, "ETTh1", good)
    assert cli(["data", "download", "etth1", "--dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "ETTh1.csv" in out and "verified (download)" in out
    assert (tmp_path / "d" / "ETTh1.csv").read_bytes() == payload

    bad = dataclasses.replace(good, files=(dataclasses.replace(good.files[0], sha256="0" * 64),))
    monkeypatch.setitem(registry.DATASETS, "ETTh1", bad)
    assert cli(["data", "download", "ETTh1", "--dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsforge: error: ") and err.count("\n") == 1 and "SHA-256" in err
    assert list((tmp_path / "e").iterdir()) == []


def test_cli_unknown_dataset_is_one_line_and_exit_2(cli, capsys):
    assert cli(["data", "download", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'nope'" in err and "M4-Hourly" in err


# -- stores -------------------------------------------------------------------------------
def test_prepare_synthetic_builds_once_and_reuses(tmp_path, monkeypatch):
    calls = []
    build = synthetic.build_store
    monkeypatch.setattr(synthetic, "build_store", lambda *a, **k: calls.append(1) or build(*a, **k))
    store = registry.prepare("synthetic", cache_dir=tmp_path / "c")
    assert store.n_series == 64 and store.lengths.min() >= 400 and store.lengths.max() <= 1200
    assert store.roles.target == ("y",) and store.roles.futr_exog == ("hour_of_day",)
    assert len(store.roles.static) == 1 and store.freq == "h"
    again = registry.prepare("synthetic", cache_dir=tmp_path / "c")
    assert again.path == store.path and again.fingerprint == store.fingerprint and len(calls) == 1
    registry.prepare("synthetic", cache_dir=tmp_path / "c", overwrite=True)
    assert len(calls) == 2
    assert [p.name for p in (tmp_path / "c" / "stores").iterdir() if not p.name.startswith(".")] \
        == [store.path.name]


def _m4_files(folder: Path, rows: dict[str, tuple[list, list]]) -> None:
    """Tiny M4-style wide files: quoted cells, right-padded with empty cells."""
    (folder / "m4").mkdir(parents=True, exist_ok=True)
    for part, k in (("train", 0), ("test", 1)):
        width = max(len(r[k]) for r in rows.values())
        lines = [",".join(f'"V{i + 1}"' for i in range(width + 1))]
        for uid, r in rows.items():
            cells = [f'"{uid}"'] + [f'"{v}"' for v in r[k]] + [""] * (width - len(r[k]))
            lines.append(",".join(cells))
        (folder / "m4" / f"Hourly-{part}.csv").write_text("\n".join(lines) + "\n")


def test_prepare_m4_writes_train_then_test_per_series(tmp_path, monkeypatch):
    rows = {"H1": ([1, 2, 3, 4, 5], [6, 7]), "H2": ([10.5, 11, 12], [13, 14])}
    _m4_files(tmp_path / "data", rows)
    monkeypatch.setenv("TSFORGE_DATA_DIR", str(tmp_path / "data"))
    entry = registry.get("M4-Hourly")
    unchecked = tuple(dataclasses.replace(f, sha256=None) for f in entry.files)
    spec = {"kind": "holdout", "horizon": 2}
    monkeypatch.setitem(
        registry.DATASETS, "M4-Hourly", dataclasses.replace(entry, files=unchecked, split_spec=spec)
    )
    store = registry.prepare("M4-Hourly", cache_dir=tmp_path / "c")
    assert list(store.ids) == ["H1", "H2"] and list(store.lengths) == [7, 5]
    np.testing.assert_array_equal(store.series_values(1)[:, 0], [10.5, 11, 12, 13, 14])
    assert store.time_unit == "index" and store.splits == spec and list(store.starts) == [0, 0]
    source = store.attrs["source"]
    assert source["name"] == "M4-Hourly" and source["season_length"] == 24
    assert [f["verified"] for f in source["files"]] == [False, False]

    rows["H2"] = ([10.5, 11, 12.5], [13, 14])  # a changed raw file makes a new store
    _m4_files(tmp_path / "data", rows)
    assert registry.prepare("M4-Hourly", cache_dir=tmp_path / "c").path != store.path


def test_m4_reader_refuses_malformed_files(tmp_path):
    _m4_files(tmp_path, {"H1": ([1, 2, 3], [4, 5])})
    train, test = tmp_path / "m4" / "Hourly-train.csv", tmp_path / "m4" / "Hourly-test.csv"
    with pytest.raises(UserError, match="expected 3"):
        m4.write_store(train, test, tmp_path / "a.zarr", horizon=3)
    gap = tmp_path / "gap.csv"
    gap.write_text('"V1","V2","V3","V4"\n"H1","1",,"3"\n')
    with pytest.raises(UserError, match="row 1: an empty cell inside series 'H1'"):
        list(m4.read_rows(gap))
    other = tmp_path / "other.csv"
    other.write_text('"V1","V2","V3"\n"H9","4","5"\n')
    with pytest.raises(UserError, match="'H1' meets 'H9'"):
        m4.write_store(train, other, tmp_path / "b.zarr", horizon=2)
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".*"))


def test_prepare_a_wide_csv_through_ingest(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    ts = np.datetime64("2016-07-01T00:00") + np.arange(40) * np.timedelta64(1, "h")
    values = np.arange(120, dtype=np.float32).reshape(40, 3) / 4
    lines = ["date,HUFL,HULL,OT"] + [
        f"{str(t).replace('T', ' ')}:00," + ",".join(map(str, v)) for t, v in zip(ts, values)
    ]
    (data / "ETTh1.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("TSFORGE_DATA_DIR", str(data))
    spec = {"kind": "borders", "train": 20, "val": 30, "test": 40}
    entry = dataclasses.replace(
        registry.get("ETTh1"), split_spec=spec,
        files=(dataclasses.replace(registry.get("ETTh1").files[0], sha256=None),),
    )  # fmt: skip
    monkeypatch.setitem(registry.DATASETS, "ETTh1", entry)
    store = registry.prepare("ETTh1", cache_dir=tmp_path / "c")
    assert store.n_series == 1 and store.columns == ["HUFL", "HULL", "OT"]
    np.testing.assert_array_equal(store.series_values(0), values)
    assert store.splits == spec and store.attrs["source"]["name"] == "ETTh1"


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    assert registry.cache_folder() == tmp_path / "cache"  # TSFORGE_CACHE_DIR, set above
    assert registry.cache_folder(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("TSFORGE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_folder() == tmp_path / "xdg" / "tsforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert registry.cache_folder() == Path.home() / ".cache" / "tsforge"
