"""Command-line entry points (`tsforge ...`)."""

from __future__ import annotations

import json
from typing import Any


def column_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of column names (argparse `type=`)."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def print_record(record: dict[str, Any], as_json: bool) -> None:
    """A flat record as indented JSON, or as aligned `key  value` lines."""
    if as_json:
        print(json.dumps(record, indent=2))
        return
    width = max(map(len, record))
    for key, value in record.items():
        print(f"{key:<{width}}  {value}")
