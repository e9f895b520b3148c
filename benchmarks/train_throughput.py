"""NHITS training throughput: tsforge against neuralforecast and a bare PyTorch step.

    python benchmarks/train_throughput.py                    # 3 alternating pairs, 300 steps each
    python benchmarks/train_throughput.py --pairs 5 --json out.json
    python benchmarks/train_throughput.py --quick            # 1 pair of 40 steps: does it run?
    python benchmarks/train_throughput.py --threads 2        # torch threads of every side (1)

The figures go to benchmarks/results/train_throughput.json unless `--json PATH` says where.

neuralforecast is not a tsforge dependency; install it for this benchmark only (check first
with `pip install --dry-run neuralforecast` that it keeps the installed torch; if it would
replace it, pin it: `pip install neuralforecast torch==<the installed version>`):

    pip install neuralforecast

Without it that side is skipped with a message. ETTh1 is found like every tsforge dataset
(`TSFORGE_DATA_DIR`, the cache folder, else downloaded).

The network is neuralforecast's default NHITS (3 identity stacks of one block, MLP 2 x 512,
pooling [2, 2, 1], downsampling [4, 2, 1], MaxPool, linear interpolation), L=480, H=96,
256 windows a step, MAE, Adam(W) at lr 1e-3 without weight decay or gradient clipping, on ETTh1
standardized with the train split's statistics. Each measurement is a fresh child process:

- tsforge: `python -m tsforge.launch experiment=bench_nhits_etth1 trainer.max_steps=N`
  (conf/experiment/bench_nhits_etth1.yaml), the store and the loader included;
- neuralforecast: `NHITS(h=96, input_size=480, windows_batch_size=256, scaler_type="identity")`
  fitted on the seven ETTh1 channels as single series (its `batch_size` counts series: the
  default 32 takes all seven each step), train rows only, no validation;
- bare: tsforge's NHITS on one fixed in-memory batch [256, 480] -> [256, 96]: forward, masked
  MAE, backward, AdamW step; no loader, no logging, no scheduler. Its AdamW is the fused one
  tsforge's builder uses, so that tsforge / bare measures what tsforge adds around the same
  computation; torch's default (unfused) AdamW is measured too, in the same child, and
  reported as `bare_unfused`.

What is timed, the same for all three: the wall-clock time from the end of step `warmup` to
the end of step N, so start-up, the first steps (allocations, caches) and shutdown are left
out and everything the loop does between steps (data, logging, checkpoints) is in. tsforge's
times come from the `time` of its train records in RUN_DIR/metrics.jsonl (one every 10 steps),
neuralforecast's from a Lightning callback at the end of each batch, the bare step's from its
loop. windows/s = (N - warmup) * 256 / seconds. Also reported for tsforge: the loop's own
`perf/windows_per_s` (step time only) and `perf/data_wait_frac` over the same steps.

One torch thread by default: on a machine shared with other work, two OpenMP threads on two
cores slow down tenfold whenever a neighbour takes a core (each parallel region waits for the
descheduled thread), and the figures then measure the neighbours. `--threads 2` on an idle
machine measures the two-core case. Each side also reports windows per CPU-second of its
process (user + system time over the same steps), which such load disturbs much less.

The sides run in turn, their order rotating from pair to pair, so that load from other work on
the machine falls on each alike; the median of each side is reported, with the ratios
tsforge / neuralforecast (target >= 3) and tsforge / bare (target >= 0.7), and the load
average before and after (os.getloadavg) as a sign of contention.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_pair_options, check_pair_options, machine, result_path, write_json

REPO = Path(__file__).resolve().parents[1]
L, H, WINDOWS = 480, 96, 256
LR = 1e-3
SIDES = ("tsforge", "neuralforecast", "bare")
TARGETS = {"tsforge/neuralforecast": 3.0, "tsforge/bare": 0.7}


# -- the sides, each in its own child process ------------------------------------------------
def measure_tsforge(steps: int, warmup: int, threads: int, workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="tsforge_", dir=workdir))
    cmd = [sys.executable, "-m", "tsforge.launch", "experiment=bench_nhits_etth1",
           f"trainer.max_steps={steps}", f"trainer.threads={threads}",
           "trainer.log_every_steps=10", f"hydra.run.dir={run_dir}"]  # fmt: skip
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        cpu = []  # (wall time, CPU seconds of the child): its CPU time at its log records
        while proc.poll() is None:
            cpu.append((time.time(), _cpu_seconds(proc.pid)))
            time.sleep(0.02)  # CPU time ticks every 10 ms; rarer wake-ups disturb the run less
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{log.read_text()[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    first = next(r for r in train if r["step"] >= warmup)
    last = train[-1]
    window = [r for r in train if first["step"] < r["step"] <= last["step"]]
    steps_timed = last["step"] - first["step"]
    # The loop's own figure over the same steps: windows / summed step time.
    loop_s = sum(10 * WINDOWS / r["perf/windows_per_s"] for r in window)
    out = {
        "windows_per_s": steps_timed * WINDOWS / (last["time"] - first["time"]),
        "loop_windows_per_s": len(window) * 10 * WINDOWS / loop_s,
        "data_wait_frac": statistics.fmean(r["perf/data_wait_frac"] for r in window),
        "steps_timed": steps_timed,
    }
    cpu = [(t, c) for t, c in cpu if c is not None]
    if cpu:
        import numpy as np

        t_W, c_W = np.array(cpu).T
        cpu_s = np.interp(last["time"], t_W, c_W) - np.interp(first["time"], t_W, c_W)
        out["windows_per_cpu_s"] = steps_timed * WINDOWS / cpu_s
    return out


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_neuralforecast(steps: int, warmup: int, threads: int, workdir: Path) -> dict | None:
    try:
        import neuralforecast  # noqa: F401
    except ImportError:
        return None
    return _child_json([sys.executable, __file__, "--side", "neuralforecast", "--steps",
                        str(steps), "--warmup", str(warmup), "--threads", str(threads)])


def measure_bare(steps: int, warmup: int, threads: int, workdir: Path) -> dict:
    return _child_json([sys.executable, __file__, "--side", "bare", "--steps", str(steps),
                        "--warmup", str(warmup), "--threads", str(threads)])


def _child(cmd: list[str]) -> str:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-4000:]}")
    return done.stdout


def _child_json(cmd: list[str]) -> dict:
    return json.loads(_child(cmd).strip().splitlines()[-1])


def _rate(ends: list[tuple[float, float]], warmup: int) -> dict:
    """windows/s from (wall, CPU) times at the end of every step (ends[k]: step k + 1)."""
    (wall0, cpu0), (wall1, cpu1) = ends[warmup - 1], ends[-1]
    timed = len(ends) - warmup
    return {"windows_per_s": timed * WINDOWS / (wall1 - wall0),
            "windows_per_cpu_s": timed * WINDOWS / (cpu1 - cpu0), "steps_timed": timed}


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run_neuralforecast_side(steps: int, warmup: int, threads: int) -> dict:
    import logging
    import warnings

    import pandas as pd
    import pytorch_lightning as pl
    import torch
    from neuralforecast import NeuralForecast
    from neuralforecast.models import NHITS

    from tsforge.data import registry

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)

    (raw,) = registry.download("ETTh1")
    train_rows = registry.get("ETTh1").split_spec["train"]
    wide = pd.read_csv(raw.path, parse_dates=["date"]).iloc[:train_rows]
    cols = [c for c in wide.columns if c != "date"]
    values = wide[cols].to_numpy("float64")
    values = (values - values.mean(0)) / values.std(0)  # train-split standardization
    df = pd.DataFrame({
        "unique_id": pd.Index(cols).repeat(train_rows),
        "ds": pd.concat([wide["date"]] * len(cols), ignore_index=True),
        "y": values.T.reshape(-1).astype("float32"),
    })  # fmt: skip

    seen = {"ends": [], "threads": 0}  # NeuralForecast deep-copies the model and its callbacks

    class StepEnds(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["threads"] = torch.get_num_threads()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["ends"].append(_now())

    model = NHITS(
        h=H, input_size=L, windows_batch_size=WINDOWS, learning_rate=LR, max_steps=steps,
        scaler_type="identity", val_check_steps=steps + 1, random_seed=0,
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[StepEnds()],
    )  # fmt: skip
    NeuralForecast(models=[model], freq="h").fit(df, val_size=0)
    if seen["threads"] != threads:
        raise SystemExit(f"neuralforecast trained with {seen['threads']} threads, not {threads}")
    return _rate(seen["ends"], warmup)


def run_bare_side(steps: int, warmup: int, threads: int) -> dict:
    """The fused AdamW tsforge's builder picks, then torch's default (unfused) AdamW."""
    import torch

    torch.set_num_threads(threads)
    fused = _bare_steps(steps, warmup, fused=True)
    unfused = _bare_steps(steps, warmup, fused=None)
    return {**fused, "unfused_windows_per_s": unfused["windows_per_s"],
            "unfused_windows_per_cpu_s": unfused["windows_per_cpu_s"]}


def _bare_steps(steps: int, warmup: int, *, fused: bool | None) -> dict:
    import torch

    from tsforge.losses import build_loss
    from tsforge.models import build_model

    torch.manual_seed(0)
    model = build_model("nhits", input_size=L, horizon=H)
    loss_fn = build_loss("mae")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=fused)
    x_BL1, y_BH1 = torch.randn(WINDOWS, L, 1), torch.randn(WINDOWS, H, 1)
    x_mask, y_mask = torch.ones_like(x_BL1), torch.ones_like(y_BH1)
    model.train()
    ends = []
    for _ in range(steps):
        loss = loss_fn(model(x_BL1, insample_mask=x_mask), y_BH1, y_mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(_now())
    return _rate(ends, warmup)


# -- the comparison ---------------------------------------------------------------------------
MEASURE = {"tsforge": measure_tsforge, "neuralforecast": measure_neuralforecast,
           "bare": measure_bare}  # fmt: skip


def summarize(runs: list[dict], key: str) -> tuple[dict, dict]:
    """Median of `key` per side (bare_unfused from the bare runs) and the ratios of tsforge's."""
    values: dict[str, list[float]] = {}
    for r in runs:
        if key in r:
            values.setdefault(r["side"], []).append(r[key])
        if f"unfused_{key}" in r:
            values.setdefault("bare_unfused", []).append(r[f"unfused_{key}"])
    median = {side: statistics.median(v) for side, v in values.items()}
    if "tsforge" not in median:
        return median, {}
    ratios = {f"tsforge/{side}": median["tsforge"] / v
              for side, v in median.items() if side != "tsforge"}  # fmt: skip
    return median, ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pair_options(p, "tsforge, nf, bare")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads of every side (1: see the module docstring)")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the figures (default: benchmarks/results/; "
                        "with --quick, benchmarks/out/)")
    p.add_argument("--side", choices=("neuralforecast", "bare"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # A --quick run checks the script: it must not replace the committed figures.
    args.json = result_path("train_throughput", args.json, args.quick)
    if args.side:  # a child: print one JSON line
        run = run_neuralforecast_side if args.side == "neuralforecast" else run_bare_side
        print(json.dumps(run(args.steps, args.warmup, args.threads)))
        return 0
    check_pair_options(p, args)

    before = machine()
    print(f"{before['cpu']}, {before['cores']} cores, torch {before['torch']}, "
          f"{args.threads} threads, load average {before['load_avg_1_5_15']}", flush=True)
    sides = list(SIDES)
    try:
        import neuralforecast
        nf_version = neuralforecast.__version__
    except ImportError:
        nf_version = None
        sides.remove("neuralforecast")
        print("neuralforecast is not installed: that side is skipped "
              "(pip install neuralforecast)", flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        for pair in range(args.pairs):
            k = pair % len(sides)
            for side in sides[k:] + sides[:k]:  # rotate the order from pair to pair
                result = MEASURE[side](args.steps, args.warmup, args.threads, Path(tmp))
                result.pop("run_dir", None)
                runs.append({"pair": pair, "side": side, **result})
                print(f"pair {pair}  {side:<15}{result['windows_per_s']:>9,.0f} windows/s",
                      flush=True)
    median, ratios = summarize(runs, "windows_per_s")
    median_cpu, ratios_cpu = summarize(runs, "windows_per_cpu_s")
    met = {k: ratios[k] >= v for k, v in TARGETS.items() if k in ratios}
    out = {
        "benchmark": "train_throughput",
        "command": " ".join(["python", "benchmarks/train_throughput.py", *(argv or sys.argv[1:])]),
        "settings": {"model": "nhits (neuralforecast defaults)", "data": "ETTh1",
                     "input_size": L, "horizon": H, "windows_per_step": WINDOWS, "lr": LR,
                     "steps": args.steps, "warmup_steps": args.warmup,
                     "pairs": args.pairs, "threads": args.threads,
                     "neuralforecast": nf_version},  # fmt: skip
        "machine": before,
        "load_avg_after": list(os.getloadavg()),
        "runs": runs,
        "median_windows_per_s": median,
        "ratios": ratios,
        "median_windows_per_cpu_s": median_cpu,
        "ratios_cpu": ratios_cpu,
        "targets": TARGETS,
        "targets_met": met,
    }
    print("median windows/s: " + ", ".join(f"{s} {v:,.0f}" for s, v in median.items()))
    for k, v in ratios.items():
        target = f" (target >= {TARGETS[k]}: {'met' if met[k] else 'NOT met'})" if k in met else ""
        print(f"{k}: {v:.2f}{target}")
    if median_cpu:
        print("per CPU-second, which other load on the machine disturbs less: "
              + ", ".join(f"{s} {v:,.0f}" for s, v in median_cpu.items()) + "; "
              + ", ".join(f"{k} {v:.2f}" for k, v in ratios_cpu.items()))
    print(f"load average after: {out['load_avg_after']}")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
