"""`tsforge jobs`: the SLURM job(s) behind a run directory or a sweep folder.

    tsforge jobs status RUN_DIR                 # state of each job, steps done, resumes
    tsforge jobs logs RUN_DIR [--rank N] [-f]   # a rank's log (rank 0 by default); -f follows
    tsforge jobs cancel RUN_DIR                 # scancel the jobs that have not ended

`launcher=slurm` records every job it submits in `RUN_DIR/slurm/jobs.json` (a sweep: the
array in `SWEEP_DIR/slurm/jobs.json`, and each element in its own run directory).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def _jobs(run_dir: str) -> list[dict]:
    path = Path(run_dir) / "slurm" / "jobs.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: {run_dir} was not launched with "
                        f"launcher=slurm (or is not a run directory)")
    return json.loads(path.read_text())


def _status(args) -> int:
    from tsforge.train.slurm import job_state

    run = Path(args.run_dir)
    if (run / "sweep.json").exists():  # a sweep folder: every element of the array
        sweep = json.loads((run / "sweep.json").read_text())
        for r in sweep["runs"]:
            print(f"job {r['job_id']}: {job_state(r['job_id']) or 'UNKNOWN'}  "
                  f"{' '.join(r['swept'])} -> {r['run_dir']}")
        return 0
    for job in _jobs(args.run_dir):
        print(f"job {job['job_id']}: {job_state(job['job_id']) or 'UNKNOWN'} "
              f"({job['ranks']} ranks)")
    meta = run / "meta.json"
    if meta.exists():
        resumes = json.loads(meta.read_text()).get("resumes", [])
        print(f"steps: {_last_step(run)}; resumed {len(resumes)} time(s)"
              + "".join(f"\n  from step {r['from_step']} at {r['at']} (job {r['job_id']})"
                        for r in resumes))  # fmt: skip
    return 0


def _last_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line]
    return max(steps, default=0)


def _logs(args) -> int:
    from tsforge.train.slurm import follow

    job = _jobs(args.run_dir)[-1]
    if not 0 <= args.rank < len(job["logs"]):
        raise UserError(f"--rank {args.rank}: job {job['job_id']} has ranks 0-{job['ranks'] - 1}")
    log = Path(job["logs"][args.rank])
    if args.follow:
        return follow(job["job_id"], log)
    if not log.exists():
        raise UserError(f"{log} does not exist yet: job {job['job_id']} has not started "
                        f"(tsforge jobs status {args.run_dir})")
    sys.stdout.write(log.read_text(errors="replace"))
    return 0


def _cancel(args) -> int:
    from tsforge.train.slurm import TERMINAL, job_state

    for job in _jobs(args.run_dir):
        state = job_state(job["job_id"])
        if state in TERMINAL:
            print(f"job {job['job_id']}: already {state}")
            continue
        out = subprocess.run(["scancel", job["job_id"]], capture_output=True, text=True)
        if out.returncode:
            raise UserError(f"scancel {job['job_id']} failed: {out.stderr.strip()}")
        print(f"job {job['job_id']}: cancelled (was {state})")
    return 0
