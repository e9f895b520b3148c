"""One way to run a hostile-input case: a real subprocess, then every promise checked.

    from tests.hostile.harness import Case, check
    CASES = [
        Case("ingest-out-is-cwd", ["data", "ingest", "{csv}", "--out", ".", "--overwrite"],
             code=2, says=r"refuse"),
    ]

    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_ingest(case, workspace):
        check(case, workspace)

A case runs `python -m tsforge ARGS...` (or `python -m tsforge.launch ARGS...` when its first
argument is "launch") in a private copy of the seed workspace (`conftest.py`: a CSV, a store,
a trained run). `{name}` (or `{folder/name}`) in an argument is replaced by that workspace
path. A case with
`signal_when` (a glob in the workspace) gets `signal` as soon as a path matches it, as a
scheduler's time limit or Ctrl-C would come mid-way. After the run:
  * the exit code is the case's (2 bad input, 1 environment fault, 75 stopped);
  * nothing printed a traceback;
  * a failing command wrote exactly one line to stderr, and it matches `says` (a command
    that succeeds with a warning too, when the case gives `says`);
  * every file that was in the workspace before is still there, unchanged, unless it matches
    one of `changes` (globs relative to the workspace);
  * no new file or folder appeared, unless it matches one of `creates`, and no temporary file
    (`*.tmp*`, `.tmp-*`) is left anywhere;
  * `after(workspace)`, when given, holds (what is on disk, in the case's own terms).

Faults of the machine are made for real: `tmpfs(path)` mounts a small tmpfs (as root; the
case is skipped otherwise), `fill_disk(path)` fills it, `read_only(path)` remounts it read-only;
`conftest.py` unmounts them after each test.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import signal as signals
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

TEMPORARY = ("*.tmp", "*.tmp-*", "*.tmp.*", ".*.tmp-*", "*.partial", "tmp*-tsforge*")


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: Sequence[str]
    code: int
    says: str = ""  # a regex the one stderr line must match (failures, warnings)
    prepare: Callable[[Path], None] | None = None  # makes the hostile input in the workspace
    after: Callable[[Path], None] | None = None  # checks what is left on disk
    changes: Sequence[str] = ()  # globs of existing files the command may change or remove
    creates: Sequence[str] = ()  # globs of new files or folders the command may leave
    cwd: str = ""  # relative to the workspace
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 300
    signal_when: str = ""  # a glob relative to the workspace: signal the command once it matches
    signal: int = signals.SIGTERM

    def __str__(self) -> str:
        return self.id


def command(case: Case, workspace: Path) -> list[str]:
    args = [fill(a, workspace) for a in case.argv]
    if args and args[0] == "launch":
        return [sys.executable, "-m", "tsforge.launch", *args[1:]]
    return [sys.executable, "-m", "tsforge", *args]


def fill(arg: str, workspace: Path) -> str:
    # {name} or {folder/name}: a path in the workspace (JSON such as {"kind": ...} is left)
    return re.sub(r"\{(\w[\w./-]*)\}", lambda m: str(workspace / m.group(1)), arg)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root: relative path -> (size, mtime_ns); folders (-1, 0)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            out[str((base / name).relative_to(root))] = (-1, 0)
        for name in filenames:
            path = base / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def matches(path: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, g) or fnmatch.fnmatch(path, g.rstrip("/") + "/*")
               for g in globs)  # fmt: skip


def run(case: Case, workspace: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default",
           **{k: fill(v, workspace) for k, v in case.env.items()}}  # fmt: skip
    cmd = command(case, workspace)
    if not case.signal_when:
        return subprocess.run(cmd, cwd=workspace / case.cwd, env=env, capture_output=True,
                              text=True, timeout=case.timeout)  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workspace / case.cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + case.timeout
    while proc.poll() is None and not any(workspace.glob(case.signal_when)):
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(case.signal)
    out, err = proc.communicate(timeout=case.timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# -- faults of the machine, made for real ----------------------------------------------------
MOUNTS: list[Path] = []


def tmpfs(path: Path, size: str = "2m") -> Path:
    """A tmpfs of `size` mounted at `path` (made if missing); skips the test when not root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    MOUNTS.append(path)
    return path


def read_only(path: Path) -> None:
    """Remount the tmpfs at `path` read-only (root ignores permission bits, not this)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


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


def unmount_all() -> None:
    while MOUNTS:
        subprocess.run(["umount", "-l", str(MOUNTS.pop())], check=False)


def check(case: Case, workspace: Path) -> subprocess.CompletedProcess:
    """Run the case in `workspace` and assert every promise (see the module docstring)."""
    if case.prepare:
        case.prepare(workspace)
    before = snapshot(workspace)
    proc = run(case, workspace)
    said = f"\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == case.code, said
    assert "Traceback" not in proc.stdout + proc.stderr, said
    if case.code != 0 or case.says:  # a failure, or a warning that a success must give
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one line on stderr{said}"
        assert re.search(case.says, lines[0]), f"stderr does not match {case.says!r}{said}"
    compare(case, before, snapshot(workspace), said)
    if case.after:
        case.after(workspace)
    return proc


def compare(case: Case, before: dict, after: dict, said: str = "") -> None:
    """Nothing of the user's removed or changed, nothing new but what the case creates."""
    for path, stat in before.items():
        if matches(path, case.changes):
            continue
        assert path in after, f"{path} was removed{said}"
        if stat[0] >= 0:
            assert after[path] == stat, f"{path} was changed{said}"
    for path in after.keys() - before.keys():
        name = Path(path).name
        assert not any(fnmatch.fnmatch(name, g) for g in TEMPORARY), f"{path} left behind{said}"
        assert matches(path, case.creates), f"{path} was created{said}"
