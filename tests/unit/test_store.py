"""The store layout, metadata, fingerprint and atomic writes (tsforge/data/store.py).

    pytest tests/unit/test_store.py
"""

import numpy as np
import pytest
import zarr

from tsforge.data.store import Codec, ColumnRoles, Store, StoreWriter
from tsforge.errors import UserError


def _write(path, series, *, roles=None, chunk_rows=64, **kw):
    roles = roles or ColumnRoles(target=["y"])
    with StoreWriter(path, roles=roles, freq="h", chunk_rows=chunk_rows, **kw) as w:
        for uid, start, values, *static in series:
            w.add_series(uid, start, values, static[0] if static else None)
        return w.commit(splits={"kind": "none"})


def _series(n=5, seed=0, channels=1):
    rng = np.random.default_rng(seed)
    return [
        (f"s{i}", 3_600 * 10**9 * i, rng.normal(size=(50 + 17 * i, channels)).astype(np.float32))
        for i in range(n)
    ]


def test_layout_round_trip(tmp_path):
    series = _series(channels=3)
    roles = ColumnRoles(target=["a"], hist_exog=["h"], futr_exog=["f"])
    store = _write(tmp_path / "s.zarr", series, roles=roles)
    raw = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert set(raw.keys()) >= {"values", "indptr", "series"}
    assert raw["values"].shape == (sum(len(v) for _, _, v in series), 3)
    assert raw["values"].chunks == (64, 3)
    np.testing.assert_array_equal(store.indptr, np.cumsum([0] + [len(v) for _, _, v in series]))
    for i, (uid, start, values) in enumerate(series):
        assert store.ids[i] == uid and store.starts[i] == start
        np.testing.assert_array_equal(store.series_values(i), values)
        np.testing.assert_allclose(store.stats("mean")[i], values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store.stats("std")[i], values.std(0), rtol=1e-4)
    assert store.columns == ["a", "h", "f"]
    assert store.attrs["schema_version"] == 1


def test_codec_is_explicit(tmp_path):
    store = _write(tmp_path / "s.zarr", _series(), codec=Codec(cname="zstd", clevel=3))
    (compressor,) = store.values.compressors
    assert compressor.cname.value == "zstd" and compressor.clevel == 3
    assert compressor.shuffle.value == "shuffle"
    assert store.info()["codec"]["cname"] == "zstd"


def test_info_keys(tmp_path):
    info = _write(tmp_path / "s.zarr", _series()).info()
    for key in ("n_series", "n_timesteps", "n_channels", "columns", "freq", "fingerprint",
                "chunks", "codec", "splits"):
        assert key in info
    assert info["n_series"] == 5 and info["n_channels"] == 1


def test_fingerprint_deterministic_and_sensitive(tmp_path):
    series = _series()
    a = _write(tmp_path / "a.zarr", series).fingerprint
    b = _write(tmp_path / "b.zarr", series).fingerprint
    assert a == b
    changed = [(u, s, v.copy()) for u, s, v in series]
    changed[3][2][7, 0] += 1e-3
    assert _write(tmp_path / "c.zarr", changed).fingerprint != a
    renamed = [("x" if i == 0 else u, s, v) for i, (u, s, v) in enumerate(series)]
    assert _write(tmp_path / "d.zarr", renamed).fingerprint != a


def test_static_and_nan_stats(tmp_path):
    values = np.array([[1.0], [np.nan], [3.0]], dtype=np.float32)
    roles = ColumnRoles(target=["y"], static=["size"])
    store = _write(tmp_path / "s.zarr", [("a", 0, values, np.array([7.0]))], roles=roles)
    assert store.static.tolist() == [[7.0]]
    assert store.stats("count")[0, 0] == 2
    assert store.stats("mean")[0, 0] == pytest.approx(2.0)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "s.zarr"
    roles = ColumnRoles(target=["y"])
    with pytest.raises(RuntimeError), StoreWriter(out, roles=roles, freq="h") as w:
        w.add_series("a", 0, np.zeros((10, 1)))
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_path_refused_unless_overwrite(tmp_path):
    out = tmp_path / "s.zarr"
    _write(out, _series())
    with pytest.raises(UserError, match="--overwrite"):
        _write(out, _series())
    assert _write(out, _series(n=2), overwrite=True).n_series == 2


def test_open_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Store(tmp_path / "missing.zarr")
    (tmp_path / "junk").mkdir()
    with pytest.raises(UserError, match="not a tsforge store"):
        Store(tmp_path / "junk")


def test_empty_store_refused(tmp_path):
    with pytest.raises(UserError, match="no series"), StoreWriter(
        tmp_path / "s.zarr", roles=ColumnRoles(target=["y"]), freq="h"
    ) as w:
        w.commit()
    assert not (tmp_path / "s.zarr").exists()


def test_roles_refuse_duplicates():
    with pytest.raises(UserError, match="two roles"):
        ColumnRoles(target=["y"], hist_exog=["y"])


def test_overwrite_replaces_only_a_store(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="not a tsforge store"):
        _write(folder, _series(), overwrite=True)
    assert (folder / "a.txt").read_text() == "mine" and sorted(tmp_path.iterdir()) == [folder]


def test_a_failed_replacement_keeps_the_old_store(tmp_path, monkeypatch):
    from tsforge.data import store as store_mod

    out = tmp_path / "s.zarr"
    fingerprint = _write(out, _series()).fingerprint

    def fail(tmp, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod, "place", fail)
    with pytest.raises(OSError):
        _write(out, _series(n=2), overwrite=True)
    assert Store(out).fingerprint == fingerprint and sorted(tmp_path.iterdir()) == [out]


def test_is_store_reads_the_metadata_and_never_follows_a_link(tmp_path):
    from tsforge.data.store import is_store

    out = tmp_path / "s.zarr"
    _write(out, _series())
    (tmp_path / "link").symlink_to(out)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text('{"node_type": "group", "attributes": {}}')
    assert is_store(out)
    assert not is_store(tmp_path / "link") and not is_store(tmp_path / "plain")


@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "zarr.json").write_text("{"), "not valid JSON"),
    (lambda p: (p / "zarr.json").unlink(), "no zarr.json"),
    (lambda p: _edit(p, roles={"target": "y"}), "'roles' has a bad entry 'target'"),
    (lambda p: _edit(p, columns=["y", "z"]), "are not the roles'"),
    (lambda p: _edit(p, n_series=2), "indptr has shape"),
    (lambda p: _edit(p, time_unit="days"), "'time_unit'"),
], ids=["json", "no-meta", "roles", "columns", "n_series", "time_unit"])  # fmt: skip
def test_damaged_metadata_is_a_user_error_naming_the_store(tmp_path, damage, words):
    out = tmp_path / "s.zarr"
    _write(out, _series())
    damage(out)
    with pytest.raises(UserError, match=words) as err:
        Store(out)
    assert str(out) in str(err.value)


def _edit(path, **attrs):
    import json

    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"].update(attrs)
    (path / "zarr.json").write_text(json.dumps(doc))


def test_a_damaged_chunk_is_a_user_error_naming_the_store(tmp_path):
    out = tmp_path / "s.zarr"
    store = _write(out, _series(n=1))
    (out / "values" / "c" / "0" / "0").write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="damaged chunk"):
        Store(out).series_values(0)
    assert store.values.shape == (50, 1)  # the rest of zarr's array is as it was
