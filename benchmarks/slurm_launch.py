"""SLURM latencies of `launcher=slurm`: launch -> first training step, requeue -> training again.

    sudo bash slurm/local-cluster.sh up                # an idle cluster (the local one here)
    python benchmarks/slurm_launch.py                  # 3 launches, both requeue paths (~6 min)
    python benchmarks/slurm_launch.py --quick          # 1 launch, requeue with StartTime=now
    python benchmarks/slurm_launch.py --json out.json  # default: results/slurm_launch.json
    python benchmarks/slurm_launch.py --python $VENV/bin/python   # tsforge as the cluster has it
                               # VENV=/var/lib/tsforge-cluster/shared/venvs/tsforge-0.1.0 here

Launch: wall time from starting `python -m tsforge.launch launcher=slurm` (a tiny 2-node NHITS
run logging every step) to the first training step's record in `metrics.jsonl`, split into
the launcher's own time (compose, `sinfo` checks, `sbatch`) and the rest (scheduling, Python
and torch start-up in each task, data, the DDP rendezvous, the first step).

Requeue: wall time from the stop (`scontrol requeue`, SLURM's path for preemption; and
`scancel --signal=USR2`, the time-limit path through the trainer's checkpoint and submitit)
to the first training record of the resumed run. SLURM holds a requeued job for about two
minutes (reason BeginTime) before it may start again; `--quick` and the `startnow` figures
lift that hold (`scontrol update StartTime=now`) to show what tsforge itself adds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, result_path, write_json

TINY = ["launcher=slurm", "launcher.nodes=2", "trainer.threads=1", "trainer.log_every_steps=1",
        "trainer.val_every_steps=0", "trainer.checkpoint_every_steps=100000",
        "model.mlp_units=[[64,64],[64,64],[64,64]]", "data.batch_size=64"]  # fmt: skip


def records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def wait_for(check, timeout: float, every: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("benchmark step timed out")


def submit(python: str, run: Path, steps: int, env: dict) -> tuple[str, float, float]:
    """(job id, wall time at the start of the launch, seconds the launcher took). Launched
    beside the run, not in the checkout, whose tsforge `python -m` would import first."""
    start = time.time()
    run.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([python, "-m", "tsforge.launch", *TINY, f"trainer.max_steps={steps}",
                          f"hydra.run.dir={run}"],
                         capture_output=True, text=True, env=env, cwd=run.parent,
                         check=True)  # fmt: skip
    job = re.search(r"submitted SLURM job (\S+):", out.stdout).group(1)
    return job, start, time.time() - start


def state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def launch_latency(python: str, tmp: Path, env: dict, n: int) -> dict:
    firsts, launchers = [], []
    for i in range(n):
        run = tmp / f"launch{i}"
        job, start, launcher_s = submit(python, run, 20, env)
        first = wait_for(lambda run=run: records(run), timeout=300)[0]
        firsts.append(first["time"] - start)
        launchers.append(launcher_s)
        wait_for(lambda job=job: state(job) == "", timeout=300, every=0.5)  # idle again
    return {"first_step_s": firsts, "first_step_s_median": statistics.median(firsts),
            "launcher_s_median": statistics.median(launchers)}  # fmt: skip


def requeue_latency(python: str, tmp: Path, env: dict, how: str, start_now: bool) -> float:
    run = tmp / f"requeue_{how}_{int(start_now)}"
    job, _, _ = submit(python, run, 1_000_000, env)
    wait_for(lambda: len(records(run)) > 50, timeout=300)
    stopped = time.time()
    if how == "scontrol":
        subprocess.run(["scontrol", "requeue", job], check=True)
    else:
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: state(job) == "PENDING", timeout=120)
    if start_now:  # not within the requeue's second: slurmd would refuse the credential
        time.sleep(2)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    meta = run / "meta.json"
    wait_for(lambda: json.loads(meta.read_text())["resumes"], timeout=400, every=0.2)
    resumed_from = json.loads(meta.read_text())["resumes"][0]["from_step"]
    again = wait_for(lambda: [r for r in records(run) if r["step"] > resumed_from],
                     timeout=300)[0]  # fmt: skip
    subprocess.run(["scancel", job], check=True)
    return again["time"] - stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 launch; skip SLURM's hold")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the figures (default: benchmarks/results/; "
                             "with --quick, benchmarks/out/)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that launches tsforge, e.g. the local cluster's "
                             "environment (default: this one)")
    args = parser.parse_args()
    if not Path(args.python).is_file():
        parser.error(f"--python {args.python}: no such file; give the path of a Python "
                     f"with tsforge installed")
    python = args.python
    # A --quick run checks the script: it must not replace the committed figures.
    args.json = result_path("slurm_launch", args.json, args.quick)
    with tempfile.TemporaryDirectory(prefix="tsforge-slurm-bench-") as tmp:
        env = {**os.environ, "TSFORGE_CACHE_DIR": str(Path(tmp) / "cache")}
        # The synthetic store is built by the first run; build it before timing anything.
        job, _, _ = submit(python, Path(tmp) / "warm", 1, env)
        wait_for(lambda: state(job) == "", timeout=300, every=0.5)
        tmp = Path(tmp)
        out = {"launch": launch_latency(python, tmp, env, 1 if args.quick else 3)}
        requeue = out["requeue_s"] = {}
        requeue["signal_startnow"] = requeue_latency(python, tmp, env, "signal", True)
        if not args.quick:
            requeue["scontrol_startnow"] = requeue_latency(python, tmp, env, "scontrol", True)
            requeue["scontrol"] = requeue_latency(python, tmp, env, "scontrol", False)
            requeue["signal"] = requeue_latency(python, tmp, env, "signal", False)
    out["python"] = args.python
    out["nodes"] = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t %G"], capture_output=True,
                                  text=True).stdout.splitlines()  # fmt: skip
    out["machine"] = machine()
    print(json.dumps(out, indent=2))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
