"""`tsforge data list | download | prepare`: the built-in dataset registry.

    tsforge data list [--json]                   names, frequencies, splits, files, URLs, SHA-256
    tsforge data download NAME [--dir DIR]       TSFORGE_DATA_DIR first, else fetch into DIR
                                                 (default TSFORGE_CACHE_DIR or ~/.cache/tsforge)
                                                 and check the SHA-256; a mismatch exits 2
    tsforge data prepare NAME [--cache-dir DIR] [--overwrite]
                                                 build (or re-use) the dataset's store; prints
                                                 its path, e.g. for 'tsforge data info'
"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    listing = sub.add_parser("list", help="the built-in datasets, their URLs and SHA-256")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_list)

    fetch = sub.add_parser(
        "download", help="fetch a built-in dataset's files and verify their SHA-256"
    )
    fetch.add_argument("name", help="a name from 'tsforge data list', e.g. ETTh1 or M4-Hourly")
    fetch.add_argument(
        "--dir", default=None,
        help="where to download (default: TSFORGE_CACHE_DIR, else ~/.cache/tsforge)",
    )  # fmt: skip
    fetch.set_defaults(handler=_download)

    prepare = sub.add_parser("prepare", help="build a built-in dataset's store; print its path")
    prepare.add_argument("name", help="a name from 'tsforge data list'")
    prepare.add_argument("--cache-dir", default=None, help="downloads and stores go here")
    prepare.add_argument("--overwrite", action="store_true", help="rebuild the store")
    prepare.set_defaults(handler=_prepare)


def _list(args) -> int:
    from tsforge.data.registry import table

    rows = table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = {"name": "NAME", "freq": "FREQ", "split": "SPLIT", "file": "FILE",
              "sha256": "SHA-256", "url": "URL"}  # fmt: skip
    shown = [
        {**row, "sha256": row["sha256"] or ("-" if row["file"] == "-" else "(none: unverified)")}
        for row in rows
    ]
    widths = {k: max(len(str(r[k])) for r in [header, *shown]) for k in header}
    for r in [header, *shown]:
        print("  ".join(f"{str(r[k]):<{widths[k]}}" for k in header).rstrip())
    return 0


def _download(args) -> int:
    from tsforge.data import registry

    entry = registry.get(args.name)
    if entry.kind == "synthetic":
        print(f"{entry.name} is generated locally: nothing to download "
              f"(build it with 'tsforge data prepare {entry.name}')")  # fmt: skip
        return 0
    for f in registry.download(entry.name, args.dir):
        state = "verified" if f.verified else "UNVERIFIED"
        print(f"{f.name}  {f.path}  sha256={f.sha256}  {state} ({f.origin})")
    return 0


def _prepare(args) -> int:
    from tsforge.data.registry import prepare

    print(prepare(args.name, cache_dir=args.cache_dir, overwrite=args.overwrite).path)
    return 0
