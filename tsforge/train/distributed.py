"""Distributed set-up and tear-down: `init_distributed` / `finish_together` /
`cleanup_distributed`, and `leave_now` for a process whose work is done; and the collectives
the loop and the evaluator use (`sum_over_ranks`, `any_rank`, `gather_over_ranks`,
`gather_objects`, `barrier`), which every rank calls in the same order and which return at
once in a single process.

Rank, world size and the rendezvous come from the environment, in this order:
  1. torchrun-style variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
     which the local launcher sets for its processes too;
  2. SLURM's, read through submitit's job environment (`SLURM_PROCID`, `SLURM_NTASKS`,
     `SLURM_LOCALID`, the first host of `SLURM_JOB_NODELIST` as submitit expands it, e.g.
     `rack[1-2]-node[01-04]` -> rack1-node01, and a port derived from `SLURM_JOB_ID`);
  3. otherwise a single process.
NCCL is chosen on GPUs and gloo on CPUs. A process-group timeout bounds every collective, so a
rank whose peer died gets an error instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import sys
from multiprocessing import util as mp_util
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from submitit.slurm.slurm import SlurmJobEnvironment


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process stands: what `init_distributed` returns."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def slurm_hosts() -> list[str]:
    """The job's hosts in SLURM's order, from `SLURM_JOB_NODELIST` as submitit expands it:
    'gpu[03-05,09],cpu1' -> gpu03, gpu04, gpu05, gpu09, cpu1."""
    return list(SlurmJobEnvironment().hostnames)


def slurm_port(job_id: str) -> int:
    """A rendezvous port derived from the job id, so that jobs sharing a node do not clash."""
    return 15000 + int(re.sub(r"\D", "", job_id) or 0) % 20000


def read_env() -> dict[str, int | str]:
    """rank / local_rank / world_size / master_addr / master_port from the environment."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return {
            "rank": int(env["RANK"]),
            "local_rank": int(env.get("LOCAL_RANK", env["RANK"])),
            "world_size": int(env["WORLD_SIZE"]),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": int(env.get("MASTER_PORT", 29500)),
        }
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and "SLURM_JOB_ID" in env:
        job = SlurmJobEnvironment()
        return {
            "rank": job.global_rank,
            "local_rank": job.local_rank,
            "world_size": job.num_tasks,
            # Rank 0 runs on the first node of the allocation.
            "master_addr": slurm_hosts()[0],
            "master_port": slurm_port(job.raw_job_id),
        }
    return {"rank": 0, "local_rank": 0, "world_size": 1, "master_addr": "", "master_port": 0}


def uses_cuda(device: str) -> bool:
    """Whether `trainer.device` trains on CUDA here: auto means when a CUDA device exists."""
    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def init_distributed(
    device: str = "auto", timeout_s: float = 600.0, *, group_of_one: bool = False
) -> DistEnv:
    """Join the process group the environment describes; returns this process's place in it.

    `group_of_one`: a single process still gets a process group (of size 1), for what needs
    one whatever the world size (FSDP2's device mesh, `tsforge.train.parallel`)."""
    env = read_env()
    use_cuda = uses_cuda(device)
    if use_cuda:
        dev = torch.device("cuda", int(env["local_rank"]) % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if env["world_size"] == 1:
        if not group_of_one:
            return DistEnv(0, 0, 1, dev, None)
        # An in-memory store: no port to pick, nothing another process could join.
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if use_cuda else None)  # fmt: skip
        return DistEnv(0, 0, 1, dev, backend)
    os.environ.setdefault("MASTER_ADDR", str(env["master_addr"]))
    os.environ.setdefault("MASTER_PORT", str(env["master_port"]))
    dist.init_process_group(
        backend=backend,
        rank=int(env["rank"]),
        world_size=int(env["world_size"]),
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=dev if use_cuda else None,
    )
    return DistEnv(int(env["rank"]), int(env["local_rank"]), int(env["world_size"]), dev, backend)


# -- collectives ---------------------------------------------------------------------------
def sum_over_ranks(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the ranks, in place (on env.device: NCCL reduces GPU tensors only)."""
    if env.distributed:
        dist.all_reduce(t)
    return t


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank if it is true on any (a stop signal seen by one rank, say)."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_over_ranks(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` (same shape on all), concatenated in rank order."""
    if not env.distributed:
        return t
    parts = [torch.zeros_like(t) for _ in range(env.world_size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def finish_together(env: DistEnv) -> None:
    """Wait until every rank has finished its run (rank 0 writes the results last).

    Ranks then leave the process group together: none tears its connections down while a
    peer is still working. Called on success only: after an error a peer may never arrive.
    """
    if env.distributed and dist.is_initialized():
        dist.barrier()


def cleanup_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def leave_now(code: int = 0) -> NoReturn:
    """End this rank's process at once: its work is done, recorded, and the group is gone.

    The interpreter's own teardown is skipped. There, after `destroy_process_group`, gloo's
    leftover threads now and then abort the process ("terminate called without an active
    exception": twice in about 210 exits of a two-rank loop on a loaded 2-core machine) and
    turn a finished run into a failed one. The multiprocessing finalizers still run (they
    remove numcodecs' named lock), and buffered output is flushed.
    """
    mp_util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
