"""`tsforge evaluate`: a trained run's metrics on a split, beside the seasonal-naive baseline.

    tsforge evaluate runs/mine                      # best checkpoint, test split, tables
    tsforge evaluate runs/mine --split val --checkpoint latest
    tsforge evaluate runs/mine --json               # overall and per-step metrics as JSON
    tsforge evaluate runs/mine --data ETTh1 --horizon 96 [--json]   # zero-shot, other data
    tsforge evaluate runs/mine --data my.zarr --horizon 24 --season 24
    tsforge evaluate runs/mine --suite [--json]     # the zero-shot suite, GIFT-Eval's way

Every window of the split is evaluated; the overall numbers of the test split are the `test`
block of the run's metrics.json. The per-step table gives MAE and MSE at each horizon step
h = 1..H for the model and the baseline. See `tsforge.runs.evaluate`; `--data` and `--suite`
score the model on data it was not trained on, under that data's protocol
(`tsforge.runs.zeroshot`), and write nothing into the run directory.
"""

from __future__ import annotations

import json
import math


def add_parser(sub) -> None:
    from tsforge.train import CHECKPOINTS

    p = sub.add_parser(
        "evaluate",
        help="a trained run's metrics on a split, beside the seasonal-naive baseline",
        description="Evaluate a run's best (else latest) checkpoint on every window of a split.",
    )
    p.add_argument("run_dir", help="a run directory (hydra.run.dir of python -m tsforge.launch)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="default: test")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                   help="best (default; latest if the run has no best) or latest")
    p.add_argument("--data", metavar="NAME_OR_STORE", default=None,
                   help="zero-shot: score the model on the test split of this registry "
                   "dataset (tsforge data list) or store, under its own protocol")
    p.add_argument("--horizon", type=_positive_int, default=None, metavar="H",
                   help="with --data: the horizon to forecast (the model must take it)")
    p.add_argument("--season", type=_positive_int, default=None, metavar="M",
                   help="with --data STORE: the seasonal period, if the store records none")
    p.add_argument("--suite", action="store_true",
                   help="zero-shot on ETTh1, ETTh2, ETTm1, Exchange (H=96), ILI (H=24) and "
                   "M4 Hourly (H=48), relative to seasonal naive, geometric means")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=_evaluate)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _evaluate(args) -> int:
    from tsforge.errors import UserError

    if args.suite and args.data is not None:
        raise UserError("evaluate: --suite and --data exclude each other: give one")
    if args.data is None and (args.horizon is not None or args.season is not None):
        raise UserError("evaluate: --horizon and --season go with --data NAME_OR_STORE")
    if (args.suite or args.data is not None) and args.split != "test":
        raise UserError("evaluate: --data and --suite score the test split: drop --split")
    if args.suite:
        from tsforge.runs.zeroshot import evaluate_suite

        report = evaluate_suite(args.run_dir, checkpoint=args.checkpoint)
        print(json.dumps(_json_safe(report), indent=2) if args.json else format_suite(report))
        return 0
    if args.data is not None:
        if args.horizon is None:
            raise UserError("evaluate: --data needs --horizon H (the steps to forecast)")
        from tsforge.runs.zeroshot import evaluate_zero_shot

        report = evaluate_zero_shot(args.run_dir, args.data, args.horizon, season=args.season,
                                    checkpoint=args.checkpoint)  # fmt: skip
    else:
        from tsforge.runs.evaluate import evaluate_run
        from tsforge.runs.load import load_run

        report = evaluate_run(load_run(args.run_dir, args.checkpoint), args.split)
    if args.json:
        print(json.dumps(_json_safe(report), indent=2))
    else:
        print(format_report(report))
    return 0


def _json_safe(obj):
    """NaN and infinities are not JSON: they become null."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_report(report: dict) -> str:
    """The overall table and the per-horizon-step table of an `evaluate_run` report."""
    name, model, naive = report["model_name"], report["model"], report["seasonal_naive"]
    where = f"{report['split']} split"
    if "data" in report:  # zero-shot
        where = (f"zero-shot on {report['data']} ({where}, input_size {report['input_size']}, "
                 f"horizon {report['horizon']}, season {report['season']}, metrics on "
                 f"{report['metrics_on']} values)")  # fmt: skip
    lines = [
        f"{report['run_dir']}: {name}, {report['checkpoint']} checkpoint (step "
        f"{report['step']}), {where}, {report['windows']:,} windows",
        "",
    ]
    keys = list(model) + [k for k in naive if k not in model]
    width = max(len(name), len("seasonal_naive"), 10)
    lines.append(f"{'metric':<12}  {name:>{width}}  {'seasonal_naive':>{width}}")
    for k in keys:
        lines.append(f"{k:<12}  {_num(model.get(k)):>{width}}  {_num(naive.get(k)):>{width}}")
    steps = report["per_step"]
    m, b = steps["model"], steps["seasonal_naive"]
    lines += ["", "per horizon step",
              f"{'h':>4}  {'mae':>12}  {'naive mae':>12}  {'mse':>12}  {'naive mse':>12}"]
    for h in range(len(m["mae"])):
        lines.append(f"{h + 1:>4}  {_num(m['mae'][h]):>12}  {_num(b['mae'][h]):>12}  "
                     f"{_num(m['mse'][h]):>12}  {_num(b['mse'][h]):>12}")
    return "\n".join(lines)


def format_suite(report: dict) -> str:
    """One row per suite dataset: MASE and CRPS of the model and the seasonal naive, their
    ratios, and the geometric means of the ratios (GIFT-Eval's aggregation)."""
    lines = [f"{report['run_dir']}: zero-shot suite, {report['evaluated']} evaluated, "
             f"{report['skipped']} skipped", "",
             f"{'data':<10} {'H':>4}  {'mase':>8} {'naive':>8} {'rel':>6}  "
             f"{'crps':>8} {'naive':>8} {'rel':>6}"]  # fmt: skip
    for row in report["datasets"]:
        if "skipped" in row:
            lines.append(f"{row['data']:<10} {row['horizon']:>4}  skipped: {row['skipped']}")
            continue
        t, b, r = row["test"], row["baseline"]["seasonal_naive"], row["relative"]
        lines.append(f"{row['data']:<10} {row['horizon']:>4}  {_num(t['mase']):>8} "
                     f"{_num(b['mase']):>8} {_num(r['mase']):>6}  {_num(t['crps']):>8} "
                     f"{_num(b['crps']):>8} {_num(r['crps']):>6}")  # fmt: skip
    g = report["geomean"]
    lines += ["", f"geometric mean relative to seasonal naive: MASE {_num(g['mase'])}, "
              f"CRPS {_num(g['crps'])}"]  # fmt: skip
    return "\n".join(lines)
