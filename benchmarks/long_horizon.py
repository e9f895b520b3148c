"""The long-horizon table: ETT, Exchange and ILI under the papers' protocol, beside their numbers.

    TSFORGE_DATA_DIR=/path/to/data python benchmarks/long_horizon.py            # every cell
    python benchmarks/long_horizon.py --only etth1_dlinear --jobs 2                # some cells
    python benchmarks/long_horizon.py --report                                     # tables only

Every cell is a named experiment, `conf/experiment/<dataset>_<model>_h<H>.yaml`, trained with
`python -m tsforge.launch experiment=<name> trainer.seed=<s> trainer.threads=1` in its own
process (`--jobs` at a time), into `benchmarks/out/long_horizon/<name>/seed<s>`; a cell whose
run has finished, or whose seed is on record in `results/long_horizon.json` (trained on any
machine), is not trained again. H=96 cells run `--seeds-h96` seeds (default 3), the others
`--seeds` (default 1). Then the results are gathered from each run's metrics.json, with the
runs on record that are not on this disk (each run keeps its seed and hardware), so that
adding seeds to some cells leaves every other row as it was:

- `benchmarks/results/long_horizon.csv`: dataset, horizon, model, mse, mae (means over seeds,
  test split, every window, standardized values), experiment, seeds, steps, train_minutes
  (CPU-minutes of a run on one thread, start-up and evaluation included, mean over seeds: on
  an idle core this is its wall-clock, and neighbours on a shared machine don't inflate it)
  and hardware (each machine the seeds ran on); the rows of searched cells
  (`<cell>_tuned`, written by tune_cells.py) are kept, after their cell's row;
- `benchmarks/results/long_horizon.json`: the same with each seed's figures and the
  validation curves (for `benchmarks/plots.py`);
- a Markdown table beside the best published MSE/MAE of PatchTST/64, DLinear and N-HiTS
  (`$TSFORGE_DATA_DIR/published_long_horizon.csv`), printed and written to
  `benchmarks/results/long_horizon.md` for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, RESULTS, cpu_model, run_timed

EXPERIMENTS = REPO / "conf" / "experiment"
RUNS = REPO / "benchmarks" / "out" / "long_horizon"
CELL = re.compile(r"^(etth1|etth2|ettm1|exchange|ili)_(nhits|dlinear|patchtst)_h(\d+)$")
DATASETS = {"etth1": "ETTh1", "etth2": "ETTh2", "ettm1": "ETTm1", "exchange": "Exchange",
            "ili": "ILI"}  # fmt: skip
MODELS = {"nhits": "NHITS", "dlinear": "DLinear", "patchtst": "PatchTST"}
# The published rows each of our models is set beside (published_long_horizon.csv `model`).
PEERS = {
    "PatchTST/64": ("PatchTST/64",),
    "DLinear": ("DLinear",),
    "N-HiTS": ("N-HiTS", "NHITS (neuralforecast AutoNHITS)"),
}
CSV_COLUMNS = ["dataset", "horizon", "model", "mse", "mae", "experiment", "seeds", "steps",
               "train_minutes", "hardware"]  # fmt: skip


def cells(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if CELL.match(p.stem))
    if only:
        names = [n for n in names if any(n.startswith(o) for o in only)]
    order = list(DATASETS)
    return sorted(names, key=lambda n: (order.index(CELL.match(n)[1]), CELL.match(n)[2],
                                        int(CELL.match(n)[3])))  # fmt: skip


def seeds_for(name: str, args) -> list[int]:
    horizon = int(CELL.match(name)[3])
    return list(range(args.seeds_h96 if horizon == 96 else args.seeds))


def train(name: str, seed: int) -> dict:
    """Train one cell with one seed (unless done before); its figures."""
    run_dir = RUNS / name / f"seed{seed}"
    timing = run_dir / "timing.json"
    if not ((run_dir / "metrics.json").exists() and timing.exists()):
        run_dir.parent.mkdir(parents=True, exist_ok=True)  # the launch makes the run's folder
        stdout = run_dir.parent / f"seed{seed}.stdout.txt"
        cmd = [sys.executable, "-m", "tsforge.launch", f"experiment={name}",
               f"trainer.seed={seed}", "trainer.threads=1", f"hydra.run.dir={run_dir}"]  # fmt: skip
        code, wall, cpu = run_timed(cmd, stdout)
        if code != 0:
            log = stdout.read_text()[-3000:]
            raise RuntimeError(f"{name} seed {seed} failed ({code}):\n{log}")
        timing.write_text(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}) + "\n")
        print(f"  trained {name} seed {seed}: {cpu / 60:.1f} CPU-min, {wall / 60:.1f} min wall",
              flush=True)  # fmt: skip
    return read_run(run_dir)


def read_run(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    curve = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if "val/mse" in row:
                curve.append([row["step"], row["val/mse"]])
    return {
        "seed": int(run_dir.name.removeprefix("seed")),
        "hardware": hardware(),
        "mse": metrics["test"]["mse"],
        "mae": metrics["test"]["mae"],
        "val_mse": metrics.get("best_val", {}).get("mse"),
        "steps": metrics["steps"],
        "minutes": timing["cpu_s"] / 60,
        "wall_minutes": timing["wall_s"] / 60,
        "val_curve": curve,
    }


def hardware() -> str:
    return f"{cpu_model()}, 1 of {os.cpu_count()} cores, {platform.system()}"


def published(data_dir: Path | None) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """{(dataset, horizon): {peer: (mse, mae)}} from published_long_horizon.csv."""
    out: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    path = data_dir / "published_long_horizon.csv" if data_dir else None
    if path is None or not path.exists():
        return out
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["setting"] != "multivariate":  # all channels as input; not the S (OT only) rows
                continue
            for peer, names in PEERS.items():
                if row["model"] in names:
                    mae = float(row["mae"]) if row["mae"] else float("nan")
                    out.setdefault((row["dataset"], int(row["horizon"])), {})[peer] = (
                        float(row["mse"]), mae)
    return out


def recorded() -> dict[str, dict[int, dict]]:
    """{cell: {seed: run}} from results/long_horizon.json: the runs of record, from any machine
    (runs recorded before runs kept their seed and hardware: seeds 0.. in order, the row's)."""
    path = RESULTS / "long_horizon.json"
    if not path.exists():
        return {}
    out: dict[str, dict[int, dict]] = {}
    for row in json.loads(path.read_text()):
        for i, run in enumerate(row["runs"]):
            run = {"seed": i, "hardware": row["hardware"], **run}
            out.setdefault(row["experiment"], {})[run["seed"]] = run
    return out


def summarise(name: str, runs: list[dict]) -> dict:
    ds, model, horizon = CELL.match(name).groups()
    mses, maes = [r["mse"] for r in runs], [r["mae"] for r in runs]
    return {
        "dataset": DATASETS[ds], "horizon": int(horizon), "model": MODELS[model],
        "mse": statistics.fmean(mses), "mae": statistics.fmean(maes),
        "mse_std": statistics.stdev(mses) if len(mses) > 1 else 0.0,
        "mae_std": statistics.stdev(maes) if len(maes) > 1 else 0.0,
        "experiment": name, "seeds": len(runs),
        "steps": round(statistics.fmean(r["steps"] for r in runs)),
        "train_minutes": statistics.fmean(r["minutes"] for r in runs),
        "hardware": "; ".join(sorted({r["hardware"] for r in runs})), "runs": runs,
    }  # fmt: skip


def _fmt(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def table(rows: list[dict], pub: dict) -> str:
    head = ("| dataset | H | model | MSE | MAE | PatchTST/64 | DLinear | N-HiTS | best published "
            "MSE | Δ MSE | minutes |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        peers = pub.get((r["dataset"], r["horizon"]), {})
        shown = []
        for peer in PEERS:
            mse, mae = peers.get(peer, (float("nan"), float("nan")))
            shown.append("–" if mse != mse else (f"{mse:.3f} / {mae:.3f}" if mae == mae
                                                  else f"{mse:.3f} / –"))  # fmt: skip
        best = min((v[0] for v in peers.values()), default=float("nan"))
        delta = r["mse"] - best
        mark = "**" if delta <= 0 else ""
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | {r['model']} | "
            f"{mark}{_fmt(r['mse'], r['mse_std'], r['seeds'])}{mark} | "
            f"{_fmt(r['mae'], r['mae_std'], r['seeds'])} | {' | '.join(shown)} | "
            f"{best:.3f} | {delta:+.3f} | {r['train_minutes']:.1f} |"
        )
    met = sum(1 for r in rows if r["mse"] <= min(
        (v[0] for v in pub.get((r["dataset"], r["horizon"]), {}).values()), default=-1))
    lines.append("")
    lines.append(f"{met} of {len(rows)} cells at or below the best published MSE.")
    return "\n".join(lines)


def write_csv(rows: list[dict]) -> None:
    """long_horizon.csv: a row per cell, each followed by the rows of record that name it
    (`<cell>_tuned`, from tune_cells.py), kept as they are."""
    path = RESULTS / "long_horizon.csv"
    kept: dict[str, list[list[str]]] = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in list(csv.reader(f))[1:]:
                if not CELL.match(row[5]):
                    kept.setdefault(row[5].removesuffix("_tuned"), []).append(row)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([{**r, "mse": f"{r['mse']:.4f}", "mae": f"{r['mae']:.4f}",
                              "train_minutes": f"{r['train_minutes']:.2f}"}[c]
                             for c in CSV_COLUMNS])  # fmt: skip
            writer.writerows(kept.pop(r["experiment"], []))
        for orphans in kept.values():
            writer.writerows(orphans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="experiment name prefixes")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell, H > 96")
    parser.add_argument("--seeds-h96", type=int, default=3, help="seeds per cell, H = 96")
    parser.add_argument("--report", action="store_true", help="gather finished runs only")
    args = parser.parse_args()
    data_dir = os.environ.get("TSFORGE_DATA_DIR")
    if not data_dir and not args.report:
        print("set TSFORGE_DATA_DIR to the folder holding ETTh1.csv etc.", file=sys.stderr)
        return 2

    names = cells(args.only)
    record = recorded()
    # Seed-major: every cell once before any cell's second seed; seeds on record are done.
    jobs = sorted(((n, s) for n in names for s in seeds_for(n, args)
                   if s not in record.get(n, {})), key=lambda j: j[1])  # fmt: skip
    if not args.report:
        print(f"{len(jobs)} runs of {len(names)} cells, {args.jobs} at a time", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: train(*job), jobs))

    rows = []
    for name in cells([]):
        runs = dict(record.get(name, {}))
        for d in sorted((RUNS / name).glob("seed*")):
            if d.is_dir() and (d / "metrics.json").exists() and (d / "timing.json").exists():
                run = read_run(d)
                runs[run["seed"]] = run
        if runs:
            rows.append(summarise(name, [runs[s] for s in sorted(runs)]))

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv(rows)
    (RESULTS / "long_horizon.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows, published(Path(data_dir) if data_dir else None))
    (RESULTS / "long_horizon.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
