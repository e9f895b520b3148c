"""The run directory's small files: `config.yaml`, `meta.json`, `metrics.json`.

    RUN_DIR/config.yaml   the resolved config
    RUN_DIR/meta.json     git commit (+ dirty), dataset fingerprint, world_size, devices,
                          versions, SLURM job ids, `resumes`: one {from_step, at, job_id,
                          changed: {key: [old, new]}} per resume (tsforge/train/resume.py),
                          and `ranks`: where each rank ran (`record_ranks`)
    RUN_DIR/metrics.json  final: best validation and test metrics, steps, windows/s

Every file is written to a temporary name and renamed, so readers never see half a file; a
write that fails (a full disk) removes its temporary file and leaves the old file as it was.

`check_run_dir` is what a launch asks before anything is written: is `hydra.run.dir` a place
for a run (new, empty, or a run to resume), and can this machine write there.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import tsforge
from tsforge.errors import UserError

if TYPE_CHECKING:
    import torch

    from tsforge.train.distributed import DistEnv

# What only a run directory holds (the lock file of a launch that died before writing more
# counts too): a folder with other files and none of these is the user's, not a run.
RUN_FILES = ("config.yaml", "meta.json", "metrics.jsonl", "checkpoints", "slurm/jobs.json", ".lock")
TEMPORARY = ".*.tmp-*"  # write_atomic's temporary files
# RUN_DIR/checkpoints/step_00000500.pt, or step_00000500/ for a sharded run's
STEP_FILE = re.compile(r"step_(\d{8})(?:\.pt)?$")


def step_files(run_dir: Path) -> list[Path]:
    """The run's step checkpoints (files, or folders of sharded ones), oldest first (their
    contents are `checkpoint`'s business)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if STEP_FILE.search(p.name))


def step_of(path: Path) -> int:
    return int(STEP_FILE.search(path.name).group(1))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _read_yaml(path: Path) -> dict[str, Any]:
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
def read_config(path: Path) -> DictConfig:
    """A saved config.yaml over the schema (see `as_config`); a UserError when it is not a
    tsforge config."""
    return as_config(path, path)


def as_config(source: Path | dict, name: str | Path) -> DictConfig:
    """A saved config (a config.yaml, or the copy a checkpoint holds) over the schema, so that
    a run saved before a key existed gets its default, resolved; a UserError naming `name`
    (and the key) when it is not a tsforge config."""
    from tsforge.config.schema import Config

    saved = _read_yaml(source) if isinstance(source, Path) else source
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(saved))
        OmegaConf.resolve(cfg)  # tsforge saves it resolved: an interpolation is foreign
        return cfg
    except (OmegaConfBaseException, ValueError, AttributeError, TypeError) as err:
        key = getattr(err, "full_key", None)
        first = (str(err).splitlines() or [""])[0]
        raise UserError(
            f"{name}: {key + ': ' if key else ''}{first} ({type(err).__name__}; edited by hand, "
            f"or written by another version of tsforge): restore it, or use another "
            f"hydra.run.dir"
        ) from None


def is_run(path: Path) -> bool:
    """A run directory (a sweep folder, which holds runs, is not one)."""
    return any((path / name).exists() for name in RUN_FILES) and not (path / "sweep.json").exists()


def check_run_dir(run_dir: Path) -> None:
    """Refuse a `hydra.run.dir` that is no place for a run (UserError) or that this machine
    cannot write (an OSError that `environment_fault` names), before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"hydra.run.dir={run_dir} is a file, not a folder: give a new folder, "
                        "or a run directory to resume")
    if run_dir.is_dir():
        if any(run_dir.iterdir()) and not is_run(run_dir):
            raise UserError(
                f"hydra.run.dir={run_dir} is a folder with other files in it and no tsforge run "
                "(no config.yaml): refusing to write there; give a new or empty folder"
            )
        for name in ("checkpoints", "tb"):
            if (run_dir / name).exists() and not (run_dir / name).is_dir():
                raise UserError(f"{run_dir / name} is not a folder: move it away to resume")
        for name in ("config.yaml", "meta.json", "metrics.jsonl", "metrics.json"):
            if (run_dir / name).exists() and not (run_dir / name).is_file():
                raise UserError(f"{run_dir / name} is not a file: move it away to resume")
        if (run_dir / "config.yaml").exists():
            read_config(run_dir / "config.yaml")
        read_json(run_dir / "meta.json")
    _check_writable(run_dir)


def _check_writable(run_dir: Path) -> None:
    place = run_dir
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UserError(f"hydra.run.dir={run_dir} lies inside {place}, which is a file: give "
                        "a folder path")
    fs = os.statvfs(place)
    if fs.f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run_dir))
    if not os.access(place, os.W_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(run_dir))
    if fs.f_bavail == 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir))


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a killed launch never finished (the run is locked, so
    no other launch is writing them)."""
    for tmp in run_dir.glob(TEMPORARY):
        tmp.unlink(missing_ok=True)


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
    changed: dict[str, list[Any]] | None = None,
    init_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create or extend `meta.json` for this start of the run (first start or a resume);
    `init_from`: where a fine-tuned run's first weights came from (path, step, fingerprint)."""
    import torch  # here: reading a run directory back (runs, jobs) needs no torch

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
        meta["resumes"].append({"from_step": resumed_from, "at": _now(), "job_id": job_id,
                                "changed": changed or {}})
    if init_from is not None:
        meta["init_from"] = init_from
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
    import torch

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
    from tsforge.train.distributed import gather_objects  # torch: imported here only

    ranks = gather_objects(env, mine)
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
