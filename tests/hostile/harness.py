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
path. With `interrupt`, a stop signal is sent to it at a moment it names (see `Interrupt`), as
a scheduler's time limit or Ctrl-C would come mid-way. After the run:
  * the exit code is the case's (2 bad input, 1 environment fault, 75 stopped);
  * nothing printed a traceback;
  * a failing command wrote exactly one line to stderr, and it matches `says`; a command that
    succeeds and has `says` wrote a line to stderr that matches it (a note);
  * every file that was in the workspace before is still there, unchanged, unless it matches
    one of `changes` (globs relative to the workspace);
  * no new file or folder appeared, unless it matches one of `creates`, and no temporary file
    (`*.tmp*`, `.tmp-*`) is left anywhere;
  * `after(workspace)`, when given, holds (what is on disk, in the case's own terms).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TEMPORARY = ("*.tmp", "*.tmp-*", "*.tmp.*", ".*.tmp-*", "*.partial", "tmp*-tsforge*")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@dataclasses.dataclass(frozen=True)
class Interrupt:
    """Send `signum` to the command as soon as `when` holds, observed from outside (no sleep
    of a guessed length):
      "handlers"  the process catches every stop signal (/proc/PID/status): the earliest
                  moment a launch can act on one, while it is still importing;
      "workers"   it has started its DDP worker processes (they are still starting up);
      "file:GLOB" a path in the workspace matches GLOB (a spill file, a temporary store);
      a regex     a line of its stdout matches it (e.g. r"^step +2/").
    `group`: to its whole process group, as a terminal or a scheduler would send it."""

    signum: int
    when: str
    group: bool = False

    def __str__(self) -> str:
        return f"{signal.Signals(self.signum).name}@{self.when}"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: Sequence[str]
    code: int
    says: str = ""  # a regex the one stderr line must match (failing cases)
    prepare: Callable[[Path], None] | None = None  # makes the hostile input in the workspace
    after: Callable[[Path], None] | None = None  # checks what is left on disk
    changes: Sequence[str] = ()  # globs of existing files the command may change or remove
    creates: Sequence[str] = ()  # globs of new files or folders the command may leave
    cwd: str = ""  # relative to the workspace
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 300
    interrupt: Interrupt | None = None  # a stop signal sent while it runs

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
    if case.interrupt is not None:
        return run_interrupted(case, command(case, workspace), workspace, env)
    return subprocess.run(command(case, workspace), cwd=workspace / case.cwd, env=env,
                          capture_output=True, text=True, timeout=case.timeout)  # fmt: skip


def catches_stop_signals(pid: int, cmd: Sequence[str]) -> bool:
    """Has process `pid`, running `cmd`, installed handlers for every stop signal? (Linux:
    SigCgt). Between fork and exec the child still shows the parent's handlers: its command
    line tells the two apart."""
    try:
        running = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if "\0".join(cmd).encode() not in running:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return all(caught >> (sig - 1) & 1 for sig in STOP_SIGNALS)


def worker_pids(pid: int) -> list[int]:
    """The multiprocessing workers (spawned) among the children of `pid`."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except OSError:
            continue
    return found


def run_interrupted(
    case: Case, cmd: list[str], workspace: Path, env: dict
) -> subprocess.CompletedProcess:
    """Run `cmd`, send the case's signal once its moment comes, and collect the output."""
    it = case.interrupt
    observed = it.when in ("handlers", "workers") or it.when.startswith("file:")
    pattern = None if observed else re.compile(it.when)
    proc = subprocess.Popen(cmd, cwd=workspace / case.cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out: list[str] = []
    err: list[str] = []
    marker = threading.Event()

    def read(stream, into: list[str], watch: bool) -> None:
        for line in stream:
            into.append(line)
            if watch and pattern.search(line):
                marker.set()

    readers = [threading.Thread(target=read, args=(proc.stdout, out, pattern is not None)),
               threading.Thread(target=read, args=(proc.stderr, err, False))]
    for t in readers:
        t.start()
    if it.when == "handlers":
        ready = lambda: catches_stop_signals(proc.pid, cmd)  # noqa: E731
    elif it.when == "workers":
        ready = lambda: bool(worker_pids(proc.pid))  # noqa: E731
    elif it.when.startswith("file:"):
        ready = lambda: any(workspace.glob(it.when[len("file:"):]))  # noqa: E731
    else:
        ready = marker.is_set
    deadline = time.monotonic() + case.timeout
    try:
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:  # else it ended first: its exit code tells
            if it.group:
                os.killpg(proc.pid, it.signum)
            else:
                proc.send_signal(it.signum)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for t in readers:
            t.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(err))


def check(case: Case, workspace: Path) -> subprocess.CompletedProcess:
    """Run the case in `workspace` and assert every promise (see the module docstring)."""
    if case.prepare:
        case.prepare(workspace)
    before = snapshot(workspace)
    proc = run(case, workspace)
    said = f"\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == case.code, said
    assert "Traceback" not in proc.stdout + proc.stderr, said
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if case.code != 0:
        assert len(lines) == 1, f"expected one line on stderr{said}"
        assert re.search(case.says, lines[0]), f"stderr does not match {case.says!r}{said}"
    elif case.says:
        assert any(re.search(case.says, ln) for ln in lines), f"no note {case.says!r}{said}"
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


def unmount_under(ws: Path) -> None:
    """Unmount what a case mounted inside its workspace (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{ws}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
