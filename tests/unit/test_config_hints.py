"""Every config key a message names exists: a hint must never send a user to a key that does
not (`group.key` in the text of every `UserError(...)` of the library, checked against the
typed schemas).

    python -m pytest tests/unit/test_config_hints.py
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import tsforge
from tsforge.config.models import model_schema
from tsforge.config.schema import Config
from tsforge.models import MODELS

KEY = re.compile(r"\b(data|optim|loss|trainer|launcher|model)\.([a-z_]+)\b")
SOURCE = Path(tsforge.__file__).parent


def known() -> dict[str, set[str]]:
    keys = {g: {f.name for f in fields(type(getattr(Config(), g)))}
            for g in ("data", "optim", "loss", "trainer", "launcher")}  # fmt: skip
    keys["model"] = {f.name for name in MODELS for f in fields(model_schema(name))}
    return keys


def messages(path: Path):
    """(line, text) of every string inside a `UserError(...)` call, f-string parts included."""
    for call in ast.walk(ast.parse(path.read_text())):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "UserError":
            for node in ast.walk(call):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield node.lineno, node.value


def test_every_config_key_named_in_a_message_exists():
    keys, wrong = known(), []
    for path in sorted(SOURCE.rglob("*.py")):
        for line, text in messages(path):
            for group, key in KEY.findall(text):
                if key not in keys[group]:
                    wrong.append(f"{path.relative_to(SOURCE.parent)}:{line}: {group}.{key}")
    assert not wrong, "messages name config keys that do not exist:\n" + "\n".join(wrong)


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('raise UserError(f"set data.horizn={h} or data.horizon")\n')
    found = [key for _, text in messages(bad) for key in KEY.findall(text)]
    assert found == [("data", "horizn"), ("data", "horizon")]
    assert "horizn" not in known()["data"] and "horizon" in known()["data"]
