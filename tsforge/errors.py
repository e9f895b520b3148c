"""Errors that reach the user as one line and exit code 2.

Library code raises `UserError` for bad input (a missing column, a wrong key, a store that
does not exist); the command-line edge turns it into `tsforge: error: <message>` on stderr
and exit code 2, with no traceback. Anything else is a bug and exits 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REQUEUE = 75  # EX_TEMPFAIL: training stopped by a signal after a checkpoint; launch again


class UserError(Exception):
    """Bad input or usage. The message names what is wrong and how to fix it, in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
