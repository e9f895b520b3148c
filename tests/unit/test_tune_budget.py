"""The search's budgets in CPU- and GPU-minutes: what the controller counts for each trial.

    python -m pytest tests/unit/test_tune_budget.py

A real Optuna study (in memory) and the real controller; the trials are records of runs that
hold CPUs and GPUs for a known time (no GPU trains here: the budget is arithmetic on what a
trial was allotted, and that is what these check).
"""

from __future__ import annotations

import time

import optuna
import pytest

from tsforge.config.search import ParamSpec, SearchConfig
from tsforge.tune.controller import Controller, Settings
from tsforge.tune.trials import TrialRun


class _Runner:
    width = 1


def controller(tmp_path, **budgets) -> Controller:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = SearchConfig(params={"optim.lr": ParamSpec(type="float", low=1e-4, high=1e-2)},
                          trials=100, **budgets)  # fmt: skip
    return Controller(tmp_path, search, optuna.create_study(), _Runner(), Settings("s", [], []))


def running(c: Controller, cpus: int, gpus: int, for_s: float) -> TrialRun:
    trial = c.study.ask()
    c.trials[trial.number] = trial
    run = TrialRun(trial.number, c.dir / "trials" / str(trial.number), cpus, gpus,
                   started=time.time() - for_s)  # fmt: skip
    c.running[trial.number] = run
    return run


def test_gpu_minutes_count_gpus_held_times_wall_time(tmp_path):
    c = controller(tmp_path, gpu_minutes=1.0)
    run = running(c, cpus=16, gpus=2, for_s=20)
    assert c.allotted_s("gpu") == pytest.approx(40, abs=2)
    assert c.allotted_s("cpu") == pytest.approx(320, abs=20)
    assert not c._exhausted()  # 40 of 60 GPU-seconds; the CPU-seconds have no budget
    run.started = time.time() - 31  # 2 GPUs x 31 s: past the minute
    assert c._exhausted()


def test_a_trial_ended_keeps_its_gpu_seconds_in_the_study(tmp_path):
    c = controller(tmp_path, gpu_minutes=1.0)
    run = running(c, cpus=4, gpus=1, for_s=45)
    c._add_time(run)
    del c.running[run.number]
    c.study.tell(run.number, 0.5)
    (told,) = c.study.get_trials()
    assert told.user_attrs["gpu_s"] == pytest.approx(45, abs=2)
    assert told.user_attrs["cpu_s"] == pytest.approx(180, abs=8)
    assert not c._exhausted()
    running(c, cpus=4, gpus=1, for_s=16)  # 45 told + 16 running: the budget is spent
    assert c._exhausted()


def test_a_cpu_trial_tells_no_gpu_seconds_and_spends_only_the_cpu_budget(tmp_path):
    c = controller(tmp_path, cpu_minutes=1.0, gpu_minutes=1.0)
    run = running(c, cpus=2, gpus=0, for_s=20)
    c._add_time(run)
    assert "gpu_s" not in c.study.get_trials()[0].user_attrs
    assert c.allotted_s("gpu") == 0 and not c._exhausted()
    run.started = time.time() - 11  # 40 told + 2 CPUs x 11 s: past 60 CPU-seconds
    assert c._exhausted()
