"""M4 Hourly: train a named experiment, forecast the 48 steps after each of the 414 training
series, and score them as the M4 competition does, beside sNaive, Naive2 and the best entries.

    TSFORGE_DATA_DIR=/path/to/data python benchmarks/m4_hourly.py            # seed 0
    python benchmarks/m4_hourly.py --seeds 0 1 2 --jobs 2   # each seed, their median ensemble
    python benchmarks/m4_hourly.py --run-dir runs/m4  # score a trained run, no training
    python benchmarks/m4_hourly.py --split val        # the 48 steps before the test: for tuning
    python benchmarks/m4_hourly.py trainer.max_steps=600 --seeds 0    # Hydra overrides first
    python benchmarks/m4_hourly.py --lookbacks 96 144 192 240 288 336 --jobs 2   # an ensemble

Official metrics (Makridakis et al., IJF 2020; the M4 "Benchmarks and Evaluation.R"):
sMAPE = mean of 200 |y - f| / (|y| + |f|); MASE = mean |y - f| / (mean over the whole
training series of |y_t - y_{t-24}|), per series, then averaged over series; OWA = the mean of
sMAPE / sMAPE(Naive2) and MASE / MASE(Naive2) on the totals. sNaive and Naive2 are computed
here from the same files and must match the official sheet (13.912 / 1.193, 18.383 / 2.395).

`--split val` forecasts the 48 steps before the test part from the training series cut there
(M4's protocol moved back 48 steps): every tuning choice is made on it. The trainer's own
MASE scales by the train rows only (not the validation part of the history), so forecasts come
from `tsforge.runs.predict` on a store of the histories and are scored here with
`tsforge.metrics`, as `tsforge score` scores them.

`--lookbacks` trains one member per look-back and seed (`data.input_size=L`), as N-BEATS builds
its M4 ensemble from look-backs of 2H to 7H (Oreshkin et al., ICLR 2020; N-HiTS's M4 results
are such ensembles too), and scores each member and the median of all of them. A run that has
finished (its metrics.json written) is scored, not trained again. Writes
benchmarks/results/m4_hourly.csv and .json (or --out), keeping the rows of other experiments
already there, and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import cpu_model

HORIZON, SEASON = 48, 24
OFFICIAL = "m4/M4_point_forecast_scores_by_frequency.csv"
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------- official metrics
# The definitions live in tsforge.metrics (`tsforge score` uses the same ones).
def score(forecast_NH, truth_NH, histories, season=SEASON) -> dict[str, float]:
    """{'smape', 'mase'}: series means averaged over series, as M4 reports them."""
    from tsforge.metrics import mase_scale, score_panel

    scale_N = np.array([mase_scale(h, season) for h in histories])
    overall, _ = score_panel(forecast_NH, truth_NH, scale_N)
    return {"smape": overall["smape"], "mase": overall["mase"]}


def _baseline(name: str, histories, horizon: int, season: int) -> np.ndarray:
    from tsforge.metrics import baseline_forecasts

    return np.stack([baseline_forecasts(h, horizon, season)[name] for h in histories])


def seasonal_naive_forecasts(histories, horizon=HORIZON, season=SEASON) -> np.ndarray:
    """sNaive [N, H]: the last season of each history, repeated."""
    return _baseline("seasonal_naive", histories, horizon, season)


def naive2_forecasts(histories, horizon=HORIZON, season=SEASON) -> np.ndarray:
    return _baseline("naive2", histories, horizon, season)


def naive1_forecasts(histories, horizon=HORIZON, season=SEASON) -> np.ndarray:
    return _baseline("naive1", histories, horizon, season)


# ------------------------------------------------------------------------------- the data
def load_series(split: str) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """(ids, histories, truth [N, H]) of the test (the official 48 steps after each training
    series) or of the validation split (the last 48 training steps, after the rest)."""
    from tsforge.data import m4, registry

    train_raw, test_raw = registry.get("M4-Hourly").files
    train = list(m4.read_rows(registry.fetch(train_raw).path))
    ids = [uid for uid, _ in train]
    if split == "test":
        test = dict(m4.read_rows(registry.fetch(test_raw).path))
        return ids, [y for _, y in train], np.stack([test[uid] for uid in ids])
    return ids, [y[:-HORIZON] for _, y in train], np.stack([y[-HORIZON:] for _, y in train])


def write_histories(ids, histories, out: Path) -> Path:
    """A store of the histories only, laid out as the M4 store is: predict forecasts after it."""
    from tsforge.data.store import ColumnRoles, StoreWriter

    with StoreWriter(out, roles=ColumnRoles(target=("y",)), freq="1", time_unit="index") as w:
        for uid, y in zip(ids, histories):
            w.add_series(uid, 0, y[:, None])
        w.commit(splits={"kind": "none"})
    return out


def forecast_run(run_dir: Path, ids, histories, threads: int) -> np.ndarray:
    """The run's (best checkpoint's) forecasts [N, H] of the 48 steps after each history."""
    import pandas as pd
    import torch

    from tsforge.runs.load import load_run
    from tsforge.runs.predict import predict

    run = load_run(run_dir, "best")
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="m4_hourly_") as tmp:
        store = write_histories(ids, histories, Path(tmp) / "histories.zarr")
        predict(run, store, Path(tmp) / "forecasts.parquet")
        df = pd.read_parquet(Path(tmp) / "forecasts.parquet")
    # ds is each series' own row index: the horizon step is the rank within the series
    df["step"] = df.groupby("unique_id")["ds"].rank(method="first").astype(int) - 1
    wide = df.pivot(index="unique_id", columns="step", values=run.model_name)
    if len(wide) != len(ids) or wide.shape[1] != HORIZON:
        raise SystemExit(f"{run_dir}: got {wide.shape} forecasts, expected {len(ids)} x 48")
    return wide.loc[ids].to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------------- training
def train(experiment: str, seed: int, run_dir: Path, threads: int, overrides: list[str]) -> float:
    """Train `experiment` with `seed` into `run_dir` in a fresh process; its wall minutes."""
    cmd = [sys.executable, "-m", "tsforge.launch", f"experiment={experiment}",
           f"trainer.seed={seed}", f"trainer.threads={threads}", f"hydra.run.dir={run_dir}",
           *overrides]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return (time.perf_counter() - t0) / 60


def run_minutes(run_dir: Path) -> float | None:
    """Wall minutes of a finished run: its creation (meta.json) to its metrics.json."""
    from datetime import datetime

    try:
        created = json.loads((run_dir / "meta.json").read_text())["created"]
        done = (run_dir / "metrics.json").stat().st_mtime
    except (OSError, KeyError, ValueError):
        return None
    return (done - datetime.fromisoformat(created).timestamp()) / 60


def official_rows(data_dir: Path, best: int) -> list[dict]:
    """Naive, sNaive, Naive2 and the `best` M4 entries by Hourly OWA, from the official sheet."""
    with open(data_dir / OFFICIAL, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pick = lambda r: {  # noqa: E731
        "smape": float(r["sMAPE_Hourly"]), "mase": float(r["MASE_Hourly"]),
        "owa": float(r["OWA_Hourly"]),
    }  # fmt: skip
    named = {r["method"]: pick(r) for r in rows if not r["method"].isdigit()}
    entries = [r for r in rows if r["method"].isdigit()]
    ranked = sorted(entries, key=lambda r: float(r["OWA_Hourly"]))
    out = [{"method": f"M4 entry {r['method']} (official)", **pick(r)} for r in ranked[:best]]
    out += [{"method": f"{k} (official)", **named[k]} for k in ("Naive", "sNaive", "Naive2")]
    return out


def other_experiments(path: Path, experiments: set[str]) -> list[dict]:
    """The rows of other tsforge experiments already in the results, kept beside this run's."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return []
    return [r for r in rows if r.get("experiment") and r["experiment"] not in experiments]


