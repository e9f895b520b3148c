"""Hostile relaunches of a trained run, and hostile checkpoints read by evaluate and predict.
Every case is a real process on a copy of the seed run (`conftest.py`: 4 steps, checkpoints at
steps 2 and 4).

    python -m pytest tests/hostile/test_resume.py

A crafted checkpoint is refused without being run; a config change that the run cannot take
is refused naming the key (config.yaml untouched), one it can take is applied and recorded; a
second launch into a run in use is refused naming its holder; a damaged latest.pt falls back
to the newest intact step file; half-written files of a killed launch are removed; a save that
fails on a full disk leaves every checkpoint as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.hostile.conftest import TINY_RUN
from tests.hostile.harness import Case, check
from tests.hostile.inputs import (
    PWNED,
    crafted_checkpoint,
    full_disk,
    json_of,
    jsonl,
    start_launch,
    stop_launch,
    stop_leftovers,
    truncate,
)
from tsforge.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.integration

RUN = "hydra.run.dir=run"
CKPT = "run/checkpoints"
RESUMED = ["run/*"]  # a resume rewrites config.yaml and meta.json, appends to the logs
NEW_FILES = ["run/*"]  # new step files, TensorBoard events, metrics.json


def relaunch(*args: str) -> list[str]:
    return ["launch", *TINY_RUN, RUN, *args]


def crafted(name: str, raw: bool = False):
    return lambda ws: crafted_checkpoint(ws / CKPT / name, raw=raw)


def not_run(ws):
    assert not (ws / PWNED).exists(), "the crafted checkpoint was run"


def format_1(ws):
    """latest.pt as format 1 wrote it: numpy's RNG state as numpy's own tuple and array."""
    path = ws / CKPT / "latest.pt"
    ckpt = load_checkpoint(path)
    for state in ckpt["rng"]:
        n = state["numpy"]
        state["numpy"] = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                          n["has_gauss"], n["cached_gaussian"])  # fmt: skip
    ckpt["format_version"] = 1
    path.unlink()
    torch.save(ckpt, path)


def resumed_from(step: int, *, to: int):
    def after(ws):
        meta = json_of(ws / "run" / "meta.json")
        assert [r["from_step"] for r in meta["resumes"]] == [step]
        assert json_of(ws / "run" / "metrics.json")["steps"] == to
        assert not list((ws / CKPT).glob(".*.tmp-*"))

    return after


def new_lr_applied(ws):
    """The new lr is what the optimizer used after the resume, and the change is recorded."""
    last = [r for r in jsonl(ws / "run" / "metrics.jsonl") if "train/lr" in r][-1]
    assert last["step"] == 6 and last["train/lr"] == pytest.approx(0.01)
    ckpt = load_checkpoint(ws / CKPT / "step_00000006.pt")
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [pytest.approx(0.01)]
    assert ckpt["config"]["optim"]["lr"] == 0.01
    (resume,) = json_of(ws / "run" / "meta.json")["resumes"]
    assert resume["from_step"] == 4 and resume["changed"] == {
        "optim.lr": [0.001, 0.01], "optim.schedule": ["cosine", "constant"],
        "trainer.max_steps": [4, 6],
    }  # fmt: skip
    assert "lr: 0.01" in (ws / "run" / "config.yaml").read_text()


def killed_launch(ws):
    """What a launch killed with SIGKILL mid-save leaves: its lock file (pid@host of a process
    that is gone) and half-written temporary files."""
    (ws / "run" / ".lock").write_text("999999@a-host-that-died\n")
    (ws / CKPT / ".step_00000006.pt.tmp-999999").write_bytes(b"half a checkpoint")
    (ws / "run" / ".meta.json.tmp-999999").write_text('{"half": ')


def leftovers_removed(ws):
    assert not list((ws / "run").rglob(".*.tmp-*")) and not (ws / "run" / ".lock").exists()
    resumed_from(4, to=6)(ws)


# The launch beside the case only appends to its logs while the case runs (no checkpoint, no
# validation), so that the snapshots of the workspace never meet a file being renamed.
BESIDE = ("trainer.max_steps=100000", "trainer.log_every_steps=1", "trainer.val_every_steps=0",
          "trainer.checkpoint_every_steps=100000", "trainer.checkpoint_every_min=1000")


def run_in_use(ws):
    start_launch(ws, RUN, *BESIDE)


def one_writer(ws):
    """The refused launch wrote nothing: one resume in meta.json, steps in order."""
    assert stop_launch(ws) == 75
    assert len(json_of(ws / "run" / "meta.json")["resumes"]) == 1
    steps = [r["step"] for r in jsonl(ws / "run" / "metrics.jsonl") if "train/loss" in r]
    assert steps == sorted(set(steps)), "two launches wrote metrics.jsonl"


def all_damaged(ws):
    for path in (ws / CKPT).iterdir():
        truncate(path, keep=0.1)


def edit_horizon(ws):
    """config.yaml edited by hand after training: the checkpoints hold another shape."""
    path = ws / "run" / "config.yaml"
    path.write_text(path.read_text().replace("horizon: 12", "horizon: 24"))


def corrupt(name: str, text: str):
    return lambda ws: (ws / "run" / name).write_text(text)


CASES = [
    # -- a checkpoint is data: crafted files are refused, never run -------------------------
    Case("crafted-best-on-evaluate", ["evaluate", "{run}"], 2,
         r"checkpoint .*best\.pt is refused: it would call .*open", prepare=crafted("best.pt"),
         after=not_run),
    Case("crafted-best-on-predict", ["predict", "{run}", "--input", "{store.zarr}", "--output",
                                     "{out.csv}"], 2,
         r"checkpoint .*best\.pt is refused: it would call .*open", prepare=crafted("best.pt"),
         after=not_run),
    Case("crafted-latest-on-relaunch", relaunch("trainer.max_steps=6"), 2,
         r"checkpoint .*latest\.pt is refused: it would call .*open",
         prepare=crafted("latest.pt"), after=not_run),
    Case("bare-pickle-latest-on-evaluate", ["evaluate", "{run}", "--checkpoint", "latest"], 2,
         r"checkpoint .*latest\.pt is refused", prepare=crafted("latest.pt", raw=True),
         after=not_run),
    Case("format-1-checkpoint-resumes", relaunch("trainer.max_steps=6"), 0, prepare=format_1,
         changes=RESUMED, creates=NEW_FILES, after=resumed_from(4, to=6)),
    # -- what a relaunch may change ----------------------------------------------------------
    Case("horizon-changed", relaunch("data.horizon=24"), 2,
         r"data\.horizon was 12 in run run and is 24 now: .*new hydra\.run\.dir"),
    Case("model-changed", relaunch("model.mlp_units=[[32,32],[32,32],[32,32]]"), 2,
         r"model\.mlp_units was \[\[16, 16\].* and is \[\[32, 32\]"),
    Case("loss-changed", relaunch("loss.name=mse"), 2, r'loss\.name was "mae" .* is "mse" now'),
    Case("lr-and-schedule-changed", relaunch("trainer.max_steps=6", "optim.lr=0.01",
                                             "optim.schedule=constant"), 0,
         changes=RESUMED, creates=NEW_FILES, after=new_lr_applied),
    # -- one launch at a time --------------------------------------------------------------
    Case("second-launch-while-one-runs", relaunch(*BESIDE), 2,
         r"run directory .*run is in use by pid \d+@\S+: another launch is training it",
         prepare=run_in_use, changes=RESUMED, creates=NEW_FILES, after=one_writer),
    # -- damaged and half-written files -----------------------------------------------------
    Case("truncated-latest-falls-back", relaunch("trainer.max_steps=6"), 0,
         r"skipped latest\.pt \(truncated.*resuming from step_00000004\.pt",
         prepare=lambda ws: truncate(ws / CKPT / "latest.pt"), changes=RESUMED,
         creates=NEW_FILES, after=resumed_from(4, to=6)),
    Case("every-checkpoint-damaged", relaunch("trainer.max_steps=6"), 2,
         r"no checkpoint in .*checkpoints reads", prepare=all_damaged),
    Case("leftovers-of-a-killed-launch", relaunch("trainer.max_steps=6"), 0,
         prepare=killed_launch, changes=RESUMED, creates=NEW_FILES, after=leftovers_removed),
    Case("meta-json-corrupt", relaunch("trainer.max_steps=6"), 2,
         r"run/meta\.json is not readable JSON", prepare=corrupt("meta.json", '{"resumes": [')),
    Case("config-yaml-edited-then-evaluate", ["evaluate", "{run}"], 2,
         r"checkpoint .*best\.pt does not fit the model.*config\.yaml edited after training",
         prepare=edit_horizon),
    Case("config-yaml-corrupt", relaunch("trainer.max_steps=6"), 2,
         r"run/config\.yaml is not a readable config",
         prepare=corrupt("config.yaml", "data: [unclosed\n")),
    # -- a full disk during a save: every checkpoint stays as it was --------------------------
    Case("full-disk-during-save", ["launch", *TINY_RUN, "hydra.run.dir=full/run",
                                   "trainer.max_steps=8"], 1,
         r"cannot write .*full/run.*: No space left on device",
         prepare=full_disk("full", leave_kib=64, keep="run"),
         changes=["full/run/config.yaml", "full/run/meta.json", "full/run/metrics.jsonl",
                  "full/run/tb/*"], creates=["full/run/tb/*"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_resume(case, workspace):
    try:
        check(case, workspace)
    finally:
        stop_leftovers()
