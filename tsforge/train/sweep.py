"""Sweeps on SLURM: a Hydra multirun with `launcher=slurm` becomes ONE job array.

    python -m tsforge.launch -m launcher=slurm model=nhits,patchtst optim.lr=1e-3,3e-4
    python -m tsforge.launch -m launcher=slurm launcher.array_parallelism=2 seed=0,1,2

Hydra's own multirun would launch the runs one after another (and hydra-submitit-launcher
blocks until every job of the sweep ends); here `tsforge.launch` hands `-m` with
`launcher=slurm` to `submit_sweep`, which expands the sweep exactly as Hydra's basic sweeper
does (the last override varies fastest), checks every combination, submits one
`sbatch --array` of checkpointable `TrainingJob`s (at most `launcher.array_parallelism` at
once) and returns at once. Each element is its own run directory, `SWEEP_DIR/<num>`,
resumable like any run; `SWEEP_DIR/sweep.json` lists the overrides of each;
`tensorboard --logdir SWEEP_DIR` shows them side by side (HParams tab included).

`varied(run_dir)` says which config keys the sweep of a run varies, and their values, for a
SLURM sweep (recorded in `sweep.json` at submission) and for a local one (Hydra's
`multirun.yaml`, expanded and composed once, kept in `SWEEP_DIR/varied.json`): the HParams
tab's columns.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from tsforge.config import CONF_DIR
from tsforge.config.checks import compose_config
from tsforge.errors import EXIT_FAILURE, UserError
from tsforge.train.builders import flat_hparams
from tsforge.train.rundir import read_json, write_atomic
from tsforge.train.slurm import (
    TERMINAL,
    job_state,
    log_path,
    make_executor,
    make_job,
    record_job,
    sbatch_refusals,
)


def expand(overrides: list[str]) -> list[list[str]]:
    """One override list per run, in Hydra's order (the basic sweeper's own expansion)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def is_slurm_sweep(overrides: list[str]) -> bool:
    """Does the first combination of this sweep launch on SLURM (command line or experiment)?"""
    return compose_config(expand(overrides)[0]).launcher.name == "slurm"


def sweep_dir(overrides: list[str]) -> Path:
    """`hydra.sweep.dir` for these overrides, resolved once (it usually holds `${now:}`)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=expand(overrides)[0], return_hydra_config=True)
    return Path(str(cfg.hydra.sweep.dir)).resolve()


def submit_sweep(overrides: list[str]) -> int:
    runs = expand(overrides)
    configs = [compose_config(run) for run in runs]
    first = configs[0].launcher
    for run, cfg in zip(runs, configs):
        if cfg.launcher != first:
            varied = sorted(k for k in first if cfg.launcher.get(k) != first.get(k))
            raise UserError(f"launcher.{varied[0]} varies within the sweep ({' '.join(run)}): "
                            f"one job array has one resource request; sweep it in separate "
                            f"launches")  # fmt: skip
    folder = sweep_dir(overrides)
    run_dirs = [folder / str(num) for num in range(len(runs))]
    executor = make_executor(first, folder / "slurm", job_name=f"tsforge-sweep-{folder.name}")
    with sbatch_refusals():
        jobs = executor.submit_array([make_job(cfg, d) for cfg, d in zip(configs, run_dirs)])
    array_id = jobs[0].job_id.split("_")[0]
    ranks = int(first.nodes) * int(first.tasks_per_node)
    for job, run_dir in zip(jobs, run_dirs):
        run_dir.mkdir(parents=True, exist_ok=True)
        record_job(run_dir, job.job_id, folder / "slurm", ranks)
    keys = _swept_keys(overrides)
    swept = [[o for o in run if o.split("=", 1)[0] in keys] for run in runs]
    (folder / "sweep.json").write_text(json.dumps({
        "array_id": array_id, "submitted": time.time(), "varied": _varied(configs),
        "runs": [{"num": n, "swept": swept[n], "overrides": run, "run_dir": str(d),
                  "job_id": job.job_id}
                 for n, (run, d, job) in enumerate(zip(runs, run_dirs, jobs))],
    }, indent=2) + "\n")  # fmt: skip
    _record_array(folder, array_id, jobs, ranks)
    width = min(len(jobs), int(first.array_parallelism))
    print(f"submitted SLURM job array {array_id}: {len(jobs)} runs, at most {width} at once\n"
          f"sweep folder: {folder}")  # fmt: skip
    for num in range(len(runs)):
        print(f"  {num}: {' '.join(swept[num])} -> {run_dirs[num]}")
    print(f"logs: {log_path(folder / 'slurm', jobs[0].job_id)} (array element 0, rank 0)\n"
          f"dashboard: tensorboard --logdir {folder}\n"
          f"status: tsforge jobs status {folder}   cancel: tsforge jobs cancel {folder}",
          flush=True)  # fmt: skip
    if not first.wait:
        return 0
    return _wait_all([job.job_id for job in jobs])


def _swept_keys(overrides: list[str]) -> set[str]:
    """The keys that take several values (the ones worth printing per run)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.get_key_element() for o in parsed if o.is_sweep_override()}