def machine_line(threads: int) -> str:
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} cores, {threads} torch thread(s), "
            f"Python {platform.python_version()}, torch {torch.__version__}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="m4_hourly_nhits", help="conf/experiment/<name>.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lookbacks", type=int, nargs="+", default=None,
                   help="one member per look-back (data.input_size) and seed; their median")
    p.add_argument("--run-dir", type=Path, nargs="+", default=None,
                   help="trained run(s) to score instead of training (one per seed)")
    p.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "m4_hourly",
                   help="where trained runs go: <runs-root>/<experiment>_seed<S>")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write, JSON beside it (default benchmarks/results/m4_hourly.csv; "
                   "m4_hourly_val.csv for --split val)")
    p.add_argument("--best", type=int, default=3, help="M4 entries to list")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = p.parse_args(argv)
    if args.run_dir and args.lookbacks:
        p.error("--lookbacks names the runs it trains or finds: give it without --run-dir")
    if args.lookbacks and min(args.lookbacks) < 1:
        p.error("--lookbacks takes look-backs of at least 1 step, e.g. 96 144 192")
    # the same member twice would train two runs into one folder at once
    for flag, values in (("--lookbacks", args.lookbacks or []), ("--seeds", args.seeds)):
        if len(set(values)) < len(values):
            p.error(f"{flag} names a value twice: give each once")

    from tsforge import metrics
    from tsforge.data import registry

    data_dir = registry.data_dir()
    if data_dir is None or not (data_dir / OFFICIAL).is_file():
        raise SystemExit(f"set TSFORGE_DATA_DIR to the folder holding {OFFICIAL}")
    ids, histories, truth = load_series(args.split)

    # members: (look-back or None, seed); a look-back member is the experiment at that input
    lookbacks = args.lookbacks or [None]

    def lookback_overrides(lb: int | None) -> list[str]:
        return [] if lb is None else [f"data.input_size={lb}"]

    members = [(lb, seed) for lb in lookbacks for seed in args.seeds]
    runs: list[tuple[int | None, int, Path, float | None]] = []
    if args.run_dir:
        from omegaconf import OmegaConf

        runs = [(None, int(OmegaConf.load(d / "config.yaml").trainer.seed), d, run_minutes(d))
                for d in args.run_dir]  # fmt: skip
    else:
        def one(member: tuple[int | None, int]) -> tuple[int | None, int, Path, float | None]:
            lb, seed = member
            name = args.experiment if lb is None else f"{args.experiment}_L{lb}"
            run_dir = args.runs_root / f"{name}_seed{seed}"
            if (run_dir / "metrics.json").exists():
                return lb, seed, run_dir, run_minutes(run_dir)
            return lb, seed, run_dir, train(args.experiment, seed, run_dir, args.threads,
                                            [*args.overrides, *lookback_overrides(lb)])  # fmt: skip

        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(one, members))

    snaive = score(seasonal_naive_forecasts(histories), truth, histories)
    naive2 = score(naive2_forecasts(histories), truth, histories)
    naive = score(naive1_forecasts(histories), truth, histories)

    def owa(s):
        return metrics.owa(s["smape"], s["mase"], naive2["smape"], naive2["mase"])

    # the experiment column reproduces the row: the experiment and its look-back override
    rows, forecasts = [], []
    for lb, seed, run_dir, minutes in runs:
        f = forecast_run(run_dir, ids, histories, args.threads)
        forecasts.append(f)
        s = score(f, truth, histories)
        name = " ".join([args.experiment, *lookback_overrides(lb)])
        rows.append({"method": f"tsforge {name}, seed {seed}", **s, "owa": owa(s),
                     "experiment": name, "seeds": 1, "train_minutes": minutes,
                     "run_dir": str(run_dir)})  # fmt: skip
    if len(forecasts) > 1:
        s = score(np.median(np.stack(forecasts), axis=0), truth, histories)
        total = [r["train_minutes"] for r in rows]
        if args.lookbacks:
            name = f"{args.experiment} data.input_size={','.join(map(str, args.lookbacks))}"
            what = (f"median of {len(forecasts)} (look-backs "
                    f"{', '.join(map(str, args.lookbacks))}; seeds "
                    f"{', '.join(map(str, args.seeds))})")
        else:
            name, what = args.experiment, f"median of {len(forecasts)} seeds"
        rows.append({"method": f"tsforge {args.experiment}, {what}", **s, "owa": owa(s),
                     "experiment": name, "seeds": len(forecasts),
                     "train_minutes": sum(total) if None not in total else None})  # fmt: skip
    for name, s in (("sNaive (computed here)", snaive), ("Naive2 (computed here)", naive2),
                    ("Naive (computed here)", naive)):
        rows.append({"method": name, **s, "owa": owa(s)})
    if args.split == "test":
        rows += official_rows(data_dir, args.best)

    machine = machine_line(args.threads)
    for r in rows:
        r.setdefault("experiment", "")
        r.update(split=args.split, hardware=machine)
    out = args.out or ROOT / "benchmarks" / "results" / (
        "m4_hourly.csv" if args.split == "test" else "m4_hourly_val.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = other_experiments(out.with_suffix(".json"), {r["experiment"] for r in rows} - {""})
    cols = ["method", "smape", "mase", "owa", "split", "experiment", "seeds", "train_minutes",
            "hardware"]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in kept + rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    summary = {"split": args.split, "series": len(ids), "horizon": HORIZON, "season": SEASON,
               "machine": machine, "runs": [str(d) for _, _, d, _ in runs], "rows": kept + rows}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\nM4 Hourly, {args.split} split, {len(ids)} series x {HORIZON} steps ({machine})")
    print(f"{'method':<58} {'sMAPE':>8} {'MASE':>7} {'OWA':>7} {'train min':>9}")
    for r in rows:
        m = r.get("train_minutes")
        print(f"{r['method']:<58} {r['smape']:8.3f} {r['mase']:7.3f} {r['owa']:7.3f} "
              f"{'' if m is None else f'{m:.1f}':>9}")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
