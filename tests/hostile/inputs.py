"""Hostile inputs and faulty disks, made in a case's workspace (a `Case`'s `prepare`).

    from tests.hostile.inputs import write, fifo, full_disk
    Case("a-pipe", [...], code=2, says=..., prepare=fifo("pipe.csv"))

Each maker returns the `prepare(workspace)` of a case; the workspace holds `data.csv` (3
hourly series a, b, c of 300 rows), `store.zarr` and `run/` (see conftest.py). Not a test
module: `python -m pytest tests/hostile` runs the cases that use it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.hostile.conftest import write_csv
from tests.hostile.harness import fill_disk, read_only, tmpfs

Prepare = Callable[[Path], None]


def write(name: str, data: bytes | str) -> Prepare:
    """The file `name` with exactly `data` in it."""

    def prepare(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return prepare


def rewrite(name: str, change: Callable[[str], str]) -> Prepare:
    """The file `name`: data.csv's text with `change` applied."""
    return lambda ws: (ws / name).write_text(change((ws / "data.csv").read_text()))


def series(name: str, length: int = 300, step_min: int = 60) -> Prepare:
    """The seed's three series at another length or step (a big input, another frequency)."""
    return lambda ws: write_csv(ws / name, n_series=3, length=length, step_min=step_min)


def fifo(name: str) -> Prepare:
    """A named pipe: reading it blocks until someone writes."""
    return lambda ws: os.mkfifo(ws / name)


def link(name: str, target: str) -> Prepare:
    """A symbolic link `name` to `target` (absolute, or relative to the workspace)."""
    return lambda ws: (ws / name).symlink_to(target if target.startswith("/") else ws / target)


def folder_with_a_file(name: str) -> Prepare:
    """A folder that is not a store: a user's notes."""

    def prepare(ws: Path) -> None:
        (ws / name).mkdir()
        (ws / name / "notes.txt").write_text("not a store\n")

    return prepare


def copy(src: str, dst: str) -> Prepare:
    """A copy of the workspace's `src` (file or folder) at `dst`."""

    def prepare(ws: Path) -> None:
        (ws / dst).parent.mkdir(parents=True, exist_ok=True)
        if (ws / src).is_dir():
            shutil.copytree(ws / src, ws / dst)
        else:
            shutil.copyfile(ws / src, ws / dst)

    return prepare


def edit_meta(store: str, change: Callable[[dict], object]) -> Prepare:
    """The store's zarr.json attributes edited by hand, as a user's editor could."""

    def prepare(ws: Path) -> None:
        path = ws / store / "zarr.json"
        doc = json.loads(path.read_text())
        change(doc["attributes"])
        path.write_text(json.dumps(doc))

    return prepare


def full_disk(folder: str = "disk", leave_kib: int = 0, keep: str = "") -> Prepare:
    """A 2 MiB tmpfs at `folder`, holding a copy of `keep` (if given), then filled up to
    `leave_kib` KiB of free space. Needs root (the case is skipped otherwise)."""

    def prepare(ws: Path) -> None:
        disk = tmpfs(ws / folder)
        if keep:
            shutil.copytree(ws / keep, disk / Path(keep).name)
        fill_disk(disk, leave_kib)

    return prepare


def read_only_disk(folder: str = "disk") -> Prepare:
    """A read-only tmpfs at `folder` (root ignores permission bits, not a read-only mount)."""
    return lambda ws: read_only(tmpfs(ws / folder))


def both(*makers: Prepare) -> Prepare:
    """Several makers, in order."""

    def prepare(ws: Path) -> None:
        for make in makers:
            make(ws)

    return prepare
