"""Where a zero-shot model loses to the seasonal naive: its test windows on one dataset, split
into quarters by how well the seasonal naive does there (its MAE over the window's mean |y|),
with the model's MAE over the naive's in each quarter.

    TSFORGE_DATA_DIR=/path/to/data python benchmarks/zeroshot_breakdown.py RUN_DIR M4-Hourly 48
    python benchmarks/zeroshot_breakdown.py benchmarks/out/pretrain/small/run ETTm1 96 --json x.json

The run's model is loaded on the dataset's own protocol as `tsforge evaluate RUN --data NAME
--horizon H` loads it (`runs.zeroshot.protocol`, `runs.load.load_run_on`) and the windows are
those its evaluator scores, with the seasonal naive's forecasts beside the model's (the
evaluator's `observe` hook). Per window: model MAE / naive MAE (on M4 Hourly, one window per
series: the ratio of that series' MASE terms, whose scale cancels). A ratio above 1 in the
first quarter (the naive nearly exact: a pattern that repeats) and below 1 in the last says
the model smooths what repeats. Prints the table; `--json` writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def window_errors(run_dir: str, data: str, horizon: int, checkpoint: str) -> np.ndarray:
    """[W, 3]: per test window, the model's MAE, the seasonal naive's MAE and mean |y|."""
    import torch

    from tsforge.runs.load import load_run_on, saved_run
    from tsforge.runs.zeroshot import protocol
    from tsforge.train import builders

    _, cfg, _, _ = saved_run(run_dir, checkpoint)
    spec = protocol(data, input_size=int(cfg.data.input_size), horizon=horizon,
                    multivariate=bool(cfg.data.multivariate),
                    min_input_size=cfg.data.min_input_size)  # fmt: skip
    run = load_run_on(run_dir, spec, checkpoint)
    loaders = builders.loaders(run.cfg.data, run.cfg.trainer.seed, run.store, run.env,
                               train=False)  # fmt: skip
    evaluator = builders.evaluator(run.cfg, loaders, run.loss, run.env)
    rows: list[tuple[float, float, float]] = []

    def observe(point_BHC, y_BHC, mask_BHC, naive_BHC) -> None:
        ok_BHC = mask_BHC.bool() & torch.isfinite(y_BHC) & torch.isfinite(naive_BHC)
        for ok, p, y, n in zip(ok_BHC, point_BHC, y_BHC, naive_BHC):
            if ok.any():  # a batch's padding windows have no point
                rows.append(((p - y).abs()[ok].mean().item(), (n - y).abs()[ok].mean().item(),
                             y.abs()[ok].mean().item()))  # fmt: skip

    evaluator.evaluate(run.model, "test", with_baseline=True, observe=observe)
    return np.array(rows)


def quarters(errors: np.ndarray) -> list[dict]:
    model, naive, level = errors.T
    ratio = model / np.maximum(naive, 1e-12)
    how_good = naive / np.maximum(level, 1e-12)
    order = np.argsort(how_good, kind="stable")
    return [{"quarter": i + 1, "windows": len(part),
             "naive_mae_over_level": [float(how_good[part].min()), float(how_good[part].max())],
             "median_ratio": float(np.median(ratio[part])), "mean_ratio": float(ratio[part].mean()),
             "model_worse_share": float((ratio[part] > 1).mean())}
            for i, part in enumerate(np.array_split(order, 4))]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("data", help="a registry name (tsforge data list) or a store")
    parser.add_argument("horizon", type=int)
    parser.add_argument("--checkpoint", default="latest", choices=("best", "latest"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from tsforge.errors import UserError

    try:
        errors = window_errors(args.run_dir, args.data, args.horizon, args.checkpoint)
    except UserError as err:
        print(f"zeroshot_breakdown: error: {err}", file=sys.stderr)
        return 2
    ratio = errors[:, 0] / np.maximum(errors[:, 1], 1e-12)
    result = {"run_dir": args.run_dir, "data": args.data, "horizon": args.horizon,
              "windows": len(errors), "median_ratio": float(np.median(ratio)),
              "model_worse_share": float((ratio > 1).mean()), "quarters": quarters(errors)}
    print(f"{args.data} H={args.horizon}: {len(errors)} windows; model MAE / seasonal naive MAE "
          f"median {result['median_ratio']:.3f}, worse on {result['model_worse_share']:.0%}")
    print("quarter  naive MAE / mean|y|   windows  median ratio  mean ratio  model worse")
    for q in result["quarters"]:
        lo, hi = q["naive_mae_over_level"]
        print(f"{q['quarter']:>7}  {lo:8.3f} – {hi:<8.3f}  {q['windows']:>8}  "
              f"{q['median_ratio']:>12.3f}  {q['mean_ratio']:>10.3f}  "
              f"{q['model_worse_share']:>10.0%}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
