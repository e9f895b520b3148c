"""`tsforge data ...`: build, inspect and fetch datasets.

    tsforge data ingest SRC --out STORE [--format long|wide|rows] [--on-gap ...] [--on-nan ...]
    tsforge data info STORE [--json]
    tsforge data list
    tsforge data download NAME [--dir DIR]
"""

from __future__ import annotations

from tsforge.cli import print_record


def add_parser(sub) -> None:
    from tsforge.cli import datasets, ingest

    parser = sub.add_parser("data", help="build, inspect and fetch datasets")
    dsub = parser.add_subparsers(dest="data_command", required=True, parser_class=type(parser))
    ingest.add_parser(dsub)
    info = dsub.add_parser("info", help="a store's metadata")
    info.add_argument("store", help="path of a Zarr store made by 'tsforge data ingest'")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(handler=_info)
    datasets.add_parser(dsub)


def _info(args) -> int:
    from tsforge.data.store import Store

    info = Store(args.store).info()
    print_record(info, args.json)
    return 0
