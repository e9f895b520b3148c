"""`tsforge score`: forecasts scored as the M4 competition scores them, beside Naive1,
seasonal naive and Naive2 on the same series.

    tsforge score forecasts.parquet --actuals test.csv --history train.csv --season 24
    tsforge score runs/mine --actuals test.csv --history train.zarr --json
    tsforge score runs/m4 --actuals Hourly-test.csv --actuals-format rows --history m4h.zarr

See `tsforge.runs.score` for the inputs and the figures.
"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    from tsforge.train import CHECKPOINTS

    p = sub.add_parser(
        "score",
        help="sMAPE, MASE, OWA (M4's definitions), MAE, MSE, CRPS of forecasts, beside "
        "Naive1, seasonal naive and Naive2",
        description="Score forecasts (a tsforge predict output, or a run directory whose "
        "model forecasts the steps after each --history series) against actual values.",
    )
    p.add_argument("forecasts", metavar="FORECASTS",
                   help="long CSV / Parquet: unique_id, ds, <model>[, <model>-lo-<p>, "
                   "<model>-median, <model>-hi-<p>]; or a run directory")
    p.add_argument("--actuals", required=True, metavar="FILE",
                   help="long CSV / Parquet: unique_id, ds, y at every forecast step (or "
                   "one row per series with --actuals-format rows)")
    p.add_argument("--actuals-format", choices=("long", "rows"), default="long",
                   help="rows: an id column, then the values of each forecast step in order, "
                   "as M4's test files hold them")
    p.add_argument("--history", required=True, metavar="STORE_OR_FILE",
                   help="the in-sample series: a tsforge store, or long CSV / Parquet "
                   "unique_id, ds, y")
    p.add_argument("--season", type=int, default=None, metavar="M",
                   help="seasonal period for MASE and the baselines (M4: 24 hourly, 12 "
                   "monthly); default for a run directory: its data.season")
    p.add_argument("--model", default=None, help="the forecast column to score, when the "
                   "file holds several")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                   help="for a run directory: best (default; latest if none) or latest")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=_score)


def _score(args) -> int:
    from tsforge.cli.evaluate import _json_safe
    from tsforge.runs.score import format_report, score

    report = score(args.forecasts, actuals=args.actuals, history=args.history,
                   season=args.season, model=args.model, checkpoint=args.checkpoint,
                   actuals_format=args.actuals_format)  # fmt: skip
    print(json.dumps(_json_safe(report), indent=2) if args.json else format_report(report))
    return 0
