"""Every `--option` that a user-facing message names exists in the `tsforge` command line.

A hint such as "pass --on-gap nan" is only help if the option exists, so the messages of
`UserError(...)` (and argparse's `ArgumentTypeError(...)`) everywhere in tsforge/ are read
from the source, with the option names passed to the helpers that build such messages
(`_check_choice("--format", ...)`), and each `--option` they name is looked up in the
argparse tree of `tsforge.cli.main.build_parser()` or among the flags of
`python -m tsforge.launch` (Hydra's own parser, e.g. `--config-dir`). Config-key hints
(`data.split=...`) are checked by test_config_hints.py.

    python -m pytest tests/unit/test_hints.py
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from hydra._internal.utils import get_args_parser

import tsforge
from tsforge.cli.main import build_parser

SOURCE = Path(tsforge.__file__).parent
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MESSAGES = {"UserError", "ArgumentTypeError"}


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _texts(node: ast.AST) -> list[str]:
    """The literal text of every string (f-string parts included) under `node`."""
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]  # fmt: skip


def hinted_options() -> dict[str, list[str]]:
    """option -> places (file:line) of the messages that name it."""
    found: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _name(node.func) == "add_argument":
                continue
            if _name(node.func) in MESSAGES:
                texts = _texts(node)
            else:  # a flag handed to a helper that puts it in a message: "--format"
                # (a direct argument only: a list such as ["git", "--porcelain"] is a command)
                args = [*node.args, *(k.value for k in node.keywords)]
                texts = [a.value for a in args if isinstance(a, ast.Constant)
                         and isinstance(a.value, str) and OPTION.fullmatch(a.value)]  # fmt: skip
            for text in texts:
                for option in OPTION.findall(text):
                    where = f"{path.relative_to(SOURCE.parent)}:{node.lineno}"
                    found.setdefault(option, []).append(where)
    return found


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of the parser and of all its subcommands."""
    options: set[str] = set()
    for action in parser._actions:
        options.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= parser_options(sub)
    return options


def test_the_scan_finds_the_hints_it_must():
    # The scan itself can fail: it must see a message's option and a helper's flag.
    found = hinted_options()
    assert "--on-nan" in found and "--overwrite" in found and "--format" in found
    assert "--ingest-only-flag" not in found


def test_every_hinted_option_exists():
    known = parser_options(build_parser()) | parser_options(get_args_parser())
    assert {"--out", "--output", "--overwrite", "--help"} <= known
    unknown = {opt: places for opt, places in hinted_options().items() if opt not in known}
    assert not unknown, f"messages name options that tsforge does not have: {unknown}"
