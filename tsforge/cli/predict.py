"""`tsforge predict`: a trained run's forecasts of the next H steps of every series.

    tsforge predict runs/mine --input new.csv --output forecasts.parquet
    tsforge predict runs/mine --input data.zarr --output forecasts.csv --checkpoint latest
    tsforge predict runs/mine --input ETTh1.csv --format wide --time-col date --output f.csv
    tsforge predict runs/mine --input new.csv --output f.csv --skip-short   # forecast the rest

The input is a store, or a CSV / Parquet file laid out like the run's data (the training
store's column roles and frequency are applied; it is ingested to a temporary store that is
deleted afterwards). Forecasts start after each series' last target value; a model that reads
future-known covariates needs the H rows after it, with the covariates filled and the target
empty. Input at another frequency than the run's is refused (`--freq` names the input's, else
it is inferred).

Every series is forecast or the command says why not: a series with fewer rows than the
model's input_size is left-padded and masked, down to the run's `data.min_input_size` rows
(1 when the run set none). A series shorter than that, or without a target value, makes the
command exit 2 naming them, unless `--skip-short` asks to forecast the others (the left-out
ones are then listed).

The output is long, in Nixtla's column names (`tsforge.forecasts`): `unique_id, ds, <model>`
(the point forecast) and, for a probabilistic model, `<model>-lo-<level>`, `<model>-median`,
`<model>-hi-<level>` (quantile 0.1 is `-lo-80`, 0.9 `-hi-80`). It is written to a temporary
file in --output's folder (which must exist) and renamed, so a failure leaves no output;
`--overwrite` replaces a file, never a folder, a link or the input. See
`tsforge.runs.predict`.
"""

from __future__ import annotations

import json

from tsforge.cli import column_names as _names
from tsforge.cli.interrupt import stop_on_signals


def _levels(text: str) -> tuple[float, ...]:
    import argparse

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of levels such as 0.1,0.5,0.9"
        ) from None


def add_parser(sub) -> None:
    from tsforge.data.ingest import FORMATS, ON_GAP
    from tsforge.train import CHECKPOINTS

    p = sub.add_parser(
        "predict",
        help="forecasts of a trained run past the end of every series",
        description="Forecast the next H steps after the last target of every input series.",
    )
    p.add_argument("run_dir", help="a run directory (hydra.run.dir of python -m tsforge.launch)")
    p.add_argument("--input", required=True,
                   help="a store, or a .csv / .parquet file laid out like the run's data")
    p.add_argument("--output", required=True,
                   help="a .parquet or .csv file to write, in an existing folder")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                   help="best (default; latest if the run has no best) or latest")
    p.add_argument("--quantiles", type=_levels, default=None,
                   help="levels to write for a probabilistic model, e.g. 0.05,0.5,0.95 "
                   "(default: the loss's own)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output file (never a folder or an input)")
    p.add_argument("--skip-short", action="store_true",
                   help="forecast the other series when some are shorter than the run's "
                   "data.min_input_size or have no target value (default: refuse, naming them)")
    ingest = p.add_argument_group("CSV / Parquet input (as in 'tsforge data ingest')")
    ingest.add_argument("--format", default="long", choices=FORMATS)
    ingest.add_argument("--id-col", default="unique_id", help="series id column (long format)")
    ingest.add_argument("--time-col", default="ds", help="time column")
    ingest.add_argument("--on-gap", default="error", choices=ON_GAP,
                        help="what a missing step does: refuse it, or fill it (nan, ffill)")
    ingest.add_argument("--ignore-cols", type=_names, default=(), help="columns to leave out")
    ingest.add_argument("--freq", default=None,
                        help="the input's frequency (default: inferred); it must be the run's")
    ingest.add_argument("--time-format", default=None,
                        help="strptime format of the timestamps (default: detected)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_predict)


def _predict(args) -> int:
    from pathlib import Path

    from tsforge.data.outputs import FORECAST_SUFFIXES, check_file_target

    # A bad --output is refused before torch and the model load (seconds); predict checks it
    # again, with the training store among the inputs.
    check_file_target(Path(args.output), flag="--output", suffixes=FORECAST_SUFFIXES,
                      overwrite=args.overwrite, inputs=[args.input])  # fmt: skip
    from tsforge.runs.load import load_run
    from tsforge.runs.predict import predict

    # A polite kill (a scheduler's time limit, `kill PID`) cleans up like Ctrl-C does: the
    # temporary store and the half-written output are removed on the way out.
    with stop_on_signals():
        summary = predict(
            load_run(args.run_dir, args.checkpoint), args.input, args.output,
            quantiles=args.quantiles, overwrite=args.overwrite, skip_short=args.skip_short,
            format=args.format,
            id_col=args.id_col, time_col=args.time_col, on_gap=args.on_gap,
            ignore_cols=args.ignore_cols, freq=args.freq, time_format=args.time_format,
        )  # fmt: skip
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    padded = (f" ({summary.n_padded:,} shorter than input_size={summary.input_size}, "
              "left-padded and masked)" if summary.n_padded else "")  # fmt: skip
    print(f"forecast {summary.n_forecast:,} of {summary.n_series:,} series{padded}: wrote "
          f"{summary.rows:,} rows ({summary.horizon} steps each) to {summary.output}: "
          f"{', '.join(summary.columns)}")  # fmt: skip
    fewer = f"have fewer than data.min_input_size={summary.min_rows} rows"
    for ids, why in ((summary.skipped_short, fewer),
                     (summary.skipped_empty, "have no target value")):
        if ids:
            # repr: quoted, with any control character of a hostile id escaped
            shown = ", ".join(map(repr, ids[:5])) + (", ..." if len(ids) > 5 else "")
            print(f"skipped {len(ids):,} series that {why} (--skip-short): {shown}")
    return 0
