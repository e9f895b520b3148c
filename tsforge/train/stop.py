"""Stop signals: SIGTERM, SIGUSR1 and SIGUSR2 ask a run to stop where it can resume (exit 75).

    from tsforge.train import stop
    stop.install()          # first thing at launch: from now on a stop signal is only recorded
    stop.requested()        # the first stop signal received, or None
    with stop.handled():    # the training loop: record signals while it runs, then hand
        ...                 # them back to whoever had them before (submitit, on SLURM)
    with stop.held():       # local DDP: workers start with the signals held back, pending,
        spawn_workers()     # until they `install()` and `release()` in their own process;
        with stop.relayed(lambda: worker_pids):   # the launcher passes signals on to them

A signal never kills a launch part-way: the handler records it and returns, and the launch
looks at the record where stopping is safe: before the run directory is made, before the
first step, after every step. The process then exits 75 with a run that resumes (or, when
nothing was trained yet, starts cleanly) when launched again.

Nothing here imports more than the standard library, so that `install()` runs before the
launch's heavy imports (Hydra, torch), which take seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
_received: list[int] = []


def _record(signum, frame) -> None:
    _received.append(signum)


def install() -> None:
    """From now on a stop signal is recorded instead of ending the process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)


def requested() -> int | None:
    """The first stop signal this process received, or None."""
    return _received[0] if _received else None


def name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Record stop signals inside the block; the handlers from before are back after it."""
    old = {sig: signal.signal(sig, _record) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold stop signals back inside the block: they wait, pending, until it ends.

    Processes started inside inherit the held-back set (fork and exec keep the signal mask),
    so a signal sent to a worker while it is still importing waits until the worker has its
    handler and calls `release()`, instead of killing it.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def relayed(pids: Callable[[], Iterable[int]]) -> Iterator[None]:
    """Inside the block a stop signal is recorded here and sent on to the processes `pids()`
    names (a launcher's workers); one received before the block is sent on at its start."""

    def relay(signum, frame) -> None:
        _record(signum, frame)
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    old = {sig: signal.signal(sig, relay) for sig in STOP_SIGNALS}
    if _received:
        relay(_received[0], None)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def release() -> None:
    """Let held-back stop signals through (after `install()`): pending ones arrive now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
