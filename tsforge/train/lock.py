"""One launch at a time per run directory: `RUN_DIR/.lock`, held while the run trains.

    with RunLock(run_dir):        # UserError naming pid@host when another launch holds it
        train()
    holder(run_dir)               # "pid@host" of the launch holding it, or None

The lock is `fcntl.flock` on `RUN_DIR/.lock`, which holds `pid@host` of its holder. The kernel
drops it when the holder's process ends, however it ends (even SIGKILL), so a lock file left
behind by a dead launch never blocks the next one. Who holds it: the local launcher's process
(its DDP workers train under it), or rank 0 of a SLURM job; the submitting side of
`launcher=slurm` only checks that it is free. The file is removed on release.

A file that can be removed while others open it needs care: a launch that opened the old file
just before its holder removed it would lock a file that no longer has a name. After locking,
the launch therefore checks that `RUN_DIR/.lock` is still the file it locked, and tries again
if not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import platform
import sys
from pathlib import Path

from tsforge.errors import UserError

LOCK_NAME = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


def in_use(run_dir: Path, who: str) -> UserError:
    """The refusal of a launch into a run directory that `who` (pid@host) holds."""
    pid = who.split("@", 1)[0]
    stop = f"stop it (kill -TERM {pid}), " if pid.isdigit() else ""
    return UserError(
        f"run directory {run_dir} is in use by pid {who or '(unknown)'}: another launch is "
        f"training it; wait for it to end, {stop}or use another hydra.run.dir"
    )


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode(errors="replace").strip()


def holder(run_dir: str | os.PathLike) -> str | None:
    """`pid@host` of the launch that holds the run directory, or None when it is free."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd) or "(unknown)"
    except OSError as err:
        if err.errno in _UNSUPPORTED:
            return None
        raise
    finally:
        os.close(fd)
    return None


class RunLock:
    """The run directory's lock, held from `acquire()` (or `with`) to `release()`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        for _ in range(10):  # another launch may remove the file between our open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _read(fd)
                os.close(fd)
                raise in_use(self.run_dir, who) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in _UNSUPPORTED:
                    raise
                print(f"tsforge: note: {self.path} cannot be locked on this filesystem: make "
                      "sure only one launch at a time uses this run directory", file=sys.stderr)
                return self
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}@{platform.node()}\n".encode())
            self._fd = fd
            return self
        raise UserError(f"could not lock {self.path}: other launches keep replacing it")

    def release(self) -> None:
        if self._fd is None:
            return
        # Remove the name while still holding the lock: a launch that opens the old file now
        # finds it unnamed after locking it and tries again (see the module docstring).
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
