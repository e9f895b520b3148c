"""What pruning buys a search: the same `tsforge tune` study with the median pruner and without,
on a 2-element SLURM job array, side by side.

    sudo bash slurm/local-cluster.sh up                 # an idle cluster (the local one here)
    python benchmarks/tune_pruning.py --python $VENV/bin/python    # ~25 min on 2 cores
    python benchmarks/tune_pruning.py --trials 6 --quick           # a smaller pair
    python benchmarks/tune_pruning.py --pruner asha --trials 16 --json results/tune_asha.json
                               # VENV=/var/lib/tsforge-cluster/shared/venvs/tsforge-0.1.0 here

Both studies search `conf/search/dlinear.yaml` around one long-horizon cell (default ETTh2,
H=336, DLinear: a cell where the hand search stayed behind the published MSE) on the
validation split only, with the same sampler seed and the same number of trials, two trials at
a time as SLURM array elements (`launcher.array_parallelism=2`). Reported for each: the
trials' allotted CPU-minutes (CPUs held x wall time, as the study records them), trials per
CPU-hour, the best validation MSE, and the pruned search's ratios to the unpruned one.
Written to results/tune_pruning.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, result_path, write_json

STORAGE = "mysql+pymysql:///?read_default_file=/etc/tsforge/study-db.cnf"


def study(python: str, folder: Path, pruner: str, args) -> dict:
    # `pruner` is args.pruner on the pruned side, "none" on the other
    """Run one study to its end; its trials' states, CPU time and best value from the DB."""
    import optuna

    study_dir = folder / f"study_{pruner}"
    conf = folder / "conf" / "search"
    conf.mkdir(parents=True, exist_ok=True)
    base = Path(__file__).resolve().parents[1] / "conf" / "search" / "dlinear.yaml"
    kept = [ln for ln in base.read_text().splitlines()
            if not ln.startswith(("pruner:", "seed:", "startup_trials:"))]  # fmt: skip
    text = "\n".join(kept) + (f"\npruner: {pruner}\nseed: {args.seed}\n"
                              f"startup_trials: {args.startup_trials}\n")  # fmt: skip
    (conf / f"dlinear_{pruner}.yaml").write_text(text)
    cmd = [python, "-m", "tsforge", "tune", f"dlinear_{pruner}", "--config-dir",
           str(folder / "conf"), "--study", str(study_dir), "--trials", str(args.trials),
           "--storage", args.storage, f"experiment={args.experiment}", "launcher=slurm",
           "launcher.array_parallelism=2", "trainer.threads=1"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.monotonic() - started
    (folder / f"tune_{pruner}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"the {pruner} study failed (exit {proc.returncode}): "
                         f"{(proc.stderr.strip().splitlines() or [''])[-1]}")  # fmt: skip
    record = json.loads((study_dir / "study.json").read_text())
    loaded = optuna.load_study(study_name=record["study_name"], storage=args.storage)
    trials = loaded.get_trials()
    cpu_s = sum(float(t.user_attrs.get("cpu_s", 0.0)) for t in trials)
    states = [t.state.name for t in trials]
    best = loaded.best_trial
    out = {
        "pruner": pruner, "trials": len(trials),
        "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "cpu_minutes": round(cpu_s / 60, 2), "wall_minutes": round(wall / 60, 2),
        "trials_per_cpu_hour": round(len(trials) / (cpu_s / 3600), 2),
        "best_val_mse": best.value, "best_trial": best.number,
        "best_point": best.user_attrs.get("point"),
        "study_dir": str(study_dir),
    }  # fmt: skip
    optuna.delete_study(study_name=record["study_name"], storage=args.storage)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the Python the cluster's "
                        "environment runs tsforge with")
    parser.add_argument("--experiment", default="etth2_dlinear_h336")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruner", default="median", choices=["median", "asha", "hyperband"])
    parser.add_argument("--startup-trials", type=int, default=5, help="random trials first "
                        "(TPE's start), and the median pruner's completed trials before it prunes")
    parser.add_argument("--storage", default=STORAGE)
    parser.add_argument("--quick", action="store_true", help="write results/*_quick.json")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the studies in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tune-pruning-"))
    folder.mkdir(parents=True, exist_ok=True)
    env_note = {k: os.environ[k] for k in ("TSFORGE_DATA_DIR",) if k in os.environ}
    sides = {p: study(args.python, folder, p, args) for p in (args.pruner, "none")}
    pruned, plain = sides[args.pruner], sides["none"]
    result = {
        "benchmark": "tune_pruning", "experiment": args.experiment, "trials": args.trials,
        "pruner": args.pruner, "startup_trials": args.startup_trials, "seed": args.seed,
        "array_parallelism": 2, "machine": machine(), "env": env_note,
        "with_pruning": pruned, "without_pruning": plain,
        "trials_per_cpu_hour_ratio": round(pruned["trials_per_cpu_hour"]
                                           / plain["trials_per_cpu_hour"], 2),
        "best_val_mse_ratio": round(pruned["best_val_mse"] / plain["best_val_mse"], 4),
        "command": " ".join(["python", "benchmarks/tune_pruning.py", *sys.argv[1:]]),
    }  # fmt: skip
    path = result_path("tune_pruning", args.json, args.quick)
    write_json(path, result)
    for side in (pruned, plain):
        print(f"{side['pruner']:>6}: {side['trials']} trials ({side['pruned']} pruned), "
              f"{side['cpu_minutes']:.1f} CPU-min, {side['trials_per_cpu_hour']:.1f} trials/"
              f"CPU-hour, best val MSE {side['best_val_mse']:.4f}")
    print(f"ratio (pruned / not): trials per CPU-hour x{result['trials_per_cpu_hour_ratio']}, "
          f"best val MSE x{result['best_val_mse_ratio']}\n-> {path}")


if __name__ == "__main__":
    main()
