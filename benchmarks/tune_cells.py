"""Long-horizon cells searched with `tsforge tune`, then trained on three seeds and scored.

    TSFORGE_DATA_DIR=/path/to/data python benchmarks/tune_cells.py exchange_dlinear_h720 \
        --cpu-minutes 15                                     # one cell, 15 CPU-minutes
    python benchmarks/tune_cells.py ili_patchtst_h24 ili_patchtst_h60 --cpu-minutes 15
    python -m tsforge.launch experiment=exchange_dlinear_h720_tuned      # a result, again

For each cell `<dataset>_<model>_h<H>` (a named experiment of the long-horizon table): a study
(`tsforge tune <search> experiment=<cell> --parallel 2 --cpu-minutes M`, the search
`conf/search/<model>_<dataset>.yaml` where there is one, else `<model>.yaml`) on the
validation split only, in benchmarks/out/tune/<cell> (launched again, it carries the study on
within the same total budget). Its best trial becomes `conf/experiment/<cell>_tuned.yaml`,
which is then trained with seeds 0, 1, 2 (one thread each, as every cell of the table) and
scored once on the test split under the protocol (PROTOCOL.md), and on the published code's
drop-last batches too (`data.legacy_test_drop_last=<its batch size>` at evaluation), so both
figures stand beside the published ones. Results: results/tune_cells.json, and a
`<cell>_tuned` row in results/long_horizon.csv beside the hand recipe's.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import REPO, RESULTS, write_json
from long_horizon import CELL, DATASETS, MODELS, RUNS, hardware, published, train

STUDIES = REPO / "benchmarks" / "out" / "tune"
EXPERIMENTS = REPO / "conf" / "experiment"


def search_for(cell: str) -> str:
    dataset, model, _ = CELL.match(cell).groups()
    special = REPO / "conf" / "search" / f"{model}_{dataset}.yaml"
    return special.stem if special.exists() else model


def study(cell: str, cpu_minutes: float) -> dict:
    search = search_for(cell)
    study_dir = STUDIES / cell
    cmd = [sys.executable, "-m", "tsforge", "tune", search, f"experiment={cell}",
           "--study", str(study_dir), "--parallel", "2", "--cpu-minutes", str(cpu_minutes),
           "--trials", "200"]  # fmt: skip
    if (study_dir / "study.json").exists():
        cmd = [sys.executable, "-m", "tsforge", "tune", "--study", str(study_dir),
               "--cpu-minutes", str(cpu_minutes), "--trials", "200"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    STUDIES.mkdir(parents=True, exist_ok=True)
    (STUDIES / f"{cell}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{cell}: the search failed (exit {proc.returncode}): "
                         f"{(proc.stderr.strip().splitlines() or [''])[-1]}")  # fmt: skip
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith(("study done", "best:"))]
    best_trial = int(done[1].split("trial ", 1)[1].split(",")[0])
    best_val = float(done[1].split("val/mse ", 1)[1].split(":")[0])
    exported = study_dir / "conf" / "experiment" / f"{search}_tuned.yaml"
    body = [ln for ln in exported.read_text().splitlines() if not ln.startswith("#")]
    header = [
        "# @package _global_",
        f"# {cell} as `tsforge tune {search} experiment={cell} --cpu-minutes {cpu_minutes:g}`",
        f"# found it: trial {best_trial}, chosen on validation MSE only ({best_val:.4f}).",
        "# benchmarks/tune_cells.py trains it with seeds 0-2 for the long-horizon table.",
        f"#   python -m tsforge.launch experiment={cell}_tuned",
    ]
    (EXPERIMENTS / f"{cell}_tuned.yaml").write_text("\n".join(header + body) + "\n")
    return {"search": search, "summary": done[0], "best_trial": best_trial,
            "best_val_mse": best_val, "cpu_minutes_budget": cpu_minutes}  # fmt: skip


# The published scripts' batch sizes (DLinear's and PatchTST's scripts/ folders), which their
# test loaders drop the last partial batch of; N-HiTS's code scores every window.
PUBLISHED_BATCH = {
    ("dlinear", "etth1"): 32, ("dlinear", "etth2"): 32, ("dlinear", "ettm1"): 8,
    ("dlinear", "exchange"): 8, ("dlinear", "ili"): 32,
    ("patchtst", "etth1"): 128, ("patchtst", "etth2"): 128, ("patchtst", "ettm1"): 128,
    ("patchtst", "ili"): 16,
}  # fmt: skip


def drop_last_mse(run_dir: Path, batch: int) -> float:
    """The run's best checkpoint scored as the published code scored: drop-last test batches."""
    from tsforge.runs.evaluate import evaluate_run
    from tsforge.runs.load import load_run

    run = load_run(run_dir)
    run.cfg.data.legacy_test_drop_last = batch
    return float(evaluate_run(run, "test")["model"]["mse"])


