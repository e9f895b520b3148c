"""Hostile input to the commands that read runs back: `tsforge runs list|compare` and
`tsforge evaluate`, on run directories whose files are not what tsforge wrote.

    python -m pytest tests/hostile/test_runs.py

`runs list` skips a run it cannot read, with one warning naming the file, and lists the rest;
`evaluate` stops with exit code 2 naming the file. A YAML tag that would build a Python object
is never obeyed (a file it would create must not appear).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.hostile.harness import Case, check

pytestmark = pytest.mark.integration

PYTHON_TAG = b"data: !!python/object/apply:os.system ['touch pwned']\n"


def second_run(file: str, data: bytes):
    """A copy of the seed run as run2/, with `file` in it replaced by `data`."""

    def prepare(ws: Path) -> None:
        shutil.copytree(ws / "run", ws / "run2")
        (ws / "run2" / file).write_bytes(data)

    return prepare


def replace(path: str, data: bytes | None):
    """`path` in the workspace replaced by `data`, or removed when None."""

    def prepare(ws: Path) -> None:
        target = ws / path
        if data is not None:
            target.write_bytes(data)
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return prepare


def config_edit(old: str, new: str):
    def prepare(ws: Path) -> None:
        path = ws / "run" / "config.yaml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    return prepare


SKIPPED = r"warning: skipped .*run2: .*run2/{}"
LIST = ["runs", "list", "."]
EVALUATE = ["evaluate", "run"]
CASES = [
    Case("list-skips-a-yaml-syntax-error", LIST, 0, SKIPPED.format(r"config\.yaml"),
         prepare=second_run("config.yaml", b"model: {name: [nhits\n")),
    Case("list-skips-a-python-tag", LIST, 0, SKIPPED.format(r"config\.yaml"),
         prepare=second_run("config.yaml", PYTHON_TAG)),
    Case("list-skips-a-config-that-is-a-list", LIST, 0, SKIPPED.format(r"config\.yaml"),
         prepare=second_run("config.yaml", b"- model\n- data\n")),
    Case("list-skips-binary-config", LIST, 0, SKIPPED.format(r"config\.yaml"),
         prepare=second_run("config.yaml", b"\x00\xff\xfe\x80" * 64)),
    Case("list-skips-corrupt-metrics", LIST, 0, SKIPPED.format(r"metrics\.json"),
         prepare=second_run("metrics.json", b'{"test": {"mse": 0.')),
    Case("list-skips-metrics-that-are-a-list", LIST, 0, SKIPPED.format(r"metrics\.json"),
         prepare=second_run("metrics.json", b"[1, 2, 3]")),
    Case("list-skips-corrupt-meta", LIST, 0, SKIPPED.format(r"meta\.json"),
         prepare=second_run("meta.json", b"{{{")),
    Case("list-survives-garbage-metrics-jsonl", LIST, 0,
         prepare=second_run("metrics.jsonl", b'{"step": "x"}\n\xff\n[1]\n{"step": 3')),
    Case("compare-skips-corrupt-jobs-json", ["runs", "compare", "run", "run2"], 0,
         SKIPPED.format(r"metrics\.json"), prepare=second_run("metrics.json", b"nan nan")),
    Case("list-when-every-run-is-corrupt", LIST, 2,
         r"no run could be read: skipped run: run/config\.yaml is not a readable config",
         prepare=replace("run/config.yaml", b"{")),
    Case("list-a-file", ["runs", "list", "data.csv"], 2, r"data\.csv is not a folder"),
    Case("list-a-folder-without-runs", ["runs", "list", "store.zarr"], 2, r"no run directory"),
    Case("evaluate-yaml-syntax-error", EVALUATE, 2, r"run/config\.yaml is not a readable config",
         prepare=replace("run/config.yaml", b"data: [\n")),
    Case("evaluate-python-tag", EVALUATE, 2, r"run/config\.yaml is not a readable config",
         prepare=replace("run/config.yaml", PYTHON_TAG)),
    Case("evaluate-config-a-list", EVALUATE, 2, r"run/config\.yaml is not a mapping",
         prepare=replace("run/config.yaml", b"- 1\n")),
    Case("evaluate-config-empty", EVALUATE, 2, r"run/config\.yaml: model\.name None",
         prepare=replace("run/config.yaml", b"")),
    Case("evaluate-unknown-model", EVALUATE, 2, r"config\.yaml: model\.name 'nosuch' is not one",
         prepare=config_edit("name: nhits", "name: nosuch")),
    Case("evaluate-horizon-not-a-number", EVALUATE, 2,
         r"config\.yaml: data\.horizon: Value 'twelve'",
         prepare=config_edit("horizon: 12", "horizon: twelve")),
    Case("evaluate-store-gone", EVALUATE, 2, r"store\.zarr",
         prepare=replace("store.zarr", None)),
    Case("evaluate-without-checkpoints", EVALUATE, 2, r"has no checkpoint",
         prepare=replace("run/checkpoints", None)),
    Case("evaluate-a-store", ["evaluate", "store.zarr"], 2, r"not a tsforge run directory"),
    Case("evaluate-nothing", ["evaluate", "nothing"], 2, r"does not exist"),
    Case("evaluate-bad-split", ["evaluate", "run", "--split", "all"], 2, r"invalid choice"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_runs(case, workspace):
    check(case, workspace)
