"""The `tsforge` command.

    tsforge data ingest SRC --out STORE [options]
    tsforge data info STORE [--json]
    tsforge data list | download NAME [--dir DIR]
    tsforge evaluate RUN_DIR [--split test|val] [--checkpoint best|latest] [--json]
    tsforge evaluate RUN_DIR --data NAME_OR_STORE --horizon H [--season M] [--json] | --suite
    tsforge predict RUN_DIR --input SRC_OR_STORE --output OUT.parquet|OUT.csv
    tsforge score FORECASTS --actuals FILE --history STORE_OR_FILE --season M [--json]
    tsforge runs list|compare DIR...
    tsforge tune SEARCH [overrides] [--study DIR] [--trials N] [--parallel N] [--cpu-minutes M]
    tsforge jobs status|logs|cancel RUN_DIR
    tsforge --version

Every subcommand module exposes `add_parser(subparsers)`; its handler returns an exit code.
`UserError` becomes one line on stderr and exit code 2; a stop signal becomes exit code 130
(see `interrupt.py`); an `OSError` (a full disk, a read-only folder: the machine, not the
input) becomes one line naming its path and exit code 1; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tsforge import __version__
from tsforge.cli import interrupt
from tsforge.errors import EXIT_FAILURE, EXIT_USAGE, UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2), like every other bad input."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from tsforge.cli import data, evaluate, jobs, predict, runs, score, tune

    parser = _Parser(prog="tsforge", description="Train forecasting models at scale.")
    parser.add_argument("--version", action="version", version=f"tsforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (data, evaluate, predict, score, runs, jobs, tune):
        command.add_parser(sub)
    return parser


def _not_a_stray_future(record: logging.LogRecord) -> bool:
    """asyncio's "Future exception was never retrieved" records are dropped: zarr writes a
    store's chunks from several futures at once, and when the disk fills, the first failure is
    the one line below while the others, never awaited, would print their tracebacks as they
    are collected. asyncio's other messages pass."""
    return "exception was never retrieved" not in str(record.msg)


def main(argv: list[str] | None = None) -> int:
    asyncio_log = logging.getLogger("asyncio")
    if _not_a_stray_future not in asyncio_log.filters:
        asyncio_log.addFilter(_not_a_stray_future)
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if rest:  # tune's overrides may come between its flags; nothing else takes more words
            flags = [w for w in rest if w.startswith("-")]
            if getattr(args, "command", None) != "tune" or flags:
                parser.error(f"unrecognized arguments: {' '.join(flags or rest)}")
            args.overrides = [*args.overrides, *rest]
        return int(args.handler(args) or 0)
    except UserError as err:
        _error(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tsforge: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if interrupt.received():
            # The stop surfaced as another error from inside C code; the clean-up has run.
            print("tsforge: interrupted", file=sys.stderr)
            return 130
        if not isinstance(err, OSError):
            raise
        where = f"{err.filename}: " if err.filename else ""
        _error(f"{where}{err.strerror or err}")
        return EXIT_FAILURE


def _error(message: str) -> None:
    """One line on stderr, whatever the message quotes from the input: line breaks become
    spaces, and control characters (a terminal's escape sequences) are shown escaped."""
    line = " ".join(message.split())
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    print(f"tsforge: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
