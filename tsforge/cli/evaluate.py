"""`tsforge evaluate`: a trained run's metrics on a split, beside the seasonal-naive baseline.

    tsforge evaluate runs/mine                      # best checkpoint, test split, tables
    tsforge evaluate runs/mine --split val --checkpoint latest
    tsforge evaluate runs/mine --json               # overall and per-step metrics as JSON

Every window of the split is evaluated; the overall numbers of the test split are the `test`
block of the run's metrics.json. The per-step table gives MAE and MSE at each horizon step
h = 1..H for the model and the baseline. See `tsforge.runs.evaluate`.
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
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
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
    lines = [
        f"{report['run_dir']}: {name}, {report['checkpoint']} checkpoint (step "
        f"{report['step']}), {report['split']} split, {report['windows']:,} windows",
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
