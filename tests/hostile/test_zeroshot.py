"""Hostile input to zero-shot evaluation (`tsforge evaluate RUN_DIR --data ... --horizon H`)
and to fine-tuning (`trainer.init_from=...`).

    python -m pytest tests/hostile/test_zeroshot.py

Every bad input is exit 2 with one line naming it and the fix; evaluate writes nothing (the
harness checks that no file appears or changes), and a refused launch leaves no run directory.
The seed run is a tiny NHITS with input_size 24 and horizon 12 (conftest.py). Usage errors
that need no run (a negative --horizon, --suite with --data) are checked in-process in
tests/integration/test_zeroshot.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.hostile.conftest import TINY_RUN, write_csv
from tests.hostile.harness import Case, check

pytestmark = pytest.mark.integration

ZS = ["evaluate", "run", "--data"]
NEW = "hydra.run.dir=new"


def short_store(ws) -> None:
    """short.zarr: three series of 30 rows, the last 12 the test split (24 + 12 do not fit)."""
    write_csv(ws / "short.csv", length=30)
    cli = [sys.executable, "-m", "tsforge", "data", "ingest", "short.csv", "--out",
           "short.zarr", "--split", '{"kind": "holdout", "horizon": 12}']  # fmt: skip
    proc = subprocess.run(cli, cwd=ws, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def remove_checkpoints(ws) -> None:
    import shutil

    shutil.rmtree(ws / "run" / "checkpoints")


def empty_run(ws) -> None:
    (ws / "empty").mkdir()


def junk_checkpoint(ws) -> None:
    (ws / "junk.pt").write_bytes(b"not a checkpoint at all")


CASES = [
    Case("unknown-dataset", [*ZS, "nosuch", "--horizon", "12"], 2,
         r"unknown dataset 'nosuch': use one of synthetic, ETTh1"),
    Case("missing-store", [*ZS, "gone.zarr", "--horizon", "12"], 2,
         r"--data gone\.zarr: no such store"),
    Case("horizon-zero", [*ZS, "store.zarr", "--horizon", "0"], 2,
         r"argument --horizon: '0' must be > 0"),
    Case("horizon-not-an-integer", [*ZS, "store.zarr", "--horizon", "1.5"], 2,
         r"argument --horizon: '1\.5' is not a whole number"),
    Case("horizon-the-model-cannot-take", [*ZS, "store.zarr", "--horizon", "24", "--season",
         "24"], 2, r"model nhits was trained for horizon 12; --horizon must be 12 \(a model "
         r"that rolls out to any horizon, such as patch_decoder, takes any\)"),
    Case("suite-of-no-run", ["evaluate", "gone", "--suite"], 2,
         r"^tsforge: error: run directory gone does not exist: train it first[^;]*$"),
    Case("a-folder-that-is-no-store", [*ZS, "empty", "--horizon", "12"], 2,
         r"empty is not a tsforge store \(no zarr\.json in it\)", prepare=empty_run),
    Case("store-without-season", [*ZS, "store.zarr", "--horizon", "12"], 2,
         r"the store records no season: pass --season M"),
    Case("run-without-checkpoint", [*ZS, "store.zarr", "--horizon", "12", "--season", "24"], 2,
         r"run .*run has no checkpoint", prepare=remove_checkpoints),
    Case("data-too-short", [*ZS, "short.zarr", "--horizon", "12", "--season", "24"], 2,
         r"short\.zarr is too short for the model's input_size=24 \+ horizon=12",
         prepare=short_store),
    Case("init-from-nothing", ["launch", *TINY_RUN, "trainer.init_from=nope", NEW], 2,
         r"trainer\.init_from=nope: no such run directory or checkpoint file"),
    Case("init-from-a-run-without-checkpoint",
         ["launch", *TINY_RUN, "trainer.init_from=empty", NEW], 2,
         r"trainer\.init_from=empty: the run directory has no checkpoint", prepare=empty_run),
    Case("init-from-junk", ["launch", *TINY_RUN, "trainer.init_from=junk.pt", NEW], 2,
         r"trainer\.init_from=junk\.pt: checkpoint .*junk\.pt (is refused|does not load)",
         prepare=junk_checkpoint),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_zeroshot(case, workspace):
    check(case, workspace)
