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

The keys the sweep varies are recorded in `sweep.json` for the HParams tab's columns
(`tsforge.train.hparams`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from tsforge.config import CONF_DIR
from tsforge.config.checks import compose_config
from tsforge.config.sweeps import expand
from tsforge.errors import EXIT_FAILURE, UserError
from tsforge.launchers.slurm import (
    TERMINAL,
    job_state,
    log_path,
    make_executor,
    make_job,
    record_job,
    sbatch_refusals,
)
from tsforge.train.hparams import varied_keys


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
        "array_id": array_id, "submitted": time.time(), "varied": varied_keys(configs),
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
