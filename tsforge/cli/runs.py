"""`tsforge runs list|compare`: a table of runs, with what differs between their configs.

tsforge runs list runs/                          # every run under runs/
tsforge runs compare runs/sweep_2026-11-27_10-00-00 [--json]
tsforge runs compare runs/a runs/b               # two runs side by side
"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    parser = sub.add_parser("runs", help="tables of runs: configs, steps, results")
    rsub = parser.add_subparsers(dest="runs_command", required=True, parser_class=type(parser))
    for name, helptext in (
        ("list", "every run under the folders, with status and results"),
        ("compare", "runs side by side, with the config keys that differ between them"),
    ):
        p = rsub.add_parser(name, help=helptext)
        p.add_argument("dirs", nargs="+", help="run directories or folders of runs (sweeps)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(handler=_handler, compare=name == "compare")


def _handler(args) -> int:
    from tsforge.runs.table import differing_keys, find_runs, rows, table

    table_rows = rows(find_runs(args.dirs))
    keys = differing_keys(table_rows) if args.compare else []
    if args.json:
        for row in table_rows:
            row["config"] = (
                {k: row["config"].get(k) for k in keys} if args.compare else row["config"]
            )
        print(json.dumps({"differing": keys, "runs": table_rows}, indent=2, default=str))
    else:
        print(table(table_rows, keys))
    return 0
