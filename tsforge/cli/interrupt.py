"""Ctrl-C and a polite kill (`kill PID`, a scheduler's time limit) end a command alike.

Both raise KeyboardInterrupt, so the command's own clean-up runs on the way out, and the
command exits 130. Some C code (numpy's file writers among them) turns an exception raised
inside it into an unrelated error; `received()` lets the caller still recognise the stop.
pyarrow's own SIGINT handler, which it installs around its readers, is turned off inside the
block: a Ctrl-C that came while a reader ran, and that the reader finished without checking,
was lost with it, and the command went on to the end.

    with stop_on_signals():
        long_running_work()
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _raise(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block."""
    import pyarrow

    pyarrow.enable_signal_handlers(False)
    previous = {sig: signal.signal(sig, _raise) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        pyarrow.enable_signal_handlers(True)


def received() -> bool:
    """Whether a stop signal arrived while a `stop_on_signals` block ran."""
    return bool(_received)
