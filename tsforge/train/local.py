"""`launcher=local`: train in this process, or in `launcher.nprocs` DDP processes here.

The processes get torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) and run the same `run_rank` as every other launcher. If one process fails, the
others are stopped and its traceback is printed (no hang); stop signals sent to this process
are passed on to the workers so that they checkpoint before exiting. A worker whose result is
recorded exits at once (`leave_now`), without the interpreter's teardown.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp
from omegaconf import DictConfig, OmegaConf

from tsforge.errors import EXIT_FAILURE, EXIT_USAGE, UserError
from tsforge.train.distributed import leave_now
from tsforge.train.loop import STOP_SIGNALS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, cfg_dict: dict, run_dir: str, port: int, nprocs: int, codes) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    faulthandler.enable()  # a rank that crashes in native code prints where it was
    from tsforge.train.run import run_rank

    try:
        codes[local_rank] = run_rank(OmegaConf.create(cfg_dict), Path(run_dir))
    except UserError as err:
        if local_rank == 0:
            print(f"tsforge: error: {err}", file=sys.stderr)
        codes[local_rank] = EXIT_USAGE
    leave_now(0)  # the result is in `codes`


def launch_local(cfg: DictConfig, run_dir: Path) -> int:
    nprocs = int(cfg.launcher.nprocs)
    if nprocs < 1:
        raise UserError(f"launcher.nprocs={nprocs}: use 1 or more processes")
    if nprocs == 1:
        from tsforge.train.run import run_rank

        return run_rank(cfg, run_dir)
    ctx = mp.get_context("spawn")
    codes = ctx.Array("i", [EXIT_FAILURE] * nprocs)
    cfg_dict: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    procs = mp.start_processes(
        _worker,
        args=(cfg_dict, str(run_dir), free_port(), nprocs, codes),
        nprocs=nprocs,
        join=False,
        start_method="spawn",
    )

    def forward(signum, frame):
        for p in procs.processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    old = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        while not procs.join(timeout=1.0):
            pass
    except mp.ProcessRaisedException as err:
        print(f"tsforge: a training process failed:\n{err}", file=sys.stderr)
        return EXIT_FAILURE
    except mp.ProcessExitedException as err:
        print(f"tsforge: training process {err.error_index} exited with code "
              f"{err.exit_code}; the others were stopped", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return max(codes[:], key=lambda c: (c != 0, c))
