"""Hostile input to `tsforge jobs`: job records that are not what tsforge wrote.

    python -m pytest tests/hostile/test_jobs.py

`RUN_DIR/slurm/jobs.json` and `SWEEP_DIR/sweep.json` are read as untrusted: a job id that is
not one (an option, a shell line, a number) stops the command before any SLURM command runs,
and a log is never read from a path the file names. Stand-ins for `squeue`, `sacct` and
`scancel` on PATH leave a file behind if they are ever called, which the harness reports as
something created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.harness import Case, check

pytestmark = pytest.mark.integration

TOOLS = ("squeue", "sacct", "scancel")


def called_never(ws: Path) -> None:
    """SLURM's commands on PATH, each leaving `called-<name>` if run."""
    bin_dir = ws / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in TOOLS:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\ntouch {ws}/called-{name}\n")
        tool.chmod(0o755)


def jobs(content) -> callable:
    def prepare(ws: Path) -> None:
        called_never(ws)
        (ws / "run" / "slurm").mkdir(exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (ws / "run" / "slurm" / "jobs.json").write_text(text)

    return prepare


def sweep(content) -> callable:
    def prepare(ws: Path) -> None:
        jobs([{"job_id": "7", "ranks": 1}])(ws)
        text = content if isinstance(content, str) else json.dumps(content)
        (ws / "run" / "sweep.json").write_text(text)

    return prepare


def also(*steps):
    def prepare(ws: Path) -> None:
        for step in steps:
            step(ws)

    return prepare


def write(path: str, data: bytes):
    return lambda ws: (ws / path).write_bytes(data)


PATH = {"PATH": "{bin}:/usr/bin:/bin"}
NOT_AN_ID = r"is not a SLURM job id"
CASES = [
    Case("cancel-id-is-an-option", ["jobs", "cancel", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": "--user=root", "ranks": 1}]), env=PATH),
    Case("status-id-is-a-shell-line", ["jobs", "status", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": "1; touch pwned", "ranks": 1}]), env=PATH),
    Case("cancel-second-id-bad", ["jobs", "cancel", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": "12", "ranks": 1}, {"job_id": "-u root", "ranks": 1}]),
         env=PATH),
    Case("logs-id-with-newline", ["jobs", "logs", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": "1\n2", "ranks": 1}]), env=PATH),
    Case("status-id-is-a-number", ["jobs", "status", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": 12345, "ranks": 1}]), env=PATH),
    Case("status-id-is-a-list", ["jobs", "status", "{run}"], 2, NOT_AN_ID,
         prepare=jobs([{"job_id": ["1", "2"], "ranks": 1}]), env=PATH),
    Case("jobs-json-not-json", ["jobs", "status", "{run}"], 2, r"jobs\.json is not readable JSON",
         prepare=jobs('[{"job_id": "1"'), env=PATH),
    Case("jobs-json-binary", ["jobs", "cancel", "{run}"], 2, r"jobs\.json is not readable JSON",
         prepare=jobs("\udcff".encode("utf-8", "surrogateescape").decode("latin-1")), env=PATH),
    Case("jobs-json-an-object", ["jobs", "cancel", "{run}"], 2, r"holds a JSON dict, not the list",
         prepare=jobs({"job_id": "1", "ranks": 1}), env=PATH),
    Case("jobs-json-empty", ["jobs", "logs", "{run}"], 2, r"lists no job",
         prepare=jobs([]), env=PATH),
    Case("jobs-json-deeply-nested", ["jobs", "status", "{run}"], 2, r"not readable JSON",
         prepare=jobs("[" * 100_000), env=PATH),
    Case("jobs-entry-without-ranks", ["jobs", "status", "{run}"], 2, r"number of ranks",
         prepare=jobs([{"job_id": "3"}]), env=PATH),
    Case("jobs-entry-ranks-negative", ["jobs", "logs", "{run}"], 2, r"number of ranks",
         prepare=jobs([{"job_id": "3", "ranks": -2}]), env=PATH),
    Case("logs-never-read-from-a-named-path", ["jobs", "logs", "{run}"], 2,
         r"5_0_log\.out does not exist yet",
         prepare=jobs([{"job_id": "5", "ranks": 1, "logs": ["/etc/passwd"]}]), env=PATH),
    Case("logs-rank-out-of-range", ["jobs", "logs", "{run}", "--rank", "7"], 2,
         r"--rank 7: job 5 has ranks 0-1", prepare=jobs([{"job_id": "5", "ranks": 2}]), env=PATH),
    Case("logs-rank-negative", ["jobs", "logs", "{run}", "--rank", "-1"], 2, r"--rank -1",
         prepare=jobs([{"job_id": "5", "ranks": 2}]), env=PATH),
    Case("logs-rank-not-a-number", ["jobs", "logs", "{run}", "--rank", "x"], 2,
         r"invalid int value", prepare=jobs([{"job_id": "5", "ranks": 2}]), env=PATH),
    Case("sweep-json-corrupt", ["jobs", "status", "{run}"], 2, r"sweep\.json is not readable",
         prepare=sweep("{nope"), env=PATH),
    Case("sweep-json-bad-id", ["jobs", "status", "{run}"], 2, NOT_AN_ID,
         prepare=sweep({"runs": [{"job_id": "$(reboot)", "swept": []}]}), env=PATH),
    Case("sweep-json-runs-not-a-list", ["jobs", "status", "{run}"], 2, r"has no list of runs",
         prepare=sweep({"runs": "all"}), env=PATH),
    Case("status-meta-json-corrupt", ["jobs", "status", "{run}"], 2, r"meta\.json is not readable",
         prepare=also(jobs([{"job_id": "9", "ranks": 1}]), write("run/meta.json", b"{,")),
         env=PATH),
    Case("status-of-a-local-run", ["jobs", "status", "{run}"], 2,
         r"was not launched with launcher=slurm", prepare=called_never, env=PATH),
    Case("status-of-nothing", ["jobs", "status", "{nothing}"], 2, r"does not exist"),
    Case("logs-of-any-bytes", ["jobs", "logs", "{run}"], 0,
         prepare=also(jobs([{"job_id": "5", "ranks": 1}]),
                      write("run/slurm/5_0_log.out", b"step 1\n\xff\xfe\x00 bytes\n")),
         env=PATH),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_jobs(case, workspace):
    check(case, workspace)
