"""SLURM latencies of `launcher=slurm`: launch -> first training step, requeue -> training again.

    sudo bash slurm/local-cluster.sh up                # an idle cluster (the local one here)
    python benchmarks/slurm_launch.py                  # 3 launches, both requeue paths (~6 min)
    python benchmarks/slurm_launch.py --quick          # 1 launch, requeue with StartTime=now
    python benchmarks/slurm_launch.py --json out.json  # default: results/slurm_launch.json

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

from common import result_path, write_json

ROOT = Path(__file__).resolve().parents[1]
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


def submit(run: Path, steps: int, env: dict) -> tuple[str, float, float]:
    """(job id, wall time at the start of the launch, seconds the launcher took)."""
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "tsforge.launch", *TINY,
                          f"trainer.max_steps={steps}", f"hydra.run.dir={run}"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True)  # fmt: skip
    job = re.search(r"submitted SLURM job (\S+):", out.stdout).group(1)
    return job, start, time.time() - start


def state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def launch_latency(tmp: Path, env: dict, n: int) -> dict:
    firsts, launchers = [], []
    for i in range(n):
        run = tmp / f"launch{i}"
        job, start, launcher_s = submit(run, 20, env)
        first = wait_for(lambda run=run: records(run), timeout=300)[0]
        firsts.append(first["time"] - start)
        launchers.append(launcher_s)
        wait_for(lambda job=job: state(job) == "", timeout=300, every=0.5)  # idle again
    return {"first_step_s": firsts, "first_step_s_median": statistics.median(firsts),
            "launcher_s_median": statistics.median(launchers)}  # fmt: skip


def requeue_latency(tmp: Path, env: dict, how: str, start_now: bool) -> float:
    run = tmp / f"requeue_{how}_{int(start_now)}"
    job, _, _ = submit(run, 1_000_000, env)
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
    args = parser.parse_args()
    # A --quick run checks the script: it must not replace the committed figures.
    args.json = result_path("slurm_launch", args.json, args.quick)
    with tempfile.TemporaryDirectory(prefix="tsforge-slurm-bench-") as tmp:
        env = {**os.environ, "TSFORGE_CACHE_DIR": str(Path(tmp) / "cache")}
        # The synthetic store is built by the first run; build it before timing anything.
        job, _, _ = submit(Path(tmp) / "warm", 1, env)
        wait_for(lambda: state(job) == "", timeout=300, every=0.5)
        out = {"launch": launch_latency(Path(tmp), env, 1 if args.quick else 3)}
        out["requeue_s"] = {"signal_startnow": requeue_latency(Path(tmp), env, "signal", True)}
        if not args.quick:
            out["requeue_s"]["scontrol_startnow"] = requeue_latency(Path(tmp), env, "scontrol",
                                                                    True)  # fmt: skip
            out["requeue_s"]["scontrol"] = requeue_latency(Path(tmp), env, "scontrol", False)
            out["requeue_s"]["signal"] = requeue_latency(Path(tmp), env, "signal", False)
    print(json.dumps(out, indent=2))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
