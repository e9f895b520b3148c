"""Where a command may write, and how its output takes its place (tsforge/data/outputs.py).

    python -m pytest tests/unit/test_outputs.py
"""

import errno
import os

import pytest

from tsforge.data import outputs
from tsforge.data.outputs import check_target, missing_parents, place, write_fault
from tsforge.errors import UserError


def _check(path, **kw):
    options = dict(flag="--out", overwrite=True, inputs=(), replaceable=lambda p: True, what="x")
    check_target(path, **{**options, **kw})


def _folder(path, text):
    path.mkdir()
    (path / "f").write_text(text)
    return path


def test_a_free_path_is_always_fine(tmp_path):
    _check(tmp_path / "new.zarr", overwrite=False, replaceable=lambda p: False)


@pytest.mark.parametrize("why", ["exists", "link", "cwd", "holds-cwd", "input", "holds-input",
                                 "not-replaceable"])  # fmt: skip
def test_refusals(tmp_path, monkeypatch, why):
    target = _folder(tmp_path / "t", "mine")
    kw = {}
    if why == "exists":
        kw["overwrite"] = False
    elif why == "link":
        (tmp_path / "link").symlink_to(target)
        target = tmp_path / "link"
    elif why == "cwd":
        monkeypatch.chdir(target)
        target = tmp_path / "t" / "."
    elif why == "holds-cwd":
        (target / "sub").mkdir()
        monkeypatch.chdir(target / "sub")
    elif why == "input":
        kw["inputs"] = [target / "f"]
        target = target / "f"
    elif why == "holds-input":
        kw["inputs"] = [target / "f"]
    else:
        kw["replaceable"] = lambda p: False
    words = {"exists": "already exists", "link": "symbolic link", "cwd": "current folder",
             "holds-cwd": "current folder", "input": "is the input", "holds-input": "holds it",
             "not-replaceable": "is not x"}[why]  # fmt: skip
    with pytest.raises(UserError, match=words):
        _check(target, **kw)
    assert (tmp_path / "t" / "f").read_text() == "mine"


def test_missing_parents(tmp_path):
    assert missing_parents(tmp_path / "a" / "b" / "c.zarr", "--out") == [
        tmp_path / "a" / "b", tmp_path / "a"]  # fmt: skip
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        missing_parents(tmp_path / "file" / "c.zarr", "--out")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_place_swaps_folders_and_removes_the_old(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(outputs, "_renameat2", lambda *a: False)
    old, new = _folder(tmp_path / "s.zarr", "old"), _folder(tmp_path / ".tmp-1", "new")
    place(new, old)
    assert (old / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_place_puts_the_old_folder_back_if_the_new_cannot_take_its_place(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_renameat2", lambda *a: False)
    old, new = _folder(tmp_path / "s.zarr", "old"), _folder(tmp_path / ".tmp-1", "new")
    real = os.rename

    def rename(src, dst):
        if str(src) == str(new):
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(outputs.os, "rename", rename)
    with pytest.raises(OSError):
        place(new, old)
    assert (old / "f").read_text() == "old"


def test_place_takes_a_free_path_only_while_it_is_free(tmp_path):
    new = _folder(tmp_path / ".tmp-1", "new")
    place(new, tmp_path / "out.zarr")
    assert (tmp_path / "out.zarr" / "f").read_text() == "new"
    (tmp_path / "f.tmp").write_text("forecasts")
    place(tmp_path / "f.tmp", tmp_path / "f.csv")
    (tmp_path / "g.tmp").write_text("again")
    place(tmp_path / "g.tmp", tmp_path / "f.csv")  # a file replaces a file
    assert (tmp_path / "f.csv").read_text() == "again"


def test_write_fault_names_the_output_and_the_way_out(tmp_path):
    full = write_fault(OSError(errno.ENOSPC, "x", "/tmp/.s.zarr.spill-1"), tmp_path / "s", "--out")
    assert full.filename == str(tmp_path / "s") and "free some space" in full.strerror
    ro = write_fault(OSError(errno.EROFS, "x"), tmp_path / "s", "--output")
    assert ro.strerror == "Read-only file system: choose another --output"


def test_writing_removes_the_folders_it_made_and_names_the_output(tmp_path):
    from tsforge.data.outputs import writing

    made = missing_parents(tmp_path / "a" / "b" / "s.zarr", "--out")
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(OSError) as err, writing(tmp_path / "a/b/s.zarr", "--out", made=made):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".x.spill-1"))
    assert err.value.filename == str(tmp_path / "a/b/s.zarr") and not (tmp_path / "a").exists()
    source = OSError(errno.EIO, "I/O error", "in.csv")  # reading the input: named as it is
    with pytest.raises(OSError) as err, writing("s.zarr", "--out", reads=lambda e: True):
        raise source
    assert err.value is source
