"""`tsforge jobs`: the SLURM job(s) behind a run directory or a sweep folder.

    tsforge jobs status RUN_DIR                 # state of each job, steps done, resumes
    tsforge jobs logs RUN_DIR [--rank N] [-f]   # a rank's log (rank 0 by default); -f follows
    tsforge jobs cancel RUN_DIR                 # scancel the jobs that have not ended

`launcher=slurm` records every job it submits in `RUN_DIR/slurm/jobs.json` (a sweep: the
array in `SWEEP_DIR/slurm/jobs.json`, and each element in its own run directory).

Those files are read as untrusted: every job id is checked before it reaches `squeue`,
`sacct` or `scancel`, and a log is looked for by its job id and rank in the run's own
`slurm/` folder (or its sweep's), never at a path the file names. A file that is not what
tsforge wrote stops the command with exit code 2, naming the file.
"""

from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import Any

from tsforge.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("jobs", help="the SLURM jobs behind a run: status, logs, cancel",
                       description="The SLURM jobs that launcher=slurm submitted for a run.")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=type(p))
    for verb, text in (("status", "state of each job, steps done, resumes"),
                       ("logs", "print a rank's log"),
                       ("cancel", "cancel the jobs that have not ended")):  # fmt: skip
        v = verbs.add_parser(verb, help=text, description=text)
        v.add_argument("run_dir", help="a run directory or a sweep folder of launcher=slurm")
        if verb == "logs":
            v.add_argument("--rank", type=int, default=0, help="whose log (default: 0)")
            v.add_argument("-f", "--follow", action="store_true",
                           help="keep printing until the job ends; exit with its status")
        v.set_defaults(handler=globals()[f"_{verb}"])


def _jobs(run_dir: str) -> list[dict[str, Any]]:
    """The checked entries of RUN_DIR/slurm/jobs.json: {job_id, ranks}, oldest first."""
    from tsforge.launchers.slurm import check_job_id
    from tsforge.train.rundir import read_json

    path = Path(run_dir) / "slurm" / "jobs.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: {run_dir} was not launched with "
                        f"launcher=slurm (or is not a run directory)")
    jobs = read_json(path, list)
    if not jobs:
        raise UserError(f"{path} lists no job: restore it or remove it")
    for job in jobs:
        ranks = job.get("ranks") if isinstance(job, dict) else None
        if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
            raise UserError(f"{path}: an entry without a job_id and a number of ranks (>= 1): "
                            f"restore the file or remove it")
        check_job_id(job.get("job_id"), str(path))
    return jobs


def _sweep_runs(run: Path) -> list[dict[str, Any]]:
    """The checked elements of SWEEP_DIR/sweep.json: {job_id, swept, run_dir}."""
    from tsforge.launchers.slurm import check_job_id
    from tsforge.train.rundir import read_json

    path = run / "sweep.json"
    runs = read_json(path).get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{path} has no list of runs: restore it or remove it")
    for r in runs:
        check_job_id(r.get("job_id"), str(path))
        if not isinstance(r.get("swept", []), list):
            raise UserError(f"{path}: 'swept' of job {r['job_id']} is not a list: restore it")
    return runs


def _status(args) -> int:
    from tsforge.launchers.slurm import job_state
    from tsforge.runs.table import steps_done
    from tsforge.train.rundir import read_json

    run = Path(args.run_dir)
    if (run / "sweep.json").exists():  # a sweep folder: every element of the array
        for r in _sweep_runs(run):
            print(f"job {r['job_id']}: {job_state(r['job_id']) or 'UNKNOWN'}  "
                  f"{' '.join(map(str, r.get('swept', [])))} -> {r.get('run_dir')}")
        return 0
    jobs = _jobs(args.run_dir)
    resumes = read_json(run / "meta.json").get("resumes", [])
    for job in jobs:
        print(f"job {job['job_id']}: {job_state(job['job_id']) or 'UNKNOWN'} "
              f"({job['ranks']} ranks)")
    if isinstance(resumes, list) and (run / "meta.json").exists():
        lines = [f"\n  from step {r.get('from_step')} at {r.get('at')} (job {r.get('job_id')})"
                 for r in resumes if isinstance(r, dict)]  # fmt: skip
        print(f"steps: {steps_done(run) or 0}; resumed {len(lines)} time(s)" + "".join(lines))
    return 0


def log_of(run: Path, job_id: str, rank: int) -> Path:
    """Where rank `rank` of the job logs: RUN_DIR/slurm/ or, for a sweep's element, the
    sweep's slurm/ folder; a sweep's array logs as its element 0."""
    from tsforge.launchers.slurm import log_path

    if "_" not in job_id and (run / "sweep.json").exists():
        job_id = f"{job_id}_0"
    folders = [run / "slurm", run.parent / "slurm"]
    found = [log_path(f, job_id, rank) for f in folders if log_path(f, job_id, rank).exists()]
    return found[0] if found else log_path(folders[0], job_id, rank)


def _logs(args) -> int:
    from tsforge.launchers.slurm import follow

    job = _jobs(args.run_dir)[-1]
    if not 0 <= args.rank < job["ranks"]:
        raise UserError(f"--rank {args.rank}: job {job['job_id']} has ranks 0-{job['ranks'] - 1}")
    log = log_of(Path(args.run_dir), job["job_id"], args.rank)
    if args.follow:
        return follow(job["job_id"], log)
    if not log.exists():
        raise UserError(f"{log} does not exist yet: job {job['job_id']} has not started "
                        f"(tsforge jobs status {args.run_dir})")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log, "rb") as f:  # a log may hold any bytes: show them, never fail on them
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sys.stdout.write(decoder.decode(chunk))
    sys.stdout.write(decoder.decode(b"", final=True))
    return 0


def _cancel(args) -> int:
    from tsforge.launchers.slurm import TERMINAL, cancel_job, job_state

    for job in _jobs(args.run_dir):
        state = job_state(job["job_id"])
        if state in TERMINAL:
            print(f"job {job['job_id']}: already {state}")
            continue
        cancel_job(job["job_id"])
        print(f"job {job['job_id']}: cancelled (was {state})")
    return 0
