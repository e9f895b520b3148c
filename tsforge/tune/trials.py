"""Where a study's trials run: on this machine, N at a time, or as SLURM job-array elements.

    runner = LocalRunner(study_dir, parallel=2)      # or SlurmRunner(study_dir, launcher)
    runs = runner.start([Start(number, cfg, overrides, run_dir), ...])
    runner.state(run)   # RUNNING, or ENDED (the run's files say how), or FAILED with a line
    runner.adopt(number, run_dir, overrides, cpus, gpus, job_id)  # a killed controller's trial

Each trial is an ordinary run directory, `STUDY_DIR/trials/<number>`, trained by the same
launchers as any run: locally `python -m tsforge.launch <overrides> hydra.run.dir=...` in its
own process (its output in `STUDY_DIR/logs/<number>.log`), on SLURM one element of a job
array per trial, checkpointed and requeued on preemption like every SLURM run. A trial that
stopped part-way (exit 75) is started again into its run directory, and resumes there.

A local trial gets SIGTERM when the controller dies, so that it checkpoints instead of
running on unwatched; the next controller finds the checkpoint and resumes the trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from tsforge.errors import EXIT_REQUEUE
from tsforge.launchers.local import stop_with_parent
from tsforge.train.lock import holder

RUNNING, ENDED, FAILED, AGAIN = "running", "ended", "failed", "again"


@dataclass
class Start:
    number: int
    cfg: DictConfig  # the trial's composed config
    overrides: list[str]  # what composes it (a local trial is launched with these)
    run_dir: Path


@dataclass
class TrialRun:
    number: int
    run_dir: Path
    cpus: int  # allotted: what the CPU-minutes budget counts per second of wall time
    gpus: int = 0  # allotted GPUs: what the GPU-minutes budget counts
    started: float = field(default_factory=time.time)
    overrides: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    job_id: str | None = None
    failure: str = ""  # why it failed, in one line


class LocalRunner:
    """Trials as processes on this machine, `parallel` at once."""

    no_gpu_reason = "trainer.device is cpu, or this machine has no CUDA device"

    def __init__(self, study_dir: Path, parallel: int):
        self.logs = study_dir / "logs"
        self.width = parallel

    def start(self, starts: list[Start]) -> list[TrialRun]:
        return [self._launch(TrialRun(s.number, s.run_dir, self.cpus(s.cfg), self.gpus(s.cfg),
                                      overrides=s.overrides)) for s in starts]  # fmt: skip

    def cpus(self, cfg: DictConfig) -> int:
        """CPUs a trial holds: its threads per process x its processes."""
        nprocs = int(cfg.launcher.nprocs)
        return (int(cfg.trainer.threads) or max(1, (os.cpu_count() or 1) // nprocs)) * nprocs

    def gpus(self, cfg: DictConfig) -> int:
        """GPUs a trial holds: one per process when it trains on CUDA (as training decides)."""
        from tsforge.train.distributed import uses_cuda

        return int(cfg.launcher.nprocs) if uses_cuda(str(cfg.trainer.device)) else 0

    def _launch(self, run: TrialRun) -> TrialRun:
        from tsforge.tune.space import value_text

        self.logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tsforge.launch", *run.overrides,
                f"hydra.run.dir={value_text(str(run.run_dir))}"]  # fmt: skip
        controller = os.getpid()
        with open(self.logs / f"{run.number}.log", "ab") as log:
            run.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches the controller, which passes it on
                preexec_fn=lambda: stop_with_parent(controller),
            )  # fmt: skip
        return run

    def state(self, run: TrialRun) -> str:
        if run.process is None:  # adopted: another controller started it
            if holder(run.run_dir):
                return RUNNING
            return ENDED if (run.run_dir / "metrics.json").exists() else AGAIN
        code = run.process.poll()
        if code is None:
            return RUNNING
        if code == 0:
            return ENDED
        if code == EXIT_REQUEUE:
            return AGAIN
        run.failure = _last_line(self.logs / f"{run.number}.log") or f"exit code {code}"
        return FAILED

    def again(self, run: TrialRun) -> TrialRun:
        """Start a trial that stopped part-way again: it resumes from its checkpoint."""
        return self._launch(run)

    def adopt(self, number: int, run_dir: Path, overrides: list[str], cpus: int, gpus: int,
              job_id: str | None) -> TrialRun:  # fmt: skip
        return TrialRun(number, run_dir, cpus, gpus, overrides=overrides)

    def stop(self, runs: list[TrialRun]) -> None:
        """The controller is stopping: each trial checkpoints and exits 75 (resumed later)."""
        import signal

        for run in runs:
            if run.process is not None and run.process.poll() is None:
                run.process.send_signal(signal.SIGTERM)
        for run in runs:
            if run.process is not None:
                run.process.wait()


class SlurmRunner:
    """Trials as elements of SLURM job arrays, `launcher.array_parallelism` at once; each batch
    the search asks for at one time is one array."""

    def __init__(self, study_dir: Path, launcher: DictConfig, job_name: str):
        self.folder = study_dir / "slurm"
        self.launcher = launcher
        self.job_name = job_name
        self.width = int(launcher.array_parallelism)

    no_gpu_reason = "launcher.gpus_per_node is 0"

    def cpus(self, cfg: DictConfig | None = None) -> int:
        """CPUs an array element holds (the launcher's request, the same for every trial)."""
        per_task = int(self.launcher.cpus_per_task or 1)
        return int(self.launcher.nodes) * int(self.launcher.tasks_per_node) * per_task

    def gpus(self, cfg: DictConfig | None = None) -> int:
        """GPUs an array element holds (the launcher's request)."""
        return int(self.launcher.nodes) * int(self.launcher.gpus_per_node)

    def start(self, starts: list[Start]) -> list[TrialRun]:
        from tsforge.launchers.slurm import make_executor, make_job, record_job, sbatch_refusals

        executor = make_executor(self.launcher, self.folder, job_name=self.job_name)
        with sbatch_refusals():
            jobs = executor.submit_array([make_job(s.cfg, s.run_dir) for s in starts])
        ranks = int(self.launcher.nodes) * int(self.launcher.tasks_per_node)
        runs = []
        for s, job in zip(starts, jobs):
            s.run_dir.mkdir(parents=True, exist_ok=True)
            record_job(s.run_dir, job.job_id, self.folder, ranks)
            runs.append(TrialRun(s.number, s.run_dir, self.cpus(), self.gpus(),
                                 overrides=s.overrides, job_id=job.job_id))  # fmt: skip
        return runs

    def state(self, run: TrialRun) -> str:
        from tsforge.launchers.slurm import TERMINAL, job_state

        state = job_state(run.job_id)
        if state is None or state not in TERMINAL:
            return RUNNING  # pending, running, requeued: SLURM brings it back
        if state == "COMPLETED":
            return ENDED
        run.failure = f"SLURM job {run.job_id} ended {state}"
        return FAILED

    def again(self, run: TrialRun) -> TrialRun:
        raise AssertionError("SLURM requeues its own jobs")  # state() never says AGAIN

    def adopt(self, number: int, run_dir: Path, overrides: list[str], cpus: int, gpus: int,
              job_id: str | None) -> TrialRun:  # fmt: skip
        from tsforge.launchers.slurm import check_job_id

        job = check_job_id(job_id, f"the study's record of trial {number}")
        return TrialRun(number, run_dir, cpus, gpus, overrides=overrides, job_id=job)

    def stop(self, runs: list[TrialRun]) -> None:
        """The controller is stopping: SLURM keeps the trials running; the next controller
        follows them."""


# What Hydra prints after a traceback; the line before it names the error.
_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


def _last_line(log: Path) -> str:
    """The last line a failed trial printed: its one-line error (or a traceback's last)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith(_HYDRA_HINT)]
    return lines[-1][:300] if lines else ""
