"""`launcher=local`: train in this process, or in `launcher.nprocs` DDP processes here.

    launch_local(cfg, run_dir) -> exit code (what run_rank returns, or 1 / 2 on failure)

This process holds the run directory's lock (`tsforge.train.lock`) for as long as the run
trains; its DDP processes train under it. The processes get torchrun-style variables (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and run the same `run_rank` as every other
launcher. If one process fails, the others are stopped and its traceback is printed (no
hang); bad input or a full disk in a process is one line, as in a single process.

Stop signals: the processes start with them held back (`stop.held`) and let them through once
their own handler is in place, so that a signal during their start-up waits instead of
killing them; signals sent to this process are passed on to them, and they checkpoint and
exit 75. If this process dies without passing anything on (SIGKILL), they get SIGTERM from
the kernel and stop the same way, with a checkpoint. A worker whose result is recorded exits
at once (`leave_now`), without the interpreter's teardown.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp
from omegaconf import DictConfig, OmegaConf

from tsforge.errors import EXIT_FAILURE, EXIT_REQUEUE, EXIT_USAGE, UserError, environment_fault
from tsforge.train import stop
from tsforge.train.distributed import leave_now, read_env
from tsforge.train.lock import RunLock

_NO_RESULT = -1  # a worker's slot in `codes` before it records its result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_with_parent(launcher: int) -> None:
    """A worker whose launcher dies (SIGKILL, the OOM killer) gets SIGTERM, as if the launcher
    had passed a stop on: it checkpoints with its peers and exits, instead of dying mid-step
    (torch's own request is SIGINT) and losing the steps since the last checkpoint. Linux
    only (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != launcher:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(local_rank: int, cfg_dict: dict, run_dir: str, port: int, nprocs: int, codes,
            launcher: int) -> None:  # fmt: skip
    stop.install()
    stop_with_parent(launcher)
    stop.release()  # held back since the launcher started this process; pending ones arrive
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    faulthandler.enable()  # a rank that crashes in native code prints where it was
    from tsforge.train.run import run_rank

    try:
        codes[local_rank] = run_rank(OmegaConf.create(cfg_dict), Path(run_dir), locked=True)
    except UserError as err:  # the same input fails on every rank: rank 0 says it
        if local_rank == 0:
            print(f"tsforge: error: {err}", file=sys.stderr, flush=True)
        codes[local_rank] = EXIT_USAGE
    except OSError as err:
        line = environment_fault(err, run_dir)
        if line is None:
            raise
        print(f"tsforge: error: {line}", file=sys.stderr, flush=True)
        codes[local_rank] = EXIT_FAILURE
    # The result is in `codes`. A failed rank exits non-zero so that the launcher stops the
    # others at once: they may be waiting for it in a collective.
    leave_now(0 if codes[local_rank] in (0, EXIT_REQUEUE) else codes[local_rank])


def launch_local(cfg: DictConfig, run_dir: Path) -> int:
    nprocs = int(cfg.launcher.nprocs)
    if nprocs < 1:
        raise UserError(f"launcher.nprocs={nprocs}: use 1 or more processes")
    if nprocs == 1 and read_env()["world_size"] > 1:
        # One task of several that srun started (slurm/train.sbatch), each a launch of its
        # own: rank 0 alone holds the lock (run_rank), or the tasks would refuse each other.
        from tsforge.train.run import run_rank

        return EXIT_REQUEUE if stop.requested() else run_rank(cfg, run_dir)
    with RunLock(run_dir):
        if stop.requested():
            return EXIT_REQUEUE  # before any process started: nothing to save
        if nprocs == 1:
            from tsforge.train.run import run_rank

            return run_rank(cfg, run_dir, locked=True)
        return _spawn(cfg, run_dir, nprocs)


def _spawn(cfg: DictConfig, run_dir: Path, nprocs: int) -> int:
    # torch logs each peer it terminates after a failed process; the failed process has said
    # why in one line already, or the message below says which one failed.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    ctx = mp.get_context("spawn")
    codes = ctx.Array("i", [_NO_RESULT] * nprocs)
    cfg_dict: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    procs = None

    def alive() -> list[int]:
        return [p.pid for p in procs.processes if p.is_alive()] if procs else []

    with contextlib.ExitStack() as stack:
        with stop.held():  # the workers inherit the held-back signals; ours wait for the relay
            procs = mp.start_processes(
                _worker,
                args=(cfg_dict, str(run_dir), free_port(), nprocs, codes, os.getpid()),
                nprocs=nprocs,
                join=False,
                start_method="spawn",
            )
            stack.enter_context(stop.relayed(alive))
        try:
            while not procs.join(timeout=1.0):
                pass
        except mp.ProcessRaisedException as err:
            print(f"tsforge: a training process failed:\n{err}", file=sys.stderr)
            return EXIT_FAILURE
        except mp.ProcessExitedException as err:
            said = codes[err.error_index]
            if said not in (_NO_RESULT, 0, EXIT_REQUEUE):
                return said  # the process said why (one line) before it exited
            print(f"tsforge: training process {err.error_index} exited with code "
                  f"{err.exit_code}; the others were stopped", file=sys.stderr)
            return EXIT_FAILURE
    return max(codes[:], key=lambda c: (c != 0, c))
