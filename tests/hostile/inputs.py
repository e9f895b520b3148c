"""Hostile inputs for the run cases of the suite, made in a case's workspace by its `prepare`.

    crafted_checkpoint(path)          a checkpoint whose unpickling would create PWNED
    full_disk(ws, "full", free_kib=0) a small tmpfs at ws/full, filled up (root only)
    read_only(ws, "ro", copy="run")   a tmpfs at ws/ro holding a copy of the run, read-only
    start_launch(ws, args) / stop_launch(ws)   a launch running beside the case
    relaunch(ws, args)                launch again after a case, as a user would

Used by test_launch.py and test_resume.py (python -m pytest tests/hostile).
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
from pathlib import Path

import pytest
import torch

from tests.hostile.conftest import TINY_RUN

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


# -- filesystems (root only: the test mounts a tmpfs, which the test function unmounts) -----
def _mount(point: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def full_disk(ws: Path, name: str, *, copy: str | None = None, free_kib: int = 0) -> None:
    """A 1 MiB tmpfs at ws/name (with a copy of ws/copy), filled up to `free_kib` free."""
    point = ws / name
    _mount(point, "1m")
    if copy:
        shutil.copytree(ws / copy, point / copy)
    fs = os.statvfs(point)
    fill = fs.f_bavail * fs.f_frsize - free_kib * 1024
    with open(point / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, fill))


def read_only(ws: Path, name: str, *, copy: str | None = None) -> None:
    """A tmpfs at ws/name (with a copy of ws/copy), remounted read-only."""
    point = ws / name
    _mount(point, "2m")
    if copy:
        shutil.copytree(ws / copy, point / copy)
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def unmount_under(ws: Path) -> None:
    """Unmount what a case mounted inside its workspace (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{ws}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


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