def cell_rows(cell: str, seeds: int, pub: dict) -> dict:
    dataset, model, horizon = CELL.match(cell).groups()
    runs = [train(f"{cell}_tuned", seed) for seed in range(seeds)]
    mses, maes = [r["mse"] for r in runs], [r["mae"] for r in runs]
    batch = PUBLISHED_BATCH.get((model, dataset))
    drop_last = [drop_last_mse(RUNS / f"{cell}_tuned" / f"seed{s}", batch)
                 for s in range(seeds)] if batch else []  # fmt: skip
    published_best = min((v[0] for v in pub.get((DATASETS[dataset], int(horizon)), {}).values()),
                         default=float("nan"))  # fmt: skip
    return {
        "dataset": DATASETS[dataset], "horizon": int(horizon), "model": MODELS[model],
        "mse": statistics.fmean(mses), "mae": statistics.fmean(maes),
        "mse_std": statistics.stdev(mses) if len(mses) > 1 else 0.0,
        "experiment": f"{cell}_tuned", "seeds": len(runs),
        "steps": round(statistics.fmean(r["steps"] for r in runs)),
        "train_minutes": statistics.fmean(r["minutes"] for r in runs),
        "val_mse": statistics.fmean(r["val_mse"] for r in runs),
        "drop_last_batch": batch,
        "drop_last_mse": statistics.fmean(drop_last) if drop_last else None,
        "best_published_mse": published_best, "runs": runs,
    }  # fmt: skip


def update_csv(row: dict) -> None:
    """The `<cell>_tuned` row of long_horizon.csv, right after the hand recipe's."""
    path = RESULTS / "long_horizon.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r[5] != row["experiment"]]
    new = [row["dataset"], str(row["horizon"]), row["model"], f"{row['mse']:.4f}",
           f"{row['mae']:.4f}", row["experiment"], str(row["seeds"]), str(row["steps"]),
           f"{row['train_minutes']:.2f}", hardware()]  # fmt: skip
    at = next(i for i, r in enumerate(rows) if r[5] == row["experiment"].removesuffix("_tuned"))
    rows.insert(at + 1, new)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="experiments of the table, e.g. ili_patchtst_h24")
    parser.add_argument("--cpu-minutes", type=float, default=30.0, help="each search's budget")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for cell in args.cells:
        if not CELL.match(cell):
            parser.error(f"{cell} is not a cell of the table (<dataset>_<model>_h<H>)")
    import os

    data_dir = os.environ.get("TSFORGE_DATA_DIR")
    pub = published(Path(data_dir) if data_dir else None)
    path = RESULTS / "tune_cells.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for cell in args.cells:
        searched = study(cell, args.cpu_minutes)
        row = cell_rows(cell, args.seeds, pub)
        results[cell] = {**searched, **row}
        update_csv(row)
        write_json(path, results)
        print(f"{cell}: {searched['summary']}; tuned test MSE {row['mse']:.4f} ± "
              f"{row['mse_std']:.4f} ({row['seeds']} seeds; drop-last {row['drop_last_mse']}), "
              f"best published "
              f"{row['best_published_mse']:.3f}", flush=True)


if __name__ == "__main__":
    main()
