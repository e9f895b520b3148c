"""`tsforge data ingest`: CSV or Parquet into a chunked, validated Zarr store.

    tsforge data ingest data.csv --out data.zarr                       # long: unique_id, ds, y
    tsforge data ingest data.csv --out data.zarr --freq h --on-gap nan --hist-exog price
    tsforge data ingest ETTh1.csv --out etth1.zarr --format wide --time-col date --split ett_hour
    tsforge data ingest Hourly-train.csv --out m4h.zarr --format rows --id-col V1 --split holdout:48
    tsforge data ingest rows.csv --out r.zarr --format rows --id-col id --freq D --start 2020-01-01
    tsforge data ingest data.parquet --out data.zarr --json

Bad input exits with code 2 and one line naming the file, the row or series, and the fix;
nothing is left at --out. A full disk or a read-only folder exits 1 with one line naming
--out. `--overwrite` replaces only a store, atomically once the new one is complete; never the
current folder, an input, a folder that is not a store, or a link. See
`tsforge.data.ingest.ingest` for the meaning of each option.
"""

from __future__ import annotations

from tsforge.cli import column_names as _names
from tsforge.cli import print_record
from tsforge.cli.interrupt import stop_on_signals


def add_parser(sub) -> None:
    from tsforge.data.ingest import FORMATS, ON_GAP, ON_NAN
    from tsforge.data.splits import PRESETS

    p = sub.add_parser(
        "ingest",
        help="CSV or Parquet into a chunked Zarr store",
        description="Read long (unique_id, ds, y, covariates...), wide (a time column and one "
        "column per channel) or rows (an id column, then one series per row, its values in time "
        "order) input, validate it, and write a chunked Zarr store.",
        epilog="rows: one row per series, as M4 and Monash files ship: 'id,V2,V3,V4' then "
        "'a,1.5,2.0,2.5' and 'b,7.0,,' (rows padded with empty cells: a series ends at its last "
        "value; an empty cell before it is missing, see --on-nan; a row without values is "
        "dropped as short). Time is 0, 1, 2, ... (step --freq, an integer, default 1), or with "
        "--start T every series starts at T and steps by --freq (h, D, MS, ...). --time-col, "
        "--target, --hist-exog, --futr-exog, --static and --series-id do not apply to rows. "
        "Example: tsforge data ingest Hourly-train.csv --out m4h.zarr --format rows --id-col V1",
    )
    p.add_argument("src", help=".csv, .csv.gz or .parquet file, or a folder of .parquet files")
    p.add_argument("--out", required=True, help="path of the store to create")
    p.add_argument(
        "--format",
        default="long",
        choices=FORMATS,
        help="long: one row per (series, time); wide: one column per channel; rows: one row "
        "per series (an id, then its values in time order)",
    )
    p.add_argument("--id-col", default=None,
                   help="series id column (default: unique_id in long format, the first column "
                   "in rows format)")  # fmt: skip
    p.add_argument("--time-col", default=None,
                   help="time column, datetimes or integers (default: ds; not rows)")  # fmt: skip
    p.add_argument("--start", default=None,
                   help="rows format: the date/time every series starts at (then --freq is "
                   "needed), e.g. 2020-01-01; without it time is 0, 1, 2, ...")  # fmt: skip
    p.add_argument(
        "--time-format",
        default=None,
        help="strptime format of the timestamps, e.g. %%d.%%m.%%Y "
        "(default: detected from the first row)",
    )
    p.add_argument(
        "--target",
        type=_names,
        default=None,
        help="target columns, comma-separated (default: y in long format, every "
        "column without another role in wide format)",
    )
    p.add_argument(
        "--hist-exog",
        type=_names,
        default=(),
        help="covariates known up to the forecast start only",
    )
    p.add_argument(
        "--futr-exog",
        type=_names,
        default=(),
        help="covariates known over the horizon too (calendar, prices, ...)",
    )
    p.add_argument(
        "--static", type=_names, default=(), help="numeric columns with one value per series"
    )
    p.add_argument(
        "--ignore-cols",
        type=_names,
        default=(),
        help="columns to leave out (any other column without a role is refused)",
    )
    p.add_argument(
        "--series-id",
        default=None,
        help="id of the one series of wide input (default: the file name)",
    )
    p.add_argument(
        "--freq",
        default=None,
        help="h, 15min, D, W, MS, ME, QS, QE, YS, YE, ... or an integer step for "
        "integer time (default: inferred; every series must agree; rows format: 1, or "
        "required with --start)",
    )
    p.add_argument(
        "--on-gap",
        default="error",
        choices=ON_GAP,
        help="missing steps: refuse, insert NaN rows, or repeat the previous row",
    )
    p.add_argument(
        "--on-nan",
        default="error",
        choices=ON_NAN,
        help="missing or non-finite values: refuse, store NaN, or drop the row",
    )
    p.add_argument(
        "--min-length", type=int, default=1, help="drop (and count) series with fewer input rows"
    )
    p.add_argument(
        "--split",
        default=None,
        help=f"split preset ({', '.join(PRESETS)}), holdout:H (the last H steps of each series "
        "for validation, no test rows) or a JSON spec such as "
        '\'{"kind": "holdout", "horizon": 48}\' (without it: no validation, unless the launch '
        "chooses one with data.split)",
    )
    p.add_argument("--codec", default="lz4", help="Blosc compressor: lz4|lz4hc|zstd|zlib|blosclz")
    p.add_argument("--clevel", type=int, default=5, help="compression level 0-9")
    p.add_argument("--shuffle", default="shuffle", help="noshuffle|shuffle|bitshuffle")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per chunk of values (default: about 512 KiB per chunk)",
    )
    p.add_argument(
        "--piece-rows",
        type=int,
        default=1_000_000,
        help="input rows held in memory at once, values in rows format (memory against speed)",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store at --out once the new one is complete "
                   "(only a store: never another folder, an input or a link)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_run)


def _run(args) -> int:
    # A polite kill (a scheduler's time limit, `kill PID`) cleans up like Ctrl-C does:
    # temporary files and the half-written store are removed on the way out.
    with stop_on_signals():
        summary = _ingest(args)
    info = summary.to_dict()
    print_record(info, args.json)
    return 0


def _ingest(args):
    from tsforge.data.ingest import ingest
    from tsforge.data.store import Codec

    return ingest(
        args.src,
        args.out,
        format=args.format,
        id_col=args.id_col,
        time_col=args.time_col,
        target=list(args.target) if args.target is not None else None,
        hist_exog=args.hist_exog,
        futr_exog=args.futr_exog,
        static=args.static,
        freq=args.freq,
        on_gap=args.on_gap,
        on_nan=args.on_nan,
        min_length=args.min_length,
        split=args.split,
        codec=Codec(cname=args.codec, clevel=args.clevel, shuffle=args.shuffle),
        chunk_rows=args.chunk_rows,
        overwrite=args.overwrite,
        series_id=args.series_id,
        piece_rows=args.piece_rows,
        ignore_cols=args.ignore_cols,
        time_format=args.time_format,
        start=args.start,
    )
