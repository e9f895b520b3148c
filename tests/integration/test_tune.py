"""`tsforge tune` for real: Optuna studies in SQLite whose trials are runs in processes here.

    python -m pytest tests/integration/test_tune.py

A tiny study end to end (two trials at once, the best trial exported as an experiment that
reproduces it, Optuna's plots, TensorBoard's HParams columns read back with TensorBoard's own
reader); pruning from the validation curve; a controller killed mid-trial and carried on from
the database, with no trial run twice; a trial killed from outside (as by the OOM killer)
retried on request from its checkpoint. (The same on SLURM job arrays: test_slurm.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from tsforge.config.checks import compose_config, with_config_dir
from tsforge.train.rundir import read_config

pytestmark = pytest.mark.integration

# Small and quick: the synthetic dataset, short runs, validation every 20 steps.
RUN = ["data.input_size=48", "data.horizon=12", "trainer.val_every_steps=20",
       "trainer.log_every_steps=5", "trainer.plot_series=0"]  # fmt: skip


def tune(*args: str, cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tsforge", "tune", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, **kw)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def search_file(folder: Path, name: str, text: str) -> Path:
    (folder / "search").mkdir(parents=True, exist_ok=True)
    (folder / "search" / f"{name}.yaml").write_text(text)
    return folder


def load(study_dir: Path) -> optuna.Study:
    record = json.loads((study_dir / "study.json").read_text())
    return optuna.load_study(study_name=record["study_name"],
                             storage=f"sqlite:///{study_dir / 'study.db'}")  # fmt: skip


def at_first_checkpoint(tmp_path: Path, name: str, trials: int, max_steps: int):
    """A study's controller, running, once its trial 0 has saved a checkpoint."""
    conf = search_file(tmp_path / "conf", name, f"""
metric: mse
params:
  optim.lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
pruner: none
trials: {trials}
poll_s: 0.3
""")
    study_dir = tmp_path / "study"
    args = [name, "--config-dir", str(conf), "--study", str(study_dir), *RUN, "model=dlinear",
            f"trainer.max_steps={max_steps}", "trainer.checkpoint_every_steps=20"]
    controller = subprocess.Popen([sys.executable, "-m", "tsforge", "tune", *args], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = study_dir / "trials" / "0" / "checkpoints"
    deadline = time.monotonic() + 180
    while not (checkpoints.is_dir() and any(checkpoints.glob("step_*"))):
        assert time.monotonic() < deadline and controller.poll() is None
        time.sleep(0.1)
    return controller, study_dir


def test_a_tiny_study_runs_trials_two_at_a_time_and_exports_the_best(tmp_path):
    conf = search_file(tmp_path / "conf", "tiny", """
metric: mse
params:
  optim.lr: {type: float, low: 3.0e-4, high: 1.0e-2, log: true}
  model: {type: choice, choices: [dlinear, nhits]}
  model.mlp_units: {type: choice, choices: [[[16, 16], [16, 16]], [[32, 32], [32, 32]]],
                    when: {model: nhits}}
pruner: none
trials: 4
parallel: 2
poll_s: 0.5
""")
    study_dir = tmp_path / "study"
    proc = tune("tiny", "--config-dir", str(conf), "--study", str(study_dir), *RUN,
                "trainer.max_steps=40", cwd=tmp_path)  # fmt: skip
    study = load(study_dir)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # each trial's value is the best val/mse its run recorded
        run = study_dir / "trials" / str(t.number)
        vals = [json.loads(line).get("val/mse") for line in (run / "metrics.jsonl").open()]
        assert t.value == pytest.approx(min(v for v in vals if v is not None))
        assert ("model.mlp_units" in t.params) == (t.params["model"] == "nhits")
        assert t.user_attrs["cpu_s"] > 0
    # two at once: the second trial started before the first ended
    logs = {n: (study_dir / "logs" / f"{n}.log").stat() for n in (0, 1)}
    assert len(logs) == 2
    started = [proc.stdout.index(f"trial {n} started") for n in (0, 1)]
    first_end = min(proc.stdout.index(f"trial {n} complete") for n in (0, 1))
    assert max(started) < first_end

    best = study.best_trial
    assert f"best: trial {best.number}" in proc.stdout
    # the exported experiment reproduces the best trial's config
    exported = study_dir / "conf" / "experiment" / "tiny_tuned.yaml"
    cfg = compose_config(with_config_dir(["experiment=tiny_tuned"], str(study_dir / "conf")))
    again = OmegaConf.to_container(cfg, resolve=True)
    trained = OmegaConf.to_container(
        read_config(study_dir / "trials" / str(best.number) / "config.yaml"), resolve=True)
    again.pop("launcher"), trained.pop("launcher")
    assert again == trained, exported.read_text()
    for plot in ("history", "curves", "importances"):
        assert (study_dir / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    # `runs compare` on the trials, and the HParams columns as TensorBoard reads them
    table = subprocess.run([sys.executable, "-m", "tsforge", "runs", "compare", "--json",
                            str(study_dir / "trials")], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    compared = json.loads(table.stdout)
    assert len(compared["runs"]) == 4 and "optim.lr" in compared["differing"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    tb = EventAccumulator(str(study_dir / "tb")).Reload()
    content = tb.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    columns = [h.name for h in experiment.hparam_infos]
    assert columns == ["optim.lr", "model", "model.mlp_units"]
    assert [m.name.tag for m in experiment.metric_infos][0] == "best_val/mse"
    best_curve = [e.value for e in tb.Scalars("study/best_val_mse")]
    assert best_curve[-1] == pytest.approx(best.value) and best_curve == sorted(best_curve,
                                                                                 reverse=True)


def test_a_hopeless_trial_is_pruned_at_its_validation_and_stops_early(tmp_path):
    conf = search_file(tmp_path / "conf", "prune", """
metric: mse
params:
  optim.lr: {type: choice, choices: [3.0e-3, 1.0e-9]}
enqueue: [{optim.lr: 3.0e-3}, {optim.lr: 1.0e-9}]
pruner: median
startup_trials: 1
trials: 2
poll_s: 0.2
""")
    study_dir = tmp_path / "study"
    steps = 1500
    proc = tune("prune", "--config-dir", str(conf), "--study", str(study_dir), *RUN,
                "model=dlinear", f"trainer.max_steps={steps}", cwd=tmp_path)  # fmt: skip
    first, second = load(study_dir).get_trials()
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED, proc.stdout
    assert second.params == {"optim.lr": 1e-9}
    final = json.loads((study_dir / "trials" / "1" / "metrics.json").read_text())
    assert final["pruned"] is True and final["steps"] < steps
    assert (study_dir / "trials" / "1" / "prune").is_file()
    assert "trial 1 pruned: val/mse" in proc.stdout
    assert "pruned at step" in (study_dir / "logs" / "1.log").read_text()


def test_a_killed_controller_is_carried_on_from_the_database_without_running_a_trial_twice(
        tmp_path):  # fmt: skip
    controller, study_dir = at_first_checkpoint(tmp_path, "resume", trials=2, max_steps=600)
    controller.send_signal(signal.SIGKILL)  # no chance to tidy up
    controller.communicate(timeout=30)
    trial_lock = study_dir / "trials" / "0" / ".lock"
    deadline = time.monotonic() + 120
    from tsforge.train.lock import holder

    while holder(trial_lock.parent):  # the trial got SIGTERM with its controller: it saves
        assert time.monotonic() < deadline
        time.sleep(0.1)
    running = load(study_dir).get_trials()
    assert [t.state for t in running] == [optuna.trial.TrialState.RUNNING]

    proc = tune("--study", str(study_dir), cwd=tmp_path)
    assert "trial 0 adopted" in proc.stdout and "trial 0 resumes" in proc.stdout
    trials = load(study_dir).get_trials()
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(os.listdir(study_dir / "trials")) == ["0", "1"]
    meta = json.loads((study_dir / "trials" / "0" / "meta.json").read_text())
    assert meta["resumes"] and meta["resumes"][-1]["from_step"] > 0, meta


def test_a_killed_trial_is_retried_on_request_resuming_its_checkpoint(tmp_path):
    from tsforge.train.lock import holder

    controller, study_dir = at_first_checkpoint(tmp_path, "retry", trials=1, max_steps=1200)
    run = study_dir / "trials" / "0"
    os.kill(int(holder(run).split("@")[0]), signal.SIGKILL)  # the trial, not its controller
    out, _ = controller.communicate(timeout=120)
    assert controller.returncode == 1 and "trial 0 failed" in out, out  # no trial completed
    (failed,) = load(study_dir).get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL
    saved = max(int(p.stem[len("step_"):]) for p in (run / "checkpoints").glob("step_*.pt"))

    proc = tune("--study", str(study_dir), "--retry-failed", cwd=tmp_path)
    assert "retrying failed trial(s) 0" in proc.stdout
    assert "trial 1 retries trial 0" in proc.stdout, proc.stdout
    first, retry = load(study_dir).get_trials()
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == first.params and retry.user_attrs["retry_of"] == 0
    assert sorted(os.listdir(study_dir / "trials")) == ["1"]  # the run moved to its retry
    meta = json.loads((study_dir / "trials" / "1" / "meta.json").read_text())
    assert [r["from_step"] for r in meta["resumes"]] == [saved], meta
    assert "best: trial 1" in proc.stdout  # the trials budget (1) counts the point once

    again = tune("--study", str(study_dir), "--retry-failed", cwd=tmp_path)
    assert "no failed trial to retry" in again.stdout  # trial 0 is retried already
    assert len(load(study_dir).get_trials()) == 2


def test_the_wall_budget_prunes_the_running_trial_and_asks_for_no_more(tmp_path):
    conf = search_file(tmp_path / "conf", "wall", """
metric: mse
params:
  optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
trials: 5
wall_minutes: 0.4
poll_s: 0.3
""")
    study_dir = tmp_path / "study"
    steps = 200_000  # far more than 24 s allow
    proc = tune("wall", "--config-dir", str(conf), "--study", str(study_dir), *RUN,
                "model=dlinear", f"trainer.max_steps={steps}", cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # no trial completed: no best
    assert "no trial completed" in proc.stderr
    (trial,) = load(study_dir).get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "wall-time budget" in (study_dir / "trials" / "0" / "prune").read_text()
    final = json.loads((study_dir / "trials" / "0" / "metrics.json").read_text())
    assert final["pruned"] is True and 0 < final["steps"] < steps
