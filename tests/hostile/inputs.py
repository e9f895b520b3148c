"""Hostile inputs and faulty disks, made in a case's workspace (a `Case`'s `prepare`), and
the launches that run beside or after a case.

    from tests.hostile.inputs import write, fifo, full_disk, crafted_checkpoint
    Case("a-pipe", [...], code=2, says=..., prepare=fifo("pipe.csv"))

    full_disk("disk", leave_kib=0, keep="")   a 2 MiB tmpfs at ws/disk (with a copy of ws/keep),
                                              filled up (root only; unmounted by the fixture)
    read_only_disk("disk", keep="")           the same, remounted read-only
    crafted_checkpoint(path)                  a checkpoint whose unpickling would create PWNED
    start_launch(ws, args) / stop_launch(ws)  a launch running beside the case
    relaunch(ws, args)                        launch again after a case, as a user would

Each maker returns the `prepare(workspace)` of a case; the workspace holds `data.csv` (3
hourly series a, b, c of 300 rows), `store.zarr` and `run/` (see conftest.py). Not a test
module: `python -m pytest tests/hostile` runs the cases that use it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.hostile.conftest import TINY_RUN, write_csv

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


def both(*makers: Prepare) -> Prepare:
    """Several makers, in order."""

    def prepare(ws: Path) -> None:
        for make in makers:
            make(ws)

    return prepare


# -- faults of the machine, made for real (root only: the case is skipped otherwise) ----------
def tmpfs(path: Path, size: str = "2m") -> Path:
    """A tmpfs of `size` mounted at `path` (made if missing); the workspace fixture unmounts it
    (`harness.unmount_under`)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    return path


def fill_disk(path: Path, leave_kib: int = 0) -> None:
    """Fill the file system of the folder `path` up to `leave_kib` KiB of free space."""
    st = os.statvfs(path)
    data = memoryview(bytes(max(0, st.f_bavail * st.f_frsize - leave_kib * 1024)))
    with open(path / "filler", "wb", buffering=0) as f:
        while data:
            try:
                data = data[f.write(data) :]
            except OSError:  # the file system's own overhead: full a little earlier
                break


def _disk(ws: Path, folder: str, keep: str) -> Path:
    disk = tmpfs(ws / folder)
    if keep:
        shutil.copytree(ws / keep, disk / Path(keep).name)
    return disk


def full_disk(folder: str = "disk", leave_kib: int = 0, keep: str = "") -> Prepare:
    """A 2 MiB tmpfs at `folder`, holding a copy of `keep` (if given), then filled up to
    `leave_kib` KiB of free space."""
    return lambda ws: fill_disk(_disk(ws, folder, keep), leave_kib)


def read_only_disk(folder: str = "disk", keep: str = "") -> Prepare:
    """A tmpfs at `folder` holding a copy of `keep` (if given), remounted read-only (root
    ignores permission bits, not a read-only mount)."""

    def prepare(ws: Path) -> None:
        disk = _disk(ws, folder, keep)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    return prepare


PWNED = "PWNED"  # what a crafted checkpoint would create if it were ever run


class _Payload:
    """Unpickling it opens (so creates) PWNED beside the checkpoint: code in a data file."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def crafted_checkpoint(path: Path, *, raw: bool = False) -> None:
    """A tsforge-looking checkpoint (torch's zip format, or a bare pickle with `raw`) whose
    loading with pickle's full powers would create PWNED in the workspace."""
    obj = {"format_version": 2, "step": 4, "model": _Payload(path.parents[2] / PWNED)}
    path.unlink(missing_ok=True)  # latest.pt is a hard link: do not write through it
    if raw:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path)


def truncate(path: Path, keep: float = 0.3) -> None:
    data = path.read_bytes()
    path.unlink()  # a hard link to a step file: replace it, do not write through it
    path.write_bytes(data[: int(len(data) * keep)])


def json_of(path: Path):
    return json.loads(path.read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- launches beside a case, and after it ---------------------------------------------------
def launch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tsforge.launch", *TINY_RUN, *args]


_beside: dict[Path, tuple[subprocess.Popen, Path]] = {}


def start_launch(ws: Path, *args: str, ready: str = "step ") -> None:
    """Start a launch in `ws` and return once a line of its output starts with `ready` (its
    output goes to a file outside the workspace, so that a full pipe never stalls it)."""
    log = ws.parent / f"beside-{len(_beside)}.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(launch_cmd(*args), cwd=ws, stdout=out, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
    _beside[ws] = (proc, log)
    deadline = time.monotonic() + 300
    while not any(ln.startswith(ready) for ln in log.read_text().splitlines()):
        assert proc.poll() is None, f"the launch beside the case ended:\n{log.read_text()}"
        assert time.monotonic() < deadline, "the launch beside the case never got ready"
        time.sleep(0.05)


def stop_launch(ws: Path) -> int:
    """SIGTERM the launch beside the case; its exit code once it has stopped."""
    proc, log = _beside.pop(ws)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    assert "Traceback" not in log.read_text(), log.read_text()
    return code


def stop_leftovers() -> None:
    """Kill launches that a failed case left running."""
    for ws in list(_beside):
        proc, _ = _beside.pop(ws)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def relaunch(ws: Path, *args: str) -> subprocess.CompletedProcess:
    """Launch again in `ws` and expect success, as a user would after the case."""
    proc = subprocess.run(launch_cmd(*args), cwd=ws, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"relaunch failed ({proc.returncode}):\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc
