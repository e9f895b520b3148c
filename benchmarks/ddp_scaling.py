"""DDP scaling: 1 rank x 1 thread against 2 ranks x 1 thread (gloo), same global batch.

    python benchmarks/ddp_scaling.py                   # 3 alternating pairs of 300 steps each
    python benchmarks/ddp_scaling.py --pairs 5 --steps 400
    python benchmarks/ddp_scaling.py --quick           # 1 pair of 40 steps: does it run?
    python benchmarks/ddp_scaling.py --slurm           # 1 node against 2 nodes on SLURM
    python benchmarks/ddp_scaling.py --json out.json   # default: results/ddp_scaling.json

Each run is a fresh `python -m tsforge.launch experiment=bench_nhits_etth1` (NHITS with
neuralforecast's default architecture on ETTh1, L=480, H=96, global batch 256, no validation;
conf/experiment/bench_nhits_etth1.yaml) with `trainer.threads=1`, once with
`launcher.nprocs=1` and once with `launcher.nprocs=2` (two local DDP processes over gloo, each
taking half of every global batch), the two in turn with their order rotating from pair to
pair so that other load on the machine falls on both alike. ETTh1 is found like every tsforge
dataset (`TSFORGE_DATA_DIR`, the cache folder, else downloaded).

Timed, as benchmarks/train_throughput.py does: the wall-clock time between the `time` stamps of
the train records in RUN_DIR/metrics.jsonl (one every 10 steps) at step `--warmup` and at the
last step, so start-up, the rendezvous, the first steps and shutdown are left out; windows/s =
steps x global batch / seconds. Efficiency = (2-rank windows/s) / (2 x 1-rank windows/s); the
DESIGN.md target is a speed-up (2-rank / 1-rank) of at least 1.8. Also reported: windows per
CPU-second over the same steps, summed over the run's whole process tree (sampled from /proc),
which shows the work DDP adds (gradient all-reduce, a second copy of the loader) independently
of how much of the two cores other processes leave free; the whole run's CPU time from
`os.wait4`; and each run's `perf/windows_per_s` (the loop's step time only, summed over ranks).

`--slurm` runs the same experiment as a SLURM job with `launcher=slurm launcher.nodes=1` against
`launcher.nodes=2` (one task of one CPU per node, `launcher.wait=true`) on the cluster that
`sinfo` shows; it needs at least two idle nodes and otherwise stops with a message (it never
starts or changes the cluster). Only wall-clock windows/s are reported there: the tasks are not
this process's children.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    add_pair_options,
    check_pair_options,
    machine,
    read_records,
    result_path,
    timed_window,
    tree_cpu_seconds,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench_nhits_etth1"
TARGET_SPEEDUP = 1.8  # DESIGN.md: 2 ranks x 1 thread vs 1 rank x 1 thread


def measure_local(ranks: int, steps: int, warmup: int, batch: int, workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"ddp{ranks}_", dir=workdir))
    cmd = [sys.executable, "-m", "tsforge.launch", f"experiment={EXPERIMENT}",
           f"launcher.nprocs={ranks}", "trainer.threads=1", f"trainer.max_steps={steps}",
           f"data.batch_size={batch}", "trainer.log_every_steps=10",
           "trainer.val_every_steps=0", f"hydra.run.dir={run_dir}"]  # fmt: skip
    log = run_dir.with_suffix(".log")
    samples = []  # (wall time, CPU seconds of the process tree)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while True:
            # wait4 reaps the launcher and gives its CPU time with that of the rank processes
            # it waited for (spawned ranks are joined by the launcher)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            cpu = tree_cpu_seconds(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    first, last, window = timed_window(read_records(run_dir), warmup)
    steps_timed = last["step"] - first["step"]
    out = {
        "ranks": ranks,
        "windows_per_s": steps_timed * batch / (last["time"] - first["time"]),
        "loop_windows_per_s": statistics.median(r["perf/windows_per_s"] for r in window),
        "data_wait_frac": statistics.fmean(r["perf/data_wait_frac"] for r in window),
        "steps_timed": steps_timed,
        "run_cpu_s": usage.ru_utime + usage.ru_stime,
    }
    if len(samples) > 2:
        import numpy as np

        t_W, c_W = np.array(samples).T
        cpu_s = np.interp(last["time"], t_W, c_W) - np.interp(first["time"], t_W, c_W)
        out["timed_cpu_s"] = float(cpu_s)
        out["windows_per_cpu_s"] = steps_timed * batch / cpu_s
        out["cores_busy"] = cpu_s / (last["time"] - first["time"])
    return out


def idle_nodes() -> int:
    try:
        out = subprocess.run(["sinfo", "-h", "-t", "idle", "-o", "%D"], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(int(x) for x in out.stdout.split() if x.isdigit())


def measure_slurm(nodes: int, steps: int, warmup: int, batch: int, workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"slurm{nodes}_", dir=workdir))
    cmd = [sys.executable, "-m", "tsforge.launch", f"experiment={EXPERIMENT}",
           "launcher=slurm", f"launcher.nodes={nodes}", "launcher.wait=true",
           "trainer.threads=1", f"trainer.max_steps={steps}", f"data.batch_size={batch}",
           "trainer.log_every_steps=10", "trainer.val_every_steps=0",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n"
                         f"{(done.stdout + done.stderr)[-4000:]}")
    first, last, window = timed_window(read_records(run_dir), warmup)
    steps_timed = last["step"] - first["step"]
    return {
        "ranks": nodes,
        "nodes": nodes,
        "windows_per_s": steps_timed * batch / (last["time"] - first["time"]),
        "loop_windows_per_s": statistics.median(r["perf/windows_per_s"] for r in window),
        "steps_timed": steps_timed,
    }


def summarize(runs: list[dict], key: str) -> dict | None:
    """Medians of `key` for 1 and 2 ranks, their ratio ("speedup"; per CPU-second it is the
    share of the 1-rank work rate that 2 ranks keep), efficiency = ratio / 2, and per pair."""
    by = {r: [x[key] for x in runs if x["ranks"] == r and key in x] for r in (1, 2)}
    if not by[1] or not by[2]:
        return None
    one, two = statistics.median(by[1]), statistics.median(by[2])
    # per pair as well: neighbours' load changes between pairs more than within one
    pairs = sorted({x["pair"] for x in runs})
    per_pair = []
    for p in pairs:
        a = [x[key] for x in runs if x["pair"] == p and x["ranks"] == 1 and key in x]
        b = [x[key] for x in runs if x["pair"] == p and x["ranks"] == 2 and key in x]
        if a and b:
            per_pair.append(b[0] / a[0])
    return {"one_rank": one, "two_ranks": two, "speedup": two / one,
            "efficiency": two / (2 * one), "speedup_per_pair": per_pair,
            "speedup_median_of_pairs": statistics.median(per_pair) if per_pair else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pair_options(p, "1 rank, 2 ranks")
    p.add_argument("--batch", type=int, default=256, help="global batch (windows a step)")
    p.add_argument("--slurm", action="store_true",
                   help="1 node against 2 nodes on the SLURM cluster instead of local ranks")
    p.add_argument("--json", type=Path, help="where to write the figures "
                   "(default: benchmarks/results/ddp_scaling[_slurm].json)")
    args = p.parse_args(argv)
    check_pair_options(p, args)
    if args.batch % 2:
        p.error("--batch must be even: two ranks take half of every global batch each")
    name = "ddp_scaling_slurm" if args.slurm else "ddp_scaling"
    json_path = result_path(name, args.json, args.quick)
    if args.slurm:
        idle = idle_nodes()
        if idle < 2:
            print(f"sinfo shows {idle} idle node(s): --slurm needs 2; skipped (this benchmark "
                  "never starts or reconfigures the cluster)")
            return 0
        measure = measure_slurm
    else:
        measure = measure_local

    before = machine()
    print(f"{before['cpu']}, {before['cores']} cores, torch {before['torch']}, "
          f"load average {before['load_avg_1_5_15']}", flush=True)
    runs: list[dict] = []
    loads = [before["load_avg_1_5_15"][0]]
    workdir = REPO / "runs" if args.slurm else None  # SLURM tasks must see the run folder
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_", dir=workdir) as tmp:
        for pair in range(args.pairs):
            order = (1, 2) if pair % 2 == 0 else (2, 1)
            for ranks in order:
                result = measure(ranks, args.steps, args.warmup, args.batch, Path(tmp))
                loads.append(os.getloadavg()[0])
                runs.append({"pair": pair, **result, "load_avg_1min_after": loads[-1]})
                cpu = result.get("windows_per_cpu_s")
                print(f"pair {pair}  {ranks} rank(s) {result['windows_per_s']:>9,.0f} windows/s"
                      + (f"  {cpu:>7,.0f} windows/CPU-s  {result['cores_busy']:.2f} cores busy"
                         if cpu else "")
                      + f"  load {loads[-1]:.1f}", flush=True)
    wall = summarize(runs, "windows_per_s")
    per_cpu = summarize(runs, "windows_per_cpu_s")
    if per_cpu:
        per_cpu.pop("efficiency")  # per CPU-second the ratio itself is the efficiency
    out = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/ddp_scaling.py", *(argv or sys.argv[1:])]),
        "settings": {"experiment": EXPERIMENT, "global_batch": args.batch, "steps": args.steps,
                     "warmup_steps": args.warmup, "pairs": args.pairs, "threads_per_rank": 1,
                     "backend": "gloo",
                     "launcher": "slurm (1 vs 2 nodes)" if args.slurm else "local"},
        "machine": before,
        "load_avg_1min": {"min": min(loads), "max": max(loads), "samples": loads},
        "load_avg_after": list(os.getloadavg()),
        "runs": runs,
        "windows_per_s": wall,
        # the layout train_throughput.json uses (benchmarks/plots.py reads it)
        "median_windows_per_s": {"1_rank": wall["one_rank"], "2_ranks": wall["two_ranks"]},
        "windows_per_cpu_s": per_cpu,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": wall["speedup"] >= TARGET_SPEEDUP,
    }
    print(f"\n{'median':<24}{'1 rank':>10}{'2 ranks':>10}{'2 / 1':>8}")
    for label, s in (("windows/s", wall), ("windows per CPU-second", per_cpu)):
        if s:
            print(f"{label:<24}{s['one_rank']:>10,.0f}{s['two_ranks']:>10,.0f}"
                  f"{s['speedup']:>8.2f}")
    print(f"efficiency (2-rank windows/s / 2 x 1-rank windows/s): {wall['efficiency']:.0%}")
    if per_cpu:
        print(f"work per window with 2 ranks: {1 / per_cpu['speedup']:.2f}x the CPU time of "
              "1 rank")
    print(f"speed-up per pair: {', '.join(f'{x:.2f}' for x in wall['speedup_per_pair'])}; "
          f"target >= {TARGET_SPEEDUP}x: {'met' if out['target_met'] else 'NOT met'}")
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
    write_json(json_path, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
