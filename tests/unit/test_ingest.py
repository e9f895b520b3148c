"""Ingest into real stores: round trips, sorting, covariates, policies, fingerprints and
clean-up (tsforge/data/ingest.py, readers.py, spill.py). Bad input through the real command
line is in test_ingest_cli.py.

    pytest tests/unit/test_ingest.py
"""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tsforge.data import spill as spill_mod
from tsforge.data import store as store_mod
from tsforge.data.ingest import IngestSummary, ingest
from tsforge.data.store import Codec, Store
from tsforge.errors import UserError

H = 3600 * 10**9
T0 = np.datetime64("2020-01-01T00:00:00", "s")


def _stamp(k) -> str:
    return str(T0 + np.timedelta64(int(k), "h")).replace("T", " ")


def _panel(n_series=7, seed=0, min_len=3, max_len=40):
    """{id: (start_hour, values[T])} with distinct lengths and starts."""
    rng = np.random.default_rng(seed)
    return {
        f"s{i:02d}": (
            int(rng.integers(0, 50)),
            rng.normal(size=int(rng.integers(min_len, max_len))),
        )
        for i in range(n_series)
    }


def _long_rows(panel, shuffle_seed=None):
    rows = [
        (uid, start + t, float(v))
        for uid, (start, vals) in panel.items()
        for t, v in enumerate(vals)
    ]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    return rows


def _write_long_csv(path, panel, shuffle_seed=None):
    lines = ["unique_id,ds,y"] + [
        f"{uid},{_stamp(t)},{v!r}" for uid, t, v in _long_rows(panel, shuffle_seed)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _check_panel(store: Store, panel):
    ids = sorted(panel)
    assert list(store.ids) == ids
    for i, uid in enumerate(ids):
        start, vals = panel[uid]
        assert store.starts[i] == (T0.astype("M8[ns]").astype(np.int64) + start * H)
        np.testing.assert_array_equal(store.series_values(i)[:, 0], vals.astype(np.float32))


def _leftovers(folder, out_name):
    return [p.name for p in folder.iterdir() if p.name.startswith(f".{out_name}")]


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle_seed", [None, 1])
def test_long_csv_round_trip_sorted_and_shuffled(tmp_path, shuffle_seed):
    panel = _panel()
    src = _write_long_csv(tmp_path / "data.csv", panel, shuffle_seed)
    # Small pieces so that the input spans many pieces and spill blocks.
    summary = ingest(src, tmp_path / "s.zarr", piece_rows=16)
    assert isinstance(summary, IngestSummary)
    store = Store(tmp_path / "s.zarr")
    _check_panel(store, panel)
    assert store.freq == "h" and store.time_unit == "ns" and store.columns == ["y"]
    assert summary.n_series == len(panel) and summary.n_rows == sum(
        len(v) for _, v in panel.values()
    )
    assert summary.freq == "h" and summary.fingerprint == store.fingerprint
    assert summary.to_dict()["path"] == str(tmp_path / "s.zarr")
    assert _leftovers(tmp_path, "s.zarr") == []


def test_row_order_does_not_change_the_store(tmp_path):
    panel = _panel(seed=3)
    a = ingest(_write_long_csv(tmp_path / "a.csv", panel), tmp_path / "a.zarr", piece_rows=10)
    b = ingest(_write_long_csv(tmp_path / "b.csv", panel, 7), tmp_path / "b.zarr", piece_rows=10)
    c = ingest(tmp_path / "b.csv", tmp_path / "c.zarr")  # one piece
    assert a.fingerprint == b.fingerprint == c.fingerprint


def test_fingerprint_is_deterministic_and_follows_content(tmp_path):
    panel = _panel(seed=4)
    src = _write_long_csv(tmp_path / "d.csv", panel)
    first = ingest(src, tmp_path / "1.zarr").fingerprint
    assert ingest(src, tmp_path / "2.zarr").fingerprint == first
    uid = sorted(panel)[2]
    panel[uid][1][5] += 1.0
    changed = ingest(_write_long_csv(tmp_path / "e.csv", panel), tmp_path / "3.zarr").fingerprint
    assert changed != first


def test_gzip_csv(tmp_path):
    panel = _panel(seed=5)
    text = _write_long_csv(tmp_path / "p.csv", panel).read_bytes()
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(text))
    ingest(tmp_path / "p.csv.gz", tmp_path / "g.zarr", piece_rows=8)
    _check_panel(Store(tmp_path / "g.zarr"), panel)


