"""The run directory's small files: `config.yaml`, `meta.json`, `metrics.json`.

    RUN_DIR/config.yaml   the resolved config
    RUN_DIR/meta.json     git commit (+ dirty), dataset fingerprint, world_size, devices,
                          versions, SLURM job ids, `resumes`: one {from_step, at, job_id}
                          per resume, and `ranks`: where each rank ran (`record_ranks`)
    RUN_DIR/metrics.json  final: best validation and test metrics, steps, windows/s

Every file is written to a temporary name and renamed, so readers never see half a file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import tsforge
from tsforge.errors import UserError
from tsforge.train.distributed import DistEnv


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


MAX_FILE_BYTES = 64 * 2**20  # the small files of a run directory; a bigger one is not ours


def read_json(path: Path, kind: type = dict) -> Any:
    """The JSON file at `path` (an empty `kind` when there is none); a UserError naming the
    file when it is not JSON of that kind (cut short, edited by hand, not ours)."""
    if not path.exists():
        return kind()
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path} is {path.stat().st_size:,} bytes, far more than tsforge "
                        f"writes there: restore it or remove it")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError too
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise UserError(f"{path} is not readable JSON ({why}): restore it or remove it") from None
    if not isinstance(value, kind):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not the {kind.__name__} "
                        f"tsforge writes: restore it or remove it")
    return value


def read_config(path: Path) -> dict[str, Any]:
    """config.yaml as a plain dict, unresolved; a UserError naming the file when it is not a
    mapping that YAML reads (OmegaConf's loader never builds Python objects from tags)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path} is far larger than a config: restore it or remove it")
    try:
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (yaml.YAMLError, OmegaConfBaseException, ValueError, RecursionError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path} is not a readable config ({type(err).__name__}: {first}): "
                        f"restore it or remove the run") from None
    if not isinstance(node, dict):
        raise UserError(f"{path} is not a mapping of config groups: restore it or remove the run")
    return node


def _git() -> dict[str, Any]:
    """The commit of tsforge's own checkout; none for an installed package (its site-packages
    may lie inside some other repository, whose commit says nothing about this code)."""
    root = Path(tsforge.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None, "installed": True}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty) if commit else None}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def update_meta(
    run_dir: Path,
    *,
    fingerprint: str,
    world_size: int,
    device: torch.device,
    resumed_from: int | None,
) -> dict[str, Any]:
    """Create or extend `meta.json` for this start of the run (first start or a resume)."""
    path = run_dir / "meta.json"
    meta = read_json(path)
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array else job_id
        if job not in meta.setdefault("slurm_job_ids", []):
            meta["slurm_job_ids"].append(job)
    meta.setdefault("created", _now())
    meta.setdefault("resumes", [])
    if resumed_from is not None:
        meta["resumes"].append({"from_step": resumed_from, "at": _now(), "job_id": job_id})
    meta.update(
        {
            "git": _git(),
            "fingerprint": fingerprint,
            "world_size": world_size,
            "devices": _devices(device),
            "versions": {
                "tsforge": tsforge.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "host": platform.node(),
        }
    )
    write_json(path, meta)
    return meta


def _devices(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [f"cpu ({os.cpu_count()} cores)"]


def record_ranks(run_dir: Path, env: DistEnv) -> None:
    """Gather where every rank of this start runs into `meta.json`'s `ranks`; called by every
    rank (a collective), written by rank 0.

    One {rank, host, address, cuda_visible_devices, slurm_step_gpus} per rank: its host name,
    the address its traffic to the rendezvous host leaves from (so two nodes show two
    addresses), and the GPUs SLURM bound it to.
    """
    rendezvous = os.environ.get("MASTER_ADDR") if env.distributed else None
    mine = {
        "rank": env.rank,
        "host": socket.gethostname(),
        "address": _address_towards(rendezvous) if rendezvous else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_step_gpus": os.environ.get("SLURM_STEP_GPUS"),
    }
    ranks = [mine]
    if env.distributed:
        ranks = [None] * env.world_size
        dist.all_gather_object(ranks, mine)
    if env.is_main:
        path = run_dir / "meta.json"
        write_json(path, {**read_json(path), "ranks": ranks})


def _address_towards(host: str) -> str | None:
    """This host's address on the route to `host`: connecting a UDP socket sends nothing, it
    only makes the kernel pick the route and its source address."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.connect(where)
            return sock.getsockname()[0]
    except OSError:
        return None