def _record_array(folder: Path, array_id: str, jobs, ranks: int) -> None:
    """SWEEP_DIR/slurm/jobs.json: the whole array, so `tsforge jobs` works on the sweep."""
    path = folder / "slurm" / "jobs.json"
    path.write_text(json.dumps([{
        "job_id": array_id, "submitted": time.time(), "ranks": ranks,
        "logs": [str(log_path(folder / "slurm", jobs[0].job_id, r)) for r in range(ranks)],
    }], indent=2) + "\n")  # fmt: skip


def _wait_all(job_ids: list[str], poll_s: float = 5.0) -> int:
    """`launcher.wait=true` on a sweep: until every element ends; 0 if all COMPLETED."""
    states: dict[str, str | None] = {}
    while True:
        states = {j: job_state(j) for j in job_ids}
        if all(s in TERMINAL for s in states.values()):
            break
        time.sleep(poll_s)
    for job_id, state in states.items():
        print(f"job {job_id}: {state}")
    return 0 if all(s == "COMPLETED" for s in states.values()) else EXIT_FAILURE



def _varied(configs) -> dict[str, list]:
    """{key: distinct values} of the flat config keys, present in every config, whose values
    are not all the same."""
    flats = [flat_hparams(cfg) for cfg in configs]
    out: dict[str, list] = {}
    for key in flats[0]:
        if all(key in f for f in flats):
            values = list({json.dumps(f[key]): f[key] for f in flats}.values())
            if len(values) > 1:
                out[key] = values
    return out


@contextlib.contextmanager
def _hydra_set_aside():
    """Compose inside a running Hydra app (a job of a local multirun): Hydra's global state
    is set aside and put back after, as `hydra.initialize` itself does on leaving."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def varied(run_dir: Path) -> dict[str, list]:
    """The config keys that the sweep of `run_dir` varies, with their values; {} for a run
    that is no element of a sweep, or whose sweep no longer composes."""
    folder = Path(run_dir).resolve().parent
    try:
        recorded = read_json(folder / "sweep.json").get("varied")  # a SLURM sweep
        if isinstance(recorded, dict):
            return recorded
        cached = read_json(folder / "varied.json")
        if cached or not (folder / "multirun.yaml").is_file():
            return cached
        from omegaconf import OmegaConf

        given = OmegaConf.load(folder / "multirun.yaml").hydra.overrides
        search = [o for o in given.hydra if o.startswith("hydra.searchpath=")]  # --config-dir
        with _hydra_set_aside():
            found = _varied([compose_config(search + run) for run in expand(list(given.task))])
        write_atomic(folder / "varied.json", json.dumps(found, indent=2) + "\n")
        return found
    except (UserError, OSError, ValueError, KeyError, AttributeError):
        return {}