def test_long_parquet_with_timestamps_and_int_ids(tmp_path):
    ts = np.arange(6).astype("M8[h]").astype("M8[ns]")
    table = pa.table(
        {
            "unique_id": np.repeat([10, 2], 6),
            "ds": pa.array(np.r_[ts[::-1], ts]),
            "y": np.arange(12.0),
        }
    )
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=5)
    summary = ingest(tmp_path / "p.parquet", tmp_path / "p.zarr", piece_rows=4)
    store = Store(tmp_path / "p.zarr")
    assert list(store.ids) == ["10", "2"] and summary.freq == "h"  # ids sort as text
    np.testing.assert_array_equal(store.series_values(0)[:, 0], np.arange(6.0)[::-1])
    np.testing.assert_array_equal(store.series_values(1)[:, 0], np.arange(6.0, 12.0))
    assert store.starts.tolist() == [0, 0]


def test_parquet_folder_with_integer_time(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for k in range(3):
        t = pa.table(
            {"unique_id": ["a"] * 4, "ds": np.arange(4) * 5 + 20 * k, "y": np.arange(4.0) + k}
        )
        pq.write_table(t, folder / f"part-{k}.parquet")
    summary = ingest(folder, tmp_path / "f.zarr")
    store = Store(tmp_path / "f.zarr")
    assert store.time_unit == "index" and store.freq == "5" and summary.n_rows == 12
    assert store.starts.tolist() == [0]


def test_wide_csv_like_ett(tmp_path):
    ts = [_stamp(k) for k in range(30)]
    values = np.arange(90, dtype=np.float64).reshape(30, 3) / 8
    lines = ["date,HUFL,HULL,OT"] + [
        f"{t}," + ",".join(repr(float(x)) for x in v) for t, v in zip(ts, values)
    ]
    src = tmp_path / "ETTx.csv"
    src.write_text("\r\n".join(lines) + "\r\n")  # CRLF, as some benchmark files have
    summary = ingest(src, tmp_path / "w.zarr", format="wide", time_col="date", split="ett_hour")
    store = Store(tmp_path / "w.zarr")
    assert summary.n_series == 1 and list(store.ids) == ["ETTx"]
    assert store.columns == ["HUFL", "HULL", "OT"] and store.roles.target == ("HUFL", "HULL", "OT")
    np.testing.assert_array_equal(store.series_values(0), values.astype(np.float32))
    assert store.splits == {"kind": "borders", "train": 8640, "val": 11520, "test": 14400}
    again = ingest(
        src,
        tmp_path / "w2.zarr",
        format="wide",
        time_col="date",
        target=["OT"],
        hist_exog=["HUFL", "HULL"],
        series_id="etth1",
        split={"kind": "ratio", "train": 0.7, "test": 0.2},
    )
    store = Store(tmp_path / "w2.zarr")
    assert list(store.ids) == ["etth1"] and store.columns == ["OT", "HUFL", "HULL"]
    np.testing.assert_array_equal(store.series_values(0), values[:, [2, 0, 1]].astype(np.float32))
    assert store.splits["kind"] == "ratio" and again.n_rows == 30


def test_covariates_and_static_columns(tmp_path):
    lines = ["unique_id,ds,y,price,promo,region,note"]
    for uid, region in (("b", 2.0), ("a", 7.5)):
        for t in range(5):
            lines.append(f"{uid},{_stamp(t)},{t},{t * 10},{t % 2},{region},x")
    src = tmp_path / "cov.csv"
    src.write_text("\n".join(lines) + "\n")
    ingest(
        src,
        tmp_path / "c.zarr",
        hist_exog=["price"],
        futr_exog=["promo"],
        static=["region"],
        ignore_cols=["note"],
    )
    store = Store(tmp_path / "c.zarr")
    assert store.columns == ["y", "price", "promo"] and store.roles.static == ("region",)
    np.testing.assert_array_equal(store.static, [[7.5], [2.0]])
    want = np.stack([np.arange(5), np.arange(5) * 10, np.arange(5) % 2], axis=1)
    np.testing.assert_array_equal(store.series_values(0), want.astype(np.float32))


def test_monthly_and_date_only_timestamps(tmp_path):
    months = np.arange("2019-01", "2020-07", dtype="M8[M]")
    lines = ["unique_id,ds,y"] + [f"m,{m.astype('M8[D]')},{i}" for i, m in enumerate(months)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    summary = ingest(tmp_path / "m.csv", tmp_path / "m.zarr")
    assert summary.freq == "MS" and summary.n_rows == len(months)


# -- policies ---------------------------------------------------------------------------------
def _gappy(tmp_path, cells):
    """One series 'a' at hours 0..; `cells` maps hour -> text of y (None: row absent)."""
    lines = ["unique_id,ds,y"] + [f"a,{_stamp(k)},{v}" for k, v in cells.items() if v is not None]
    path = tmp_path / "gappy.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _values(path):
    return Store(path).series_values(0)[:, 0]


def test_on_gap_nan_and_ffill(tmp_path):
    src = _gappy(tmp_path, {0: "1", 1: "2", 4: "5", 5: "6", 7: "8"})
    s = ingest(src, tmp_path / "n.zarr", on_gap="nan")
    np.testing.assert_array_equal(
        _values(tmp_path / "n.zarr"), [1, 2, np.nan, np.nan, 5, 6, np.nan, 8]
    )
    assert s.n_gaps_filled == 3 and s.n_rows == 8
    s = ingest(src, tmp_path / "f.zarr", on_gap="ffill")
    np.testing.assert_array_equal(_values(tmp_path / "f.zarr"), [1, 2, 2, 2, 5, 6, 6, 8])
    assert s.n_gaps_filled == 3


def test_on_nan_keep_and_drop(tmp_path):
    src = _gappy(tmp_path, {0: "1", 1: "", 2: "NaN", 3: "4", 4: "inf", 5: "6"})
    s = ingest(src, tmp_path / "k.zarr", on_nan="keep")
    np.testing.assert_array_equal(_values(tmp_path / "k.zarr"), [1, np.nan, np.nan, 4, np.nan, 6])
    assert s.n_nan_dropped == 0 and s.n_gaps_filled == 0
    # Dropped rows leave gaps, which then meet on_gap; the frequency still comes from them.
    with pytest.raises(UserError, match="skips 2 step"):
        ingest(src, tmp_path / "d.zarr", on_nan="drop")
    s = ingest(src, tmp_path / "d.zarr", on_nan="drop", on_gap="ffill")
    np.testing.assert_array_equal(_values(tmp_path / "d.zarr"), [1, 1, 1, 4, 4, 6])
    assert s.n_nan_dropped == 3 and s.n_gaps_filled == 3 and s.freq == "h"


def test_min_length_drops_and_counts(tmp_path):
    panel = {"long": (0, np.arange(10.0)), "short": (0, np.arange(3.0)), "tiny": (5, np.ones(1))}
    s = ingest(_write_long_csv(tmp_path / "l.csv", panel), tmp_path / "l.zarr", min_length=4)
    assert (
        s.n_series == 1
        and s.n_dropped_short == 2
        and list(Store(tmp_path / "l.zarr").ids) == ["long"]
    )


def test_explicit_freq_fills_a_coarser_input(tmp_path):
    src = _gappy(tmp_path, {0: "1", 2: "3", 4: "5"})
    s = ingest(src, tmp_path / "x.zarr", freq="h", on_gap="nan")
    assert s.freq == "h" and s.n_gaps_filled == 2
    assert ingest(src, tmp_path / "y.zarr").freq == "2h"


# -- overwrite, clean-up, interruption -------------------------------------------------------
def test_overwrite(tmp_path):
    src = _write_long_csv(tmp_path / "o.csv", _panel(seed=8))
    ingest(src, tmp_path / "o.zarr")
    with pytest.raises(UserError, match="already exists"):
        ingest(src, tmp_path / "o.zarr")
    other = _write_long_csv(tmp_path / "o2.csv", _panel(n_series=2, seed=9))
    s = ingest(other, tmp_path / "o.zarr", overwrite=True)
    assert Store(tmp_path / "o.zarr").n_series == 2 == s.n_series
    assert _leftovers(tmp_path, "o.zarr") == []


def test_failures_leave_nothing_behind(tmp_path):
    src = _gappy(tmp_path, {0: "1", 1: "2", 3: "4"})
    with pytest.raises(UserError):
        ingest(src, tmp_path / "bad.zarr", piece_rows=1)
    assert not (tmp_path / "bad.zarr").exists() and _leftovers(tmp_path, "bad.zarr") == []


@pytest.mark.parametrize("where", ["read", "arrange", "write"])
def test_interrupt_in_any_pass_leaves_nothing_behind(tmp_path, monkeypatch, where):
    src = _write_long_csv(tmp_path / "i.csv", _panel(seed=10), shuffle_seed=2)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = {
        "read": (spill_mod.Spill, "append"),
        "arrange": (spill_mod.Spill, "arrange"),
        "write": (store_mod.StoreWriter, "add_series"),
    }[where]
    monkeypatch.setattr(*target, interrupt)
    with pytest.raises(KeyboardInterrupt):
        ingest(src, tmp_path / "i.zarr", piece_rows=8)
    assert not (tmp_path / "i.zarr").exists() and _leftovers(tmp_path, "i.zarr") == []


def test_spill_files_sit_beside_out_while_ingesting(tmp_path, monkeypatch):
    seen = []
    real = store_mod.StoreWriter.add_series

    def spy(self, *args, **kwargs):
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store_mod.StoreWriter, "add_series", spy)
    src = _write_long_csv(tmp_path / "s.csv", _panel(seed=11), shuffle_seed=3)
    ingest(src, tmp_path / "out" / "s.zarr", piece_rows=8)
    assert any(n.startswith(".s.zarr.sorted-") for n in seen[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s.zarr"]


def test_codec_and_chunk_rows_reach_the_store(tmp_path):
    src = _write_long_csv(tmp_path / "z.csv", _panel(seed=12))
    ingest(src, tmp_path / "z.zarr", codec=Codec(cname="zstd", clevel=3), chunk_rows=32)
    store = Store(tmp_path / "z.zarr")
    assert store.attrs["codec"]["cname"] == "zstd" and store.chunk_rows == 32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(format="tall"), "--format 'tall'"),
        (dict(on_gap="zero"), "--on-gap 'zero'"),
        (dict(on_nan="zero"), "--on-nan 'zero'"),
        (dict(min_length=0), "--min-length"),
        (dict(split="nope"), "unknown split preset"),
        (dict(codec=Codec(cname="nope")), "--codec 'nope'"),
        (dict(codec=Codec(clevel=10)), "--clevel 10"),
        (dict(codec=Codec(clevel=-1)), "--clevel -1"),
        (dict(codec=Codec(shuffle="bits")), "--shuffle 'bits'"),
        (dict(chunk_rows=0), "--chunk-rows"),
        (dict(piece_rows=-5), "--piece-rows"),
        (dict(min_length=-1), "--min-length"),
        (dict(split='{"kind": "holdout", "horizon": "9"}'), "whole number"),
        (dict(split='{"kind": "holdout", "horizon": 9, "val": 2}'), "no key 'val'"),
        (dict(split='{"kind": "ratio", "train": 0.7, "test": NaN}'), "fraction"),
        (dict(split="{" * 5000), "not valid JSON"),
        (dict(freq="0h"), "--freq '0h' is not a step forward"),
        (dict(freq="99999999999999999999D"), "time can count"),
        (dict(target=["y"], hist_exog=["y"]), "two roles"),
        (dict(id_col="ds"), "--id-col and --time-col"),
    ],
)
def test_bad_options(tmp_path, kwargs, match):
    src = _write_long_csv(tmp_path / "b.csv", _panel(n_series=2))
    with pytest.raises(UserError, match=match):
        ingest(src, tmp_path / "b.zarr", **kwargs)
    assert not (tmp_path / "b.zarr").exists()


