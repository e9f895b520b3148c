"""Time to a result: ETTh1 H=96 test MSE from a cold start, tsforge against neuralforecast.

    pip install neuralforecast          # the peer only; it keeps the installed torch
    TSFORGE_DATA_DIR=/path/to/data python benchmarks/time_to_result.py
    python benchmarks/time_to_result.py --nf-steps 800 1600 --quick

Both sides start as a fresh process on one torch thread and stop when they hold the test
MSE under the long-horizon protocol (benchmarks/PROTOCOL.md: train-fit standardization,
every stride-1 test window, MSE on standardized values):

- tsforge: `python -m tsforge.launch experiment=etth1_nhits_h96 trainer.threads=1`, from the
  command to its metrics.json (ingest of the CSV into a store, training with validation and
  early stopping, the test pass);
- neuralforecast: the same network and recipe (NHITS, L=96, 3 stacks of an MLP 2 x 256, MSE
  loss, lr 3e-4, 1024 windows a step, validation every 50 steps with early stopping after 8)
  on the seven channels pre-standardized with the train rows, fitted on train + validation
  rows with `val_size` = the validation rows, and scored on every test window with
  `cross_validation(test_size=2880, step_size=1, refit=False)`. Its own learning-rate
  schedule (step decays) is kept. It runs once per `--nf-steps` value, longest last, so the
  table shows how long it takes to reach tsforge's MSE, if it does.

Reported per side: wall seconds from start to result, CPU seconds (os.wait4, which
neighbours on a shared machine do not inflate) and the test MSE / MAE; then the ratio of
wall and CPU times against the first neuralforecast run at or below tsforge's MSE.
Results: benchmarks/results/time_to_result.json (--json PATH to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import result_path, run_timed, write_json

H, L = 96, 96
TRAIN, VAL_END, TEST_END = 8640, 11520, 14400  # ETTh1 borders (rows)


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run `cmd`; its wall and CPU seconds. Exits with its log if it fails."""
    code, wall, cpu = run_timed(cmd, log)
    if code:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    return wall, cpu


def tsforge_side(workdir: Path, quick: bool) -> dict:
    run_dir = workdir / "tsforge_run"
    cmd = [sys.executable, "-m", "tsforge.launch", "experiment=etth1_nhits_h96",
           "trainer.threads=1", f"hydra.run.dir={run_dir}"]  # fmt: skip
    if quick:
        cmd.append("trainer.max_steps=20")
    wall, cpu = timed(cmd, workdir / "tsforge.log")
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    return {"side": "tsforge", "wall_s": wall, "cpu_s": cpu, "mse": test["mse"],
            "mae": test["mae"]}  # fmt: skip


def neuralforecast_side(steps: int, workdir: Path) -> dict:
    out = workdir / f"nf_{steps}.json"
    cmd = [sys.executable, __file__, "--child-nf", str(steps), "--child-out", str(out)]
    wall, cpu = timed(cmd, workdir / f"nf_{steps}.log")
    return {"side": f"neuralforecast ({steps} steps)", "wall_s": wall, "cpu_s": cpu,
            **json.loads(out.read_text())}  # fmt: skip


def run_neuralforecast(max_steps: int, out: Path) -> None:
    """The neuralforecast side, in its own process (started by neuralforecast_side)."""
    import logging
    import warnings

    import numpy as np
    import pandas as pd
    import torch
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MSE
    from neuralforecast.models import NHITS

    from tsforge.data import registry

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)

    (raw,) = registry.download("ETTh1")
    wide = pd.read_csv(raw.path, parse_dates=["date"]).iloc[:TEST_END]
    cols = [c for c in wide.columns if c != "date"]
    values = wide[cols].to_numpy("float64")
    train = values[:TRAIN]
    values = (values - train.mean(0)) / train.std(0)  # the protocol's train-fit scaler
    df = pd.DataFrame({
        "unique_id": pd.Index(cols).repeat(TEST_END),
        "ds": pd.concat([wide["date"]] * len(cols), ignore_index=True),
        "y": values.T.reshape(-1).astype("float32"),
    })  # fmt: skip
    model = NHITS(
        h=H, input_size=L, mlp_units=3 * [[256, 256]], n_pool_kernel_size=[2, 2, 1],
        n_freq_downsample=[4, 2, 1], loss=MSE(), valid_loss=MSE(), learning_rate=3e-4,
        max_steps=max_steps, windows_batch_size=1024, val_check_steps=50,
        early_stop_patience_steps=8, scaler_type="identity", random_seed=0,
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    nf = NeuralForecast(models=[model], freq="h")
    cv = nf.cross_validation(df, n_windows=None, test_size=TEST_END - VAL_END,
                             val_size=VAL_END - TRAIN, step_size=1, refit=False)  # fmt: skip
    err = cv["NHITS"].to_numpy() - cv["y"].to_numpy()
    windows = len(cv) // H
    out.write_text(json.dumps({"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))),
                               "test_windows": windows}))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nf-steps", type=int, nargs="+", default=[800, 1600],
                        help="neuralforecast max_steps to try, in order")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="20 steps each: does it run?")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default: benchmarks/results/)")
    parser.add_argument("--child-nf", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_nf:
        run_neuralforecast(args.child_nf, args.child_out)
        return 0
    try:
        import neuralforecast  # noqa: F401
    except ImportError:
        print("neuralforecast is not installed: pip install neuralforecast", file=sys.stderr)
        return 2
    nf_steps = [20] if args.quick else sorted(args.nf_steps)

    with tempfile.TemporaryDirectory(prefix="time_to_result_") as tmp:
        workdir = Path(tmp)
        load = [list(os.getloadavg())]
        rows = [tsforge_side(workdir, args.quick)]
        print(f"tsforge: MSE {rows[0]['mse']:.4f} in {rows[0]['wall_s']:.0f} s", flush=True)
        for steps in nf_steps:
            rows.append(neuralforecast_side(steps, workdir))
            print(f"{rows[-1]['side']}: MSE {rows[-1]['mse']:.4f} in {rows[-1]['wall_s']:.0f} s",
                  flush=True)  # fmt: skip
        load.append(list(os.getloadavg()))

    ours = rows[0]
    reached = next((r for r in rows[1:] if r["mse"] <= ours["mse"]), None)
    result = {"rows": rows, "load_avg_before_after": load,
              "neuralforecast_reached_tsforge_mse": reached is not None}  # fmt: skip
    if reached:
        result["wall_ratio"] = reached["wall_s"] / ours["wall_s"]
        result["cpu_ratio"] = reached["cpu_s"] / ours["cpu_s"]
    print("| side | test MSE | test MAE | wall s | CPU s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['mse']:.4f} | {r['mae']:.4f} | {r['wall_s']:.0f} | "
              f"{r['cpu_s']:.0f} |")  # fmt: skip
    if reached:
        print(f"neuralforecast needs {result['wall_ratio']:.2f}x the wall time and "
              f"{result['cpu_ratio']:.2f}x the CPU time to reach tsforge's MSE")
    else:
        print("neuralforecast did not reach tsforge's test MSE with the steps tried")
    write_json(result_path("time_to_result", args.json), result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
