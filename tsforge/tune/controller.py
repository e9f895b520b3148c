"""The search's loop: ask Optuna for points, run them as trials, report their validation
curves, prune, tell the results, within the budgets.

    Controller(study_dir, name, search, study, runner, base_overrides).run() -> exit code

Ask-and-tell: the controller is the only one that talks to the database. Trials know nothing
of Optuna: each is an ordinary run that writes its validation curve to `metrics.jsonl`; the
controller reads the curves every `search.poll_s` seconds, reports each new validation to the
study and, when the pruner says so, writes `RUN_DIR/prune`, which the run honours at its next
log step (a checkpoint, `metrics.json` with `pruned: true`, exit 0). As soon as a slot frees,
the next point is asked for: the search learns from every trial told so far while the others
run.

Budgets: no new trial once `trials` trials exist, or once the trials' allotted CPU time
(CPUs held x wall time) reaches `cpu_minutes`, or their GPU time `gpu_minutes`; at
`wall_minutes` (the controller's own time, over all its launches) the running trials are
pruned too. A stop signal (SIGTERM, SIGUSR1, SIGUSR2) or Ctrl-C stops the controller: local
trials checkpoint and stop with it, SLURM trials run on; launched again on the same study
folder, it adopts every trial the database holds as running (none is asked for twice) and
carries on.

A trial that failed for a reason outside it (its data moved, a node lost) is retried on
request (`retry_failed`, `tsforge tune --study DIR --retry-failed`): its point is asked for
again as a new trial, which takes over the failed trial's run directory and so resumes from
its last checkpoint. The `trials` budget counts a retried point once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tsforge.config.checks import compose_config
from tsforge.config.search import SearchConfig
from tsforge.errors import EXIT_REQUEUE, UserError
from tsforge.runs.table import val_curve
from tsforge.train import stop
from tsforge.train.lock import holder
from tsforge.train.loop import PRUNE_REQUEST
from tsforge.train.rundir import read_json
from tsforge.tune import export
from tsforge.tune.space import as_overrides, suggest
from tsforge.tune.trials import AGAIN, ENDED, FAILED, RUNNING, Start, TrialRun

_WALL = "wall_s"  # study attribute: the controllers' time so far, for the wall budget
_RETRY_OF = "retry_of"  # trial attribute: the number of the failed trial it retries


@dataclass
class Settings:
    name: str  # the search's name: the exported experiment is <name>_tuned
    base: list[str]  # the experiment's overrides (searchpath, search file's, command line's)
    extra: list[str]  # what every trial adds (its threads on this machine)


class Controller:
    def __init__(self, study_dir: Path, search: SearchConfig, study, runner, settings: Settings):
        self.dir = study_dir
        self.search = search
        self.study = study
        self.runner = runner
        self.s = settings
        self.metric = search.metric
        self.running: dict[int, TrialRun] = {}
        self.trials: dict[int, object] = {}  # number -> optuna Trial, to report and prune
        self.reported: dict[int, set[int]] = {}
        self.pruning: set[int] = set()
        self.failures: list[str] = []
        self.completed = 0
        self.started = time.monotonic()
        self.wall_before = float(study.user_attrs.get(_WALL, 0.0))

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        self._adopt()
        try:
            with stop.handled():
                while True:
                    self._poll()
                    if stop.requested():
                        return self._stopped()
                    if self._wall_spent():
                        self._prune_all("the wall-time budget is spent")
                    elif not self._exhausted():
                        self._fill()
                    if not self.running and (self._exhausted() or self._wall_spent()):
                        break
                    self._sleep()
        except KeyboardInterrupt:
            self._stopped()
            raise
        finally:
            self.study.set_user_attr(_WALL, self._wall())
        return self._finish()

    def _sleep(self) -> None:
        until = time.monotonic() + self.search.poll_s
        while time.monotonic() < until and not stop.requested():
            time.sleep(min(0.2, self.search.poll_s))

    def _stopped(self) -> int:
        self.runner.stop(list(self.running.values()))
        for run in self.running.values():
            self._add_time(run)
        by = stop.name(stop.requested()) if stop.requested() else "Ctrl-C"
        print(f"tune: stopped by {by}; {len(self.running)} "
              f"trial(s) left running or resumable: carry on with 'tsforge tune --study "
              f"{self.dir}'", file=sys.stderr, flush=True)
        return EXIT_REQUEUE

    # -- budgets ----------------------------------------------------------------------------
    def _wall(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def _wall_spent(self) -> bool:
        wall = self.search.wall_minutes
        return wall is not None and self._wall() >= 60 * wall

    def allotted_s(self, kind: str = "cpu") -> float:
        """CPU- (or GPU-) seconds the trials have held: told ones and the running ones."""
        told = sum(float(t.user_attrs.get(f"{kind}_s", 0.0)) for t in self._all())
        now = time.time()
        return told + sum((now - r.started) * getattr(r, f"{kind}s")
                          for r in self.running.values())  # fmt: skip

    def _all(self):
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]

    def _retried(self) -> set[int]:
        """The failed trials a later trial (asked for, or waiting to be) retries."""
        return {t.user_attrs[_RETRY_OF] for t in self.study.get_trials(deepcopy=False)
                if _RETRY_OF in t.user_attrs}  # fmt: skip

    def _counted(self) -> int:
        """Trials toward the `trials` budget: a failed trial that is retried counts as its retry."""
        retried = self._retried()
        return sum(t.number not in retried for t in self._all())

    def _exhausted(self) -> bool:
        if self._counted() >= self.search.trials:
            return True
        return any(budget is not None and self.allotted_s(kind) >= 60 * budget
                   for kind, budget in (("cpu", self.search.cpu_minutes),
                                        ("gpu", self.search.gpu_minutes)))  # fmt: skip

    # -- starting trials ---------------------------------------------------------------------
    def _fill(self) -> None:
        free = min(self.runner.width - len(self.running), self.search.trials - self._counted())
        starts = []
        for _ in range(max(free, 0)):
            start = self._ask()
            if start is not None:
                starts.append(start)
        if not starts:
            return
        try:
            runs = self.runner.start(starts)
        except UserError as err:  # sbatch refused: every trial of the batch failed
            for s in starts:
                self._fail(s.number, str(err))
            raise
        for run in runs:
            self.running[run.number] = run
            trial = self.trials[run.number]
            trial.set_user_attr("job_id", run.job_id)
            point = " ".join(trial.user_attrs["point"])
            where = f"SLURM job {run.job_id}, " if run.job_id else ""
            print(f"trial {run.number} started: {point} ({where}{run.run_dir})", flush=True)

    def _ask(self) -> Start | None:
        trial = self.study.ask()
        point = suggest(trial, self.search)
        overrides = [*self.s.base, *as_overrides(point), *self.s.extra]
        run_dir = self.dir / "trials" / str(trial.number)
        self.trials[trial.number] = trial
        self.reported[trial.number] = set()
        trial.set_user_attr("run_dir", str(run_dir.relative_to(self.dir)))
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("point", as_overrides(point))
        try:
            cfg = compose_config(overrides)
        except UserError as err:  # a point the model cannot take (patch longer than input)
            self._fail(trial.number, str(err))
            return None
        trial.set_user_attr("cpus", self.runner.cpus(cfg))
        trial.set_user_attr("gpus", self.runner.gpus(cfg))
        if _RETRY_OF in trial.user_attrs and not self._take_over(trial, run_dir):
            return None
        return Start(trial.number, cfg, overrides, run_dir)

    # -- retrying failed trials ----------------------------------------------------------------
    def retry_failed(self) -> list[int]:
        """Ask again for the point of every failed trial that started (one whose point the
        model could not take never did) and is not retried yet; returns their numbers."""
        from optuna.trial import TrialState

        retried = self._retried()
        again = [t for t in self.study.get_trials(deepcopy=False)
                 if t.state == TrialState.FAIL and t.number not in retried
                 and "cpus" in t.user_attrs
                 and t.user_attrs.get("run_dir") == f"trials/{t.number}"]  # fmt: skip
        for t in again:
            self.study.enqueue_trial(dict(t.params), user_attrs={_RETRY_OF: t.number})
        print(f"retrying failed trial(s) {', '.join(str(t.number) for t in again)}" if again
              else "no failed trial to retry", flush=True)  # fmt: skip
        return [t.number for t in again]

    def _take_over(self, trial, run_dir: Path) -> bool:
        """The retry of a failed trial takes over its run directory, checkpoint and all."""
        failed = int(trial.user_attrs[_RETRY_OF])
        old = self.dir / "trials" / str(failed)
        if old.is_dir() and not run_dir.exists():
            who = holder(old)
            if who:
                self._fail(trial.number, f"trial {failed}'s run {old} is in use by pid {who}: "
                                         f"stop it, then retry")  # fmt: skip
                return False
            old.rename(run_dir)
            print(f"trial {trial.number} retries trial {failed}: its run moves to {run_dir}",
                  flush=True)  # fmt: skip
        else:
            print(f"trial {trial.number} retries trial {failed}, from the start", flush=True)
        return True

    def _adopt(self) -> None:
        """Trials the database holds as running: a controller before this one started them."""
        import optuna
        from optuna.trial import TrialState

        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = frozen.user_attrs
            rel, overrides = attrs.get("run_dir"), attrs.get("overrides")
            if not (isinstance(rel, str) and isinstance(overrides, list)
                    and all(isinstance(o, str) and not o.startswith("-") for o in overrides)
                    and Path(rel) == Path("trials") / str(frozen.number)):  # fmt: skip
                self._fail(frozen.number, "its record in the study is not what tune wrote")
                continue
            self.trials[frozen.number] = optuna.trial.Trial(self.study, frozen._trial_id)
            try:  # on SLURM: no job id when the controller died before it submitted the trial
                run = self.runner.adopt(frozen.number, self.dir / rel, overrides,
                                        int(attrs.get("cpus", 1)), int(attrs.get("gpus", 0)),
                                        attrs.get("job_id"))  # fmt: skip
            except UserError as err:
                self._fail(frozen.number, str(err))
                continue
            self.running[frozen.number] = run
            self.reported[frozen.number] = set(frozen.intermediate_values)
            if (run.run_dir / PRUNE_REQUEST).exists():
                self.pruning.add(frozen.number)
            print(f"trial {frozen.number} adopted: {run.run_dir}", flush=True)

    # -- following trials --------------------------------------------------------------------
    def _poll(self) -> None:
        for number, run in list(self.running.items()):
            state = self.runner.state(run)
            self._report(number, run, judge=state == RUNNING)  # an ended run is not pruned
            if state == RUNNING:
                continue
            if state == AGAIN:
                if not stop.requested():
                    self._add_time(run)
                    self.running[number] = self.runner.again(run)
                    print(f"trial {number} resumes in {run.run_dir}", flush=True)
                continue
            del self.running[number]
            self._add_time(run)
            if state == FAILED:
                self._fail(number, run.failure)
            elif state == ENDED:
                self._ended(number, run)

    def _report(self, number: int, run: TrialRun, judge: bool) -> None:
        """New validations to the study; the pruner's verdict to a run still training."""
        trial = self.trials[number]
        new = [(s, v) for s, v in val_curve(run.run_dir, self.metric)
               if s not in self.reported[number]]  # fmt: skip
        for step, value in new:
            trial.report(value, step)
            self.reported[number].add(step)
        if judge and new and number not in self.pruning and trial.should_prune():
            self._request_prune(run, f"val/{self.metric} {new[-1][1]:.4f} at step "
                                     f"{new[-1][0]}, behind the other trials")  # fmt: skip

    def _request_prune(self, run: TrialRun, why: str) -> None:
        (run.run_dir / PRUNE_REQUEST).write_text(why + "\n")
        self.pruning.add(run.number)
        print(f"trial {run.number} pruned: {why}", flush=True)

    def _prune_all(self, why: str) -> None:
        for run in self.running.values():
            if run.number not in self.pruning and run.run_dir.is_dir():
                self._request_prune(run, why)

    def _add_time(self, run: TrialRun) -> None:
        """The run's CPU- and GPU-seconds since it (re)started, told to its trial."""
        trial = self.trials[run.number]
        now = time.time()
        for kind, held in (("cpu", run.cpus), ("gpu", run.gpus)):
            if held or kind == "cpu":
                spent = float(trial.user_attrs.get(f"{kind}_s", 0.0)) + (now - run.started) * held
                trial.set_user_attr(f"{kind}_s", spent)
        run.started = now

    def _ended(self, number: int, run: TrialRun) -> None:
        from optuna.trial import TrialState

        final = read_json(run.run_dir / "metrics.json")
        curve = val_curve(run.run_dir, self.metric)
        if not curve:
            self._fail(number, f"no val/{self.metric} in {run.run_dir / 'metrics.jsonl'}: give "
                               f"the data a validation split (data.split), or search another "
                               f"metric")  # fmt: skip
            return
        if final.get("pruned"):  # it honoured the request (one that came late finds it done)
            self.study.tell(number, state=TrialState.PRUNED)
            return
        value = min(v for _, v in curve)
        self.study.tell(number, value)
        self.completed += 1
        best = self.study.best_trial
        print(f"trial {number} complete: val/{self.metric} {value:.4f}  (best {best.value:.4f}, "
              f"trial {best.number})", flush=True)
        if best.number == number:
            self._export(best)

    def _fail(self, number: int, why: str) -> None:
        from optuna.trial import TrialState

        self.study.tell(number, state=TrialState.FAIL)
        self.failures.append(why)
        print(f"trial {number} failed: {why}", file=sys.stderr, flush=True)
        if not self.completed and len(self.failures) >= max(3, self.runner.width):
            raise UserError(f"the first {len(self.failures)} trials all failed; the first: "
                            f"{self.failures[0]}")

    # -- the end --------------------------------------------------------------------------
    def experiment_path(self) -> Path:
        return self.dir / "conf" / "experiment" / f"{self.s.name}_tuned.yaml"

    def _export(self, best) -> None:
        run_dir = self.dir / "trials" / str(best.number)
        export.write_experiment(self.experiment_path(), run_dir, [
            f"The best trial of search {self.s.name} in {self.dir}: trial {best.number}, "
            f"val/{self.metric} {best.value:.6g} (selected on validation only).",
            f"  python -m tsforge.launch --config-dir {self.dir / 'conf'} "
            f"experiment={self.s.name}_tuned",
        ])  # fmt: skip

    def _finish(self) -> int:
        from optuna.trial import TrialState

        trials = self._all()
        counts = {s: sum(t.state == s for t in trials)
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}  # fmt: skip
        export.write_dashboard(self.study, self.search, self.dir / "tb")
        plots = export.write_plots(self.study, self.dir / "plots")
        gpu = self.allotted_s("gpu") / 60
        print(f"study done: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete, "
              f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed), "
              f"{self.allotted_s('cpu') / 60:.1f} CPU-minutes, "
              + (f"{gpu:.1f} GPU-minutes, " if gpu else "")
              + f"wall {self._wall() / 60:.1f} min")
        if not counts[TrialState.COMPLETE]:
            print("no trial completed: no best config", file=sys.stderr)
            return 1
        best = self.study.best_trial
        self._export(best)
        print(f"best: trial {best.number}, val/{self.metric} {best.value:.4f}: "
              f"{' '.join(best.user_attrs.get('point', []))}\n"
              f"experiment: {self.experiment_path()}\n"
              f"  python -m tsforge.launch --config-dir {self.dir / 'conf'} "
              f"experiment={self.s.name}_tuned\n"
              f"plots: {', '.join(str(p) for p in plots) or '(none yet)'}\n"
              f"compare: tsforge runs compare {self.dir / 'trials'}\n"
              f"dashboard: tensorboard --logdir {self.dir}")
        return 0