@pytest.mark.parametrize("piece_rows", [3, 1000])
def test_regular_and_irregular_series_side_by_side(tmp_path, piece_rows):
    # Regular series take a batched path, the others a full per-series one: same results.
    cells = {
        "a": {0: "1", 1: "2", 2: "3"},
        "b": {3: "1", 4: "2", 6: "4"},  # a gap
        "c": {1: "5", 0: "4", 2: "6"},  # out of order
        "d": {7: "1"},  # one row
        "e": {0: "1", 1: "", 2: "3", 3: "4"},  # a missing value
        "f": {0: "9", 1: "8"},
    }
    lines = ["unique_id,ds,y"] + [
        f"{uid},{_stamp(k)},{v}" for uid, series in cells.items() for k, v in series.items()
    ]
    src = tmp_path / "mix.csv"
    src.write_text("\n".join(lines) + "\n")
    s = ingest(src, tmp_path / "m.zarr", on_gap="ffill", on_nan="drop", piece_rows=piece_rows)
    store = Store(tmp_path / "m.zarr")
    got = {uid: store.series_values(i)[:, 0].tolist() for i, uid in enumerate(store.ids)}
    assert got == {
        "a": [1, 2, 3],
        "b": [1, 2, 2, 4],
        "c": [4, 5, 6],
        "d": [1],
        "e": [1, 1, 3, 4],
        "f": [9, 8],
    }
    hour = T0.astype("M8[ns]").astype(np.int64) + np.array([0, 3, 0, 7, 0, 0]) * H
    assert store.starts.tolist() == hour.tolist()
    assert s.n_gaps_filled == 2 and s.n_nan_dropped == 1 and s.freq == "h"


def test_only_regular_files_are_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.csv")  # reading it would block until someone writes
    with pytest.raises(UserError, match="not a regular file"):
        ingest(tmp_path / "pipe.csv", tmp_path / "p.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.csv"]


def test_missing_folders_of_out_are_made_and_removed_on_failure(tmp_path):
    good = _write_long_csv(tmp_path / "g.csv", _panel(n_series=2))
    ingest(good, tmp_path / "a" / "b" / "g.zarr")
    assert Store(tmp_path / "a" / "b" / "g.zarr").n_series == 2
    bad = _gappy(tmp_path, {0: "1", 1: "2", 3: "4"})
    with pytest.raises(UserError, match="skips"):
        ingest(bad, tmp_path / "c" / "d" / "x.zarr")
    assert not (tmp_path / "c").exists()
