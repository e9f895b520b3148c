"""Errors that reach the user as one line, and the exit codes they map to.

Library code raises `UserError` for bad input (a missing column, a wrong key, a store that
does not exist); the command-line edge turns it into `tsforge: error: <message>` on stderr
and exit code 2, with no traceback. A fault of the machine rather than of the input (a full
disk, a read-only filesystem) is an `OSError` that `environment_fault` recognises: one line
naming the path, exit code 1. Anything else is a bug and exits 1 with its traceback.
"""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REQUEUE = 75  # EX_TEMPFAIL: training stopped by a signal after a checkpoint; launch again

# errno values that say "this machine cannot store the files here", whatever the input
_ENVIRONMENT = {
    errno.ENOSPC: "free some space there",
    errno.EDQUOT: "free some space there (disk quota exceeded)",
    errno.EROFS: "make it writable",
    errno.EACCES: "make it writable for this user",
    errno.EIO: "check the disk",
}


class UserError(Exception):
    """Bad input or usage. The message names what is wrong and how to fix it, in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def environment_fault(
    err: BaseException, where: str | os.PathLike | None = None, also: str = ""
) -> str | None:
    """The one line for a filesystem fault (disk full, read-only, ...), or None if `err` (or
    what caused it) is not one. `where` names the place when the error itself names no file;
    `also` is another way out, added to the fix."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _ENVIRONMENT:
            path = err.filename or where or "the run directory"
            reason = err.strerror or os.strerror(err.errno)
            verb = "write" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "access"
            return f"cannot {verb} {path}: {reason}: {_ENVIRONMENT[err.errno]}{also}"
        err = err.__cause__ or err.__context__
    return None
