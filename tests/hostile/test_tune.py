"""Hostile input to `tsforge tune`: search files, flags, overrides, study folders and study
records that are not what they should be, and a stop signal mid-study.

    python -m pytest tests/hostile/test_tune.py

Each bad input stops before anything is written (no study folder, no database) with one line
naming it; a study folder that holds something else is left as it was; a stop signal leaves
a study that carries on.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.hostile.harness import Case, Interrupt, check

pytestmark = pytest.mark.integration

GOOD = "params: {optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\ntrials: 2\n"
TUNE = ["tune", "s", "--config-dir", "{conf}", "--study", "{study}", "data=store",
        "data.path={store.zarr}", "data.input_size=48", "data.horizon=12",
        "trainer.max_steps=20"]  # fmt: skip


def search(text: str | bytes):
    def prepare(ws: Path) -> None:
        (ws / "conf" / "search").mkdir(parents=True)
        data = text if isinstance(text, bytes) else text.encode()
        (ws / "conf" / "search" / "s.yaml").write_bytes(data)

    return prepare


def study_record(edit):
    """A good search, and a study.json in `study/` changed by `edit` (or raw bytes)."""

    def prepare(ws: Path) -> None:
        search(GOOD)(ws)
        (ws / "study").mkdir()
        record = {"search": "s", "study_name": "s-1", "storage": None, "overrides": [],
                  "config_dirs": [], "created": 0, "space": {}, "search_config": {}}
        data = edit(record) if callable(edit) else edit
        (ws / "study" / "study.json").write_bytes(
            data if isinstance(data, bytes) else json.dumps(data).encode())

    return prepare


def tune(*words: str) -> list[str]:
    return [*TUNE, *words]


STUDY_FILES = ("study", "study/**")
CASES = [
    Case("unknown-search", ["tune", "nosuch"], 2, r"no search named 'nosuch' \(searches: "),
    Case("search-name-a-path", ["tune", "../../etc/passwd"], 2, r"not a search name"),
    Case("no-search-no-study", ["tune"], 2, r"name a search"),
    Case("search-yaml-broken", tune(), 2, r"s\.yaml: not a readable YAML",
         prepare=search("params: {optim.lr: [\n")),
    Case("search-python-tag", tune(), 2, r"s\.yaml: not a readable YAML",
         prepare=search("params: !!python/object/apply:os.system ['touch pwned']\n")),
    Case("search-a-list", tune(), 2, r"a search is a mapping", prepare=search("- 1\n")),
    Case("search-binary", tune(), 2, r"s\.yaml", prepare=search(b"\xff\xfe\x00\x01" * 64)),
    Case("search-range-upside-down", tune(), 2, r"optim\.lr: a float range needs low <= high",
         prepare=search("params: {optim.lr: {type: float, low: 1, high: 0}}\n")),
    Case("search-varies-the-launcher", tune(), 2, r"launcher\.nodes cannot vary",
         prepare=search("params: {launcher.nodes: {type: int, low: 1, high: 4}}\n")),
    Case("search-override-is-a-flag", tune(), 2, r"not a key=value override",
         prepare=search(GOOD + "overrides: ['--config-dir=/']\n")),
    Case("override-unknown-key", tune("optim.lrr=1"), 2, r"optim\.lrr",
         prepare=search(GOOD)),
    Case("override-is-a-sweep", tune("optim.lr=1e-3,1e-2"), 2, r"searches around one",
         prepare=search(GOOD)),
    Case("flag-trials-zero", tune("--trials", "0"), 2, r"trials=0: must be at least 1",
         prepare=search(GOOD)),
    Case("flag-cpu-minutes-nan", tune("--cpu-minutes", "nan"), 2, r"cpu_minutes=nan",
         prepare=search(GOOD)),
    Case("flag-gpu-minutes-negative", tune("--gpu-minutes", "-1"), 2,
         r"gpu_minutes=-1\.0: must be a positive number", prepare=search(GOOD)),
    Case("gpu-budget-for-trials-without-gpus", tune("--gpu-minutes", "30"), 2,
         r"gpu_minutes=30: the trials hold no GPU \(trainer\.device is cpu, or this machine "
         r"has no CUDA device\)", prepare=search(GOOD)),
    Case("flag-misspelt", tune("--trails", "3"), 2, r"unrecognized arguments: --trails \(see",
         prepare=search(GOOD)),
    Case("storage-with-password", tune("--storage", "mysql+pymysql://u:pw@h/db"), 2,
         r"password", prepare=search(GOOD)),
    Case("storage-unreachable", tune("--storage", "mysql+pymysql://127.0.0.1:1/db"), 1,
         r"cannot open the study's database mysql\+pymysql://127\.0\.0\.1:1/db",
         prepare=search(GOOD)),
    Case("storage-not-a-url", tune("--storage", "; rm -rf /"), 2, r"not a database URL",
         prepare=search(GOOD)),
    Case("study-folder-is-a-run", ["tune", "s", "--config-dir", "{conf}", "--study", "{run}"],
         2, r"not an empty folder and holds no study", prepare=search(GOOD)),
    Case("study-folder-is-a-file", ["tune", "s", "--config-dir", "{conf}", "--study",
                                    "{data.csv}"], 2, r"not an empty folder",
         prepare=search(GOOD)),
    Case("study-record-corrupt", ["tune", "--study", "{study}"], 2, r"study\.json",
         prepare=study_record(b"{\"search\": ")),
    Case("study-record-a-list", ["tune", "--study", "{study}"], 2, r"study\.json",
         prepare=study_record(b"[1, 2]")),
    Case("study-record-override-is-a-flag", ["tune", "--study", "{study}"], 2,
         r"study\.json: 'overrides' holds something that is not a key=value override",
         prepare=study_record(lambda r: {**r, "overrides": ["-m"]})),
    Case("study-record-search-config-bad", ["tune", "--study", "{study}"], 2,
         r"study\.json: no params", prepare=study_record(lambda r: r)),
    Case("study-record-storage-has-password", ["tune", "--study", "{study}"], 2, r"password",
         prepare=study_record(lambda r: {**r, "search_config": {"params": {"optim.lr": {
             "type": "float", "low": 0.001, "high": 0.01}}},
             "storage": "mysql+pymysql://u:pw@h/db"})),
    Case("retry-failed-without-a-study", tune("--retry-failed"), 2,
         r"--retry-failed carries on a study: give --study DIR", prepare=search(GOOD)),
    Case("stopped-mid-study", tune("--parallel", "1"), 75, r"tune: stopped by SIGTERM",
         prepare=search(GOOD), interrupt=Interrupt(signal.SIGTERM, r"^trial 0 started"),
         creates=STUDY_FILES, after=lambda ws: _carries_on(ws)),
]  # fmt: skip


def _carries_on(ws: Path) -> None:
    record = json.loads((ws / "study" / "study.json").read_text())
    assert record["search"] == "s" and (ws / "study" / "study.db").is_file()
    assert not (ws / "study" / ".lock").exists()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tune(case, workspace):
    check(case, workspace)


def test_a_study_stopped_before_it_is_recorded_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM while the study is being opened: exit 130, and the folder is as it was (a new
    one removed, an empty one given emptied again), so the same command starts it again."""
    import os

    from tsforge.cli.main import main
    from tsforge.tune import study

    def stopped(record, search, folder, **kw):
        (folder / "study.db").write_bytes(b"")  # as far as a real start gets
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the stop signal did not stop the start")

    def unhandled(signum, frame):
        pytest.fail("SIGTERM reached the default handler: a real start would die here")

    monkeypatch.setattr(study, "open_study", stopped)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        search(GOOD)(tmp_path)
        given = tmp_path / "given"
        given.mkdir()
        for folder in (tmp_path / "new", given):
            argv = ["tune", "s", "--config-dir", str(tmp_path / "conf"), "--study", str(folder),
                    "trainer.max_steps=20"]  # fmt: skip
            assert main(argv) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not (tmp_path / "new").exists()
    assert given.is_dir() and not any(given.iterdir())
