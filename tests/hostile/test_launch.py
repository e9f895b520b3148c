"""Hostile launches: bad config values, bad places to run, a machine that cannot write, and
stop signals from the first moment on. Every case is a real `python -m tsforge.launch`.

    python -m pytest tests/hostile/test_launch.py

A bad value is refused before the run directory is made (exit 2, one line naming the key); a
full or read-only filesystem is exit 1 naming the path; a stop signal at any moment is exit
75 with a run that resumes, or starts cleanly, when launched again. The tmpfs cases mount a
small filesystem inside the workspace and need root (skipped otherwise).
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
import zarr

from tests.hostile.conftest import TINY_RUN
from tests.hostile.harness import Case, Interrupt, check
from tests.hostile.inputs import full_disk, json_of, jsonl, read_only_disk, relaunch

pytestmark = pytest.mark.integration

NEW = "hydra.run.dir=new"  # a run directory the case would make: it must not appear


def launch(*args: str) -> list[str]:
    return ["launch", *TINY_RUN, *args]


def store_with_split(split: dict):
    """A copy of the seed store with another split in its attributes (the values stay)."""

    def prepare(ws):
        import shutil

        shutil.copytree(ws / "store.zarr", ws / "other.zarr")
        zarr.open_group(str(ws / "other.zarr"), mode="r+").attrs["splits"] = split

    return prepare


def nan_target(ws):
    import shutil

    shutil.copytree(ws / "store.zarr", ws / "nan.zarr")
    values = zarr.open_array(str(ws / "nan.zarr" / "values"), mode="r+")
    values[:] = np.full(values.shape, np.nan, dtype=values.dtype)


def user_folder(ws):
    (ws / "home").mkdir()
    (ws / "home" / "thesis.tex").write_text("years of work\n")


def trained_without_validation(ws):
    run = ws / "new"
    assert not (run / "checkpoints" / "best.pt").exists()
    assert not any(k.startswith("val/") for r in jsonl(run / "metrics.jsonl") for k in r)
    final = json_of(run / "metrics.json")
    assert final["test"]["mse"] > 0 and final["best_val"] == {"mae": None}


def trained_on_everything(ws):
    """No split: every row is training data; no validation, no test metrics, no best."""
    final = json_of(ws / "new" / "metrics.json")
    assert final["steps"] == 4 and final["test"] == {} and final["best_val"] == {"mae": None}
    assert not (ws / "new" / "checkpoints" / "best.pt").exists()


def validated_on_the_last_steps(ws):
    """data.split=holdout:H on a store without a split: validation ran, no test split."""
    run = ws / "new"
    assert any("val/mae" in r for r in jsonl(run / "metrics.jsonl"))
    final = json_of(run / "metrics.json")
    assert final["test"] == {} and final["best_val"]["mae"] is not None
    assert (run / "checkpoints" / "best.pt").exists()


def trained_nothing(ws):
    assert not (ws / "new").exists() or not (ws / "new" / "checkpoints").exists()


def launches_again(ws):
    """Launching again finishes the run: from the start when the stop came before its first
    checkpoint, else from the step where it stopped (the signal's moment decides which)."""
    checkpoints = ws / "new" / "checkpoints"
    if not checkpoints.exists():
        relaunch(ws, NEW)
        assert json_of(ws / "new" / "meta.json")["resumes"] == []
        return
    step = max(int(p.stem[len("step_"):]) for p in checkpoints.glob("step_*.pt"))
    relaunch(ws, NEW, f"trainer.max_steps={step + 2}")  # max_steps may change on resume
    assert [r["from_step"] for r in json_of(ws / "new" / "meta.json")["resumes"]] == [step]
    assert json_of(ws / "new" / "metrics.json")["steps"] == step + 2


LONG = ("trainer.max_steps=100000", "trainer.log_every_steps=1")
RUN_FILES = ["new", "new/*"]

CASES = [
    # -- config values: refused before the run directory is made -------------------------
    Case("lr-negative", launch("optim.lr=-0.001", NEW), 2, r"optim\.lr=-0\.001: must be >= 0"),
    Case("lr-nan", launch("optim.lr=nan", NEW), 2, r"optim\.lr=nan: must be a finite number"),
    Case("lr-inf", launch("optim.lr=inf", NEW), 2, r"optim\.lr=inf: must be a finite number"),
    Case("weight-decay-negative", launch("optim.weight_decay=-0.1", NEW), 2,
         r"optim\.weight_decay=-0\.1: must be >= 0"),
    Case("max-steps-negative", launch("trainer.max_steps=-5", NEW), 2,
         r"trainer\.max_steps=-5: must be >= 0"),
    Case("batch-size-zero", launch("data.batch_size=0", NEW), 2,
         r"data\.batch_size=0: must be > 0"),
    Case("input-size-zero", launch("data.input_size=0", NEW), 2,
         r"data\.input_size=0: must be > 0"),
    Case("horizon-negative", launch("data.horizon=-12", NEW), 2, r"data\.horizon=-12: must be > 0"),
    Case("keep-last-zero", launch("trainer.keep_last=0", NEW), 2,
         r"trainer\.keep_last=0: must be 1 or more"),
    Case("cuda-without-gpu", launch("trainer.device=cuda", NEW), 2,
         r"trainer\.device=cuda but this machine has no CUDA device"),
    Case("schema-as-data", launch("data=schema", NEW), 2,
         r"data=schema is the schema of the group"),
    # -- data ----------------------------------------------------------------------------
    Case("data-path-is-a-csv", launch("data.path={data.csv}", NEW), 2,
         r"data\.csv is not a tsforge store"),
    Case("target-all-nan", launch("data.path=nan.zarr", NEW), 2,
         r"data\.path=nan\.zarr: the target \(y\) has no value in the train split",
         prepare=nan_target, creates=["nan.zarr", "nan.zarr/*"]),
    Case("store-without-split", launch("data.path=other.zarr", NEW), 0,
         r"no validation window.*training without validation",
         prepare=store_with_split({"kind": "none"}), creates=["other.zarr", "other.zarr/*",
                                                             *RUN_FILES],
         after=trained_on_everything),
    Case("split-unknown-at-launch", launch("data.split=holdout:24h", NEW), 2,
         r"data\.split 'holdout:24h': H in holdout:H must be a whole number"),
    Case("split-chosen-at-launch", launch("data.path=other.zarr", "data.split=holdout:12", NEW), 0,
         prepare=store_with_split({"kind": "none"}), creates=["other.zarr", "other.zarr/*",
                                                             *RUN_FILES],
         after=validated_on_the_last_steps),
    Case("split-without-validation", launch("data.path=other.zarr", NEW), 0,
         r"no validation window.*training without validation",
         prepare=store_with_split({"kind": "ratio", "train": 0.8, "test": 0.2}),
         creates=["other.zarr", "other.zarr/*", *RUN_FILES], after=trained_without_validation),
    Case("cache-dir-is-a-file", ["launch", "data.input_size=24", "data.horizon=12",
                                 "trainer.max_steps=2", NEW], 2,
         r"cannot make the folder .*data\.csv/stores: a file is in its way: point "
         r"TSFORGE_CACHE_DIR", env={"TSFORGE_CACHE_DIR": "{data.csv}"}),
    # -- where the run goes ----------------------------------------------------------------
    Case("run-dir-is-a-file", launch("hydra.run.dir={data.csv}"), 2,
         r"hydra\.run\.dir=.*data\.csv is a file, not a folder"),
    Case("run-dir-is-a-user-folder", launch("hydra.run.dir=home"), 2,
         r"hydra\.run\.dir=home is a folder with other files in it and no tsforge run",
         prepare=user_folder),
    Case("read-only-filesystem", launch("hydra.run.dir=ro/run", "trainer.max_steps=6"), 1,
         r"cannot write ro/run: Read-only file system",
         prepare=read_only_disk("ro", keep="run")),
    Case("full-disk", launch("hydra.run.dir=full/new"), 1,
         r"cannot write full/new: No space left on device",
         prepare=full_disk("full")),
    # -- stop signals, from the first moment on ---------------------------------------------
    Case("sigterm-while-importing", launch(NEW), 75, r"stopped by SIGTERM before training",
         interrupt=Interrupt(signal.SIGTERM, "handlers"), creates=RUN_FILES,
         after=trained_nothing),
    Case("sigusr1-while-setting-up", launch(NEW), 75, r"stopped by SIGUSR1 at step \d+",
         interrupt=Interrupt(signal.SIGUSR1, r"^training nhits"), creates=RUN_FILES,
         after=launches_again),
    Case("sigusr2-while-training", launch(NEW, *LONG), 75,
         r"stopped by SIGUSR2 at step \d+, checkpoint written",
         interrupt=Interrupt(signal.SIGUSR2, r"^step +2/"), creates=RUN_FILES,
         after=launches_again),
    Case("sigterm-to-the-group-while-ddp-workers-start",
         launch(NEW, "launcher.nprocs=2", "trainer.threads=1"), 75, r"stopped by SIGTERM",
         interrupt=Interrupt(signal.SIGTERM, "workers", group=True), creates=RUN_FILES,
         after=launches_again),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_launch(case, workspace):
    if case.id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    check(case, workspace)
