"""`launcher=slurm`: train as a SLURM job submitted through submitit, requeued on preemption.

    python -m tsforge.launch launcher=slurm launcher.nodes=2              # 2 nodes x 1 task
    python -m tsforge.launch launcher=slurm launcher.nodes=2 \\
        launcher.gpus_per_node=4 launcher.tasks_per_node=4 launcher.partition=gpu   # a GPU each
    python -m tsforge.launch launcher=slurm launcher.wait=true            # follow rank 0's log

The launcher checks the request against the cluster (`sinfo`) before it submits, writes the
job id to `RUN_DIR/slurm/jobs.json` and prints where everything is. Each SLURM task runs
`run_rank` on the same run directory; rank, world size and the rendezvous come from SLURM's
variables (`tsforge.train.distributed`).

The job is a checkpointable callable (`TrainingJob`, submitit's `helpers.Checkpointable`).
How a stop flows, and why the trainer and submitit do not fight over the signal:
  * SLURM sends `launcher.signal` (USR2 by default: NCCL may take USR1 for itself)
    `signal_delay_s` before the time limit, or `scancel --signal=USR2` sends it at once.
  * submitit installs its own handler for that signal when the task starts, but while the
    loop runs the trainer's handler replaces it: the loop finishes its step, every rank agrees
    to stop, rank 0 writes the checkpoint and `run_rank` returns 75.
  * Only then is the signal handed on to submitit (raised again on rank 0, whose handler is
    back in place): submitit calls `TrainingJob.checkpoint()`, which returns the resubmission
    of this job, and requeues it with `scontrol requeue`. The other ranks wait for the requeue
    to end the step, so that an early exit of theirs cannot kill rank 0 first
    (`--kill-on-bad-exit`).
  * When SLURM itself ends the job (`scontrol requeue`, preemption, `scancel`), it sends
    SIGTERM; the loop checkpoints the same way and the tasks exit with 75 without requeueing
    again: SLURM already knows what comes next.
  * On restart `run_rank` resumes from `RUN_DIR/checkpoints/latest.pt` (`latest/`, a folder
    of shards, for trainer.strategy=fsdp) and appends the resume to `meta.json`. A job that
    came back `max_requeues` times is not requeued again and fails.
A rank that raises fails the job at once (`srun --kill-on-bad-exit=1`), with its traceback in
its log, `RUN_DIR/slurm/<job>_<rank>_log.out`.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from submitit import JobEnvironment
from submitit.helpers import Checkpointable

from tsforge.errors import EXIT_FAILURE, EXIT_REQUEUE, EXIT_USAGE, UserError
from tsforge.train.stop import STOP_SIGNALS

# What launcher.signal may name: the stop signals but TERM, which is SLURM's own "end now".
WARNING_SIGNALS = tuple(sig.name.removeprefix("SIG") for sig in STOP_SIGNALS
                        if sig is not signal.SIGTERM)  # fmt: skip
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}  # fmt: skip


# -- asking SLURM ---------------------------------------------------------------------------
def _slurm(*cmd: str, timeout: float = 30) -> str:
    """stdout of a SLURM command; a UserError naming the command when it fails. Times come
    as ISO 8601 (SLURM_TIME_FORMAT=standard) whatever the user's environment asks for."""
    env = {**os.environ, "SLURM_TIME_FORMAT": "standard"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"'{' '.join(cmd)}' failed: {err}") from None
    if out.returncode:
        raise UserError(f"'{' '.join(cmd)}' failed: {out.stderr.strip() or out.returncode}")
    return out.stdout


def partitions() -> dict[str, dict[str, Any]]:
    """{partition: {"default", "nodes", "gpus_per_node"}} from `sinfo`, one line per node group."""
    found: dict[str, dict[str, Any]] = {}
    for line in _slurm("sinfo", "-h", "-o", "%P|%D|%G").splitlines():
        name, count, gres = line.strip().split("|")
        part = found.setdefault(name.rstrip("*"), {"default": False, "nodes": 0,
                                                   "gpus_per_node": 0})
        part["default"] |= name.endswith("*")
        part["nodes"] += int(count)
        part["gpus_per_node"] = max(part["gpus_per_node"], gpus_in_gres(gres))
    return found


def gpus_in_gres(gres: str) -> int:
    """GPUs per node in a `sinfo %G` string: 'gpu:a100:4(S:0-1),gpu:v100:2' -> 6; '(null)' -> 0."""
    return sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def check_job_id(job_id: Any, source: str) -> str:
    """A SLURM job id as tsforge records them ('1234', or '1234_5' for an array element), or a
    UserError naming `source`: a value read from a file never reaches a command unchecked."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise UserError(f"{source}: {str(job_id)[:40]!r} is not a SLURM job id (digits, or "
                        f"digits_digits for an array element): restore the file or remove it")
    return job_id


def job_state(job_id: str) -> str | None:
    """RUNNING, PENDING, COMPLETED, FAILED, ...: from `squeue` while SLURM holds the job in
    memory, then from `sacct`; None when neither knows it (yet)."""
    check_job_id(job_id, "job id")
    try:
        state = _slurm("squeue", "-h", "-j", job_id, "-o", "%T", timeout=15).strip()
    except UserError:  # squeue refuses ids it has forgotten
        state = ""
    if state:
        return state.splitlines()[0]
    try:
        lines = _slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Submit,State", timeout=15)
    except UserError:
        return None
    return latest_state(lines)


def latest_state(sacct_lines: str) -> str | None:
    """The state of the most recently submitted record in `sacct -o Submit,State` lines.
    One id can have several: a requeued job keeps a record per start, and a controller
    whose saved state was lost counts ids from 1 again while the accounting database
    still holds the older jobs with the same ids."""
    records = []
    for line in sacct_lines.splitlines():
        submit, _, state = line.strip().partition("|")
        if state.strip():
            records.append((submit, len(records), state.split()[0]))
    return max(records)[2] if records else None


def cancel_job(job_id: str) -> None:
    """`scancel` the job; a UserError with SLURM's words when it refuses."""
    _slurm("scancel", check_job_id(job_id, "job id"))


# -- checks before submission ---------------------------------------------------------------
def check_request(launcher: DictConfig) -> str:
    """Refuse what the cluster cannot run, with the fix; returns the partition to use."""
    if shutil.which("sbatch") is None:
        raise UserError("launcher=slurm: 'sbatch' was not found on PATH (run this on a SLURM "
                        "login node), or train on this machine with launcher=local")
    if launcher.nodes < 1 or launcher.tasks_per_node < 1:
        raise UserError(f"launcher.nodes={launcher.nodes} launcher.tasks_per_node="
                        f"{launcher.tasks_per_node}: both must be 1 or more")
    gpus = int(launcher.gpus_per_node or 0)
    if gpus and launcher.tasks_per_node != gpus:
        raise UserError(f"launcher.tasks_per_node={launcher.tasks_per_node} but "
                        f"launcher.gpus_per_node={gpus}: DDP runs one task per GPU, so set "
                        f"launcher.tasks_per_node={gpus}")
    if launcher.signal not in WARNING_SIGNALS:
        raise UserError(f"launcher.signal={launcher.signal}: use USR2 (default) or USR1")
    if not 0 < launcher.signal_delay_s < 60 * launcher.timeout_min:
        raise UserError(f"launcher.signal_delay_s={launcher.signal_delay_s} must be between 0 "
                        f"and launcher.timeout_min x 60 = {60 * launcher.timeout_min}")
    if launcher.max_requeues < 0:
        raise UserError(f"launcher.max_requeues={launcher.max_requeues}: use 0 or more")
    found = partitions()
    name = launcher.partition or next((p for p, v in found.items() if v["default"]), None)
    if name is None:
        raise UserError(f"the cluster has no default partition: set launcher.partition to one "
                        f"of {', '.join(found)}")
    if name not in found:
        raise UserError(f"launcher.partition={name} is not a partition of this cluster: use one "
                        f"of {', '.join(found) or '(none: is slurmctld up?)'}")
    part = found[name]
    if gpus > part["gpus_per_node"]:
        raise UserError(f"launcher.gpus_per_node={gpus} but the nodes of partition {name} have "
                        f"at most {part['gpus_per_node']} GPUs each: ask for fewer or pick "
                        f"another launcher.partition")
    if launcher.nodes > part["nodes"]:
        raise UserError(f"launcher.nodes={launcher.nodes} but partition {name} has "
                        f"{part['nodes']} nodes")
    return name


def sbatch_parameters(launcher: DictConfig, partition: str, job_name: str) -> dict[str, Any]:
    """submitit `SlurmExecutor.update_parameters` keywords for this request."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "partition": partition,
        "time": int(launcher.timeout_min),
        "nodes": int(launcher.nodes),
        "ntasks_per_node": int(launcher.tasks_per_node),
        "signal_delay_s": int(launcher.signal_delay_s),
        "array_parallelism": int(launcher.array_parallelism),
        # One log per rank (stdout and stderr together), kept across requeues.
        "stderr_to_stdout": True,
        "srun_args": ["--kill-on-bad-exit=1", "--open-mode=append", *_gpu_binding(launcher)],
        # submitit reads the signal to handle from this variable when the task starts.
        "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={launcher.signal}", *launcher.setup],
        "additional_parameters": {
            "signal": f"{launcher.signal}@{int(launcher.signal_delay_s)}",
            **OmegaConf.to_container(launcher.sbatch_extra, resolve=True),
        },
    }
    optional = {
        "account": launcher.account,
        "qos": launcher.qos,
        "constraint": launcher.constraint,
        "cpus_per_task": launcher.cpus_per_task,
        "gpus_per_node": launcher.gpus_per_node or None,
        "mem": _mem(launcher.mem_gb) if launcher.mem_gb else None,
        "exclusive": True if launcher.exclusive else None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def _gpu_binding(launcher: DictConfig) -> list[str]:
    """One GPU per task: by default every task of a step sees all of its node's GPUs.
    `per_task:1` gives the tasks of a node one GPU each, in order: each task's
    `CUDA_VISIBLE_DEVICES` names only its own, so no rank can touch another's and the rank
    picks the one device it sees (`init_distributed`), with or without cgroups."""
    return ["--gpu-bind=per_task:1"] if launcher.gpus_per_node else []


def _mem(gb: float) -> str:
    return f"{int(gb)}G" if float(gb).is_integer() else f"{round(gb * 1024)}M"


def _leave_once_saved() -> None:
    """Once submitit has saved this task's result, end the process without the interpreter's
    teardown (`leave_now`); if saving fails, the process exits as usual, with its error."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return
    from tsforge.train.distributed import leave_now

    result = JobEnvironment().paths.result_pickle
    since = time.time() - 2  # file times may be coarse

    def leave() -> None:
        if result.exists() and result.stat().st_mtime >= since:
            leave_now(0)

    atexit.register(leave)


# -- the job --------------------------------------------------------------------------------
class TrainingJob(Checkpointable):
    """What every SLURM task runs: `run_rank(cfg, run_dir)`, requeued from its checkpoint."""

    def __init__(self, cfg: dict[str, Any], run_dir: str, *, signal_name: str, max_requeues: int):
        self.cfg = cfg
        self.run_dir = run_dir
        self.signal_name = signal_name
        self.max_requeues = max_requeues

    def __call__(self) -> int:
        faulthandler.enable()  # a task that crashes in native code prints where it was
        from tsforge.train.run import run_rank

        restarts = _restarts()
        if restarts > self.max_requeues:
            raise RuntimeError(f"this job came back {restarts} times, more than "
                               f"launcher.max_requeues={self.max_requeues}")
        # SLURM's variables say where this task stands; stale torchrun-style ones exported
        # from the submitting shell would take precedence in init_distributed.
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)
        cfg = OmegaConf.create(self.cfg)
        if not cfg.trainer.threads:  # the CPUs SLURM gave this task, not the whole node's
            cfg.trainer.threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
        try:
            code = run_rank(cfg, Path(self.run_dir))
        except UserError as err:
            print(f"tsforge: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USAGE) from None
        if code == EXIT_REQUEUE:
            self._after_stop()
        if code:
            raise SystemExit(code)
        _leave_once_saved()
        return code

    def _after_stop(self) -> None:
        """The loop stopped on a signal and rank 0 wrote the checkpoint: requeue if SLURM
        will not (the job still runs: a time-limit warning or `scancel --signal`)."""
        job_id = _job_id()
        if job_state(job_id) != "RUNNING":
            raise SystemExit(EXIT_REQUEUE)  # SLURM is ending or requeueing the job itself
        if int(os.environ.get("SLURM_PROCID", 0)) == 0:
            print(f"tsforge: checkpoint written; requeueing job {job_id}", flush=True)
            # submitit's handler is back in place: it calls checkpoint() and requeues.
            signal.raise_signal(getattr(signal, f"SIG{self.signal_name}"))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job_state(job_id) == "RUNNING":
            time.sleep(1)  # until rank 0's requeue ends the step
        raise SystemExit(EXIT_REQUEUE)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """The resubmission of this job, or None (no requeue: the job fails) past the limit."""
        restarts = _restarts()
        if restarts >= self.max_requeues:
            print(f"tsforge: not requeued: the job already came back {restarts} times "
                  f"(launcher.max_requeues={self.max_requeues}); launch again with "
                  f"hydra.run.dir={self.run_dir} to resume", file=sys.stderr, flush=True)
            return None
        return super().checkpoint(*args, **kwargs)


def _restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _job_id() -> str:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


# -- submission -----------------------------------------------------------------------------
def make_executor(launcher: DictConfig, folder: Path, job_name: str):
    """A submitit SlurmExecutor for this request, after the checks."""
    partition = check_request(launcher)
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(launcher.max_requeues))
    executor.update_parameters(**sbatch_parameters(launcher, partition, job_name))
    return executor


@contextlib.contextmanager
def sbatch_refusals():
    """sbatch's refusal (a bad account, QOS, reservation...) as one line, not a traceback."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:  # submitit also prints sbatch's stderr: the message below says it once
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    except (FailedJobError, FailedSubmissionError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(err)
        raise UserError(f"sbatch refused the job: {last.removeprefix('sbatch: error: ')}") from None


def make_job(cfg: DictConfig, run_dir: Path) -> TrainingJob:
    return TrainingJob(
        OmegaConf.to_container(cfg, resolve=True), str(run_dir),
        signal_name=str(cfg.launcher.signal), max_requeues=int(cfg.launcher.max_requeues),
    )  # fmt: skip


def log_path(folder: Path, job_id: str, rank: int = 0) -> Path:
    """submitit's per-task log: <folder>/<job>_<rank>_log.out (array elements: <array>_<i>)."""
    return folder / f"{job_id}_{rank}_log.out"


def record_job(run_dir: Path, job_id: str, folder: Path, ranks: int) -> None:
    """Append the job to `RUN_DIR/slurm/jobs.json`, which `tsforge jobs` reads."""
    from tsforge.train.rundir import read_json, write_json

    path = run_dir / "slurm" / "jobs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = read_json(path, list)  # check_not_in_use read it before the job was submitted
    jobs.append({
        "job_id": job_id, "submitted": time.time(), "ranks": ranks,
        "logs": [str(log_path(folder, job_id, r)) for r in range(ranks)],
    })  # fmt: skip
    write_json(path, jobs)


def check_not_in_use(run_dir: Path) -> None:
    """Refuse to submit into a run that a launch trains now (its lock is held) or that a job
    of its own will train (PENDING, RUNNING, ...): two jobs would write one run."""
    from tsforge.train.lock import holder, in_use
    from tsforge.train.rundir import read_json

    who = holder(run_dir)
    if who:
        raise in_use(run_dir, who)
    path = run_dir / "slurm" / "jobs.json"
    for job in read_json(path, list)[-5:]:  # unreadable: refused before anything is submitted
        job_id = check_job_id(job.get("job_id") if isinstance(job, dict) else None, str(path))
        state = job_state(job_id)
        if state is not None and state not in TERMINAL:
            raise UserError(f"run directory {run_dir} already has SLURM job {job_id} ({state}), "
                            f"which will train it: follow it with 'tsforge jobs status "
                            f"{run_dir}', or cancel it with 'tsforge jobs cancel {run_dir}'")


def launch_slurm(cfg: DictConfig, run_dir: Path) -> int:
    """Submit the run; with `launcher.wait` follow rank 0's log and return the job's status."""
    run_dir = Path(run_dir).resolve()
    launcher = cfg.launcher
    folder = run_dir / "slurm"
    check_not_in_use(run_dir)
    executor = make_executor(launcher, folder, job_name=f"tsforge-{run_dir.name}")
    with sbatch_refusals():
        job = executor.submit(make_job(cfg, run_dir))
    ranks = int(launcher.nodes) * int(launcher.tasks_per_node)
    record_job(run_dir, job.job_id, folder, ranks)
    log = log_path(folder, job.job_id)
    print(f"submitted SLURM job {job.job_id}: {launcher.nodes} node(s) x "
          f"{launcher.tasks_per_node} task(s)\n"
          f"run directory: {run_dir}\n"
          f"logs: {log} (rank 0; rank N: {job.job_id}_N_log.out)\n"
          f"dashboard: tensorboard --logdir {run_dir / 'tb'}\n"
          f"status: tsforge jobs status {run_dir}   cancel: tsforge jobs cancel {run_dir}",
          flush=True)  # fmt: skip
    if not launcher.wait:
        return 0
    return follow(job.job_id, log)


def follow(job_id: str, log: Path, poll_s: float = 2.0, out=None) -> int:
    """Print `log` as it grows until the job ends; 0 if it COMPLETED, else 1 (with the
    tracebacks of the ranks that failed)."""
    out = out or sys.stdout
    offset, state, last = 0, None, None
    try:
        while True:
            state = job_state(job_id)
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                out.write(chunk.decode(errors="replace"))
                out.flush()
            if state != last and state not in (None, "RUNNING", "COMPLETING"):
                print(f"tsforge: job {job_id} is {state}", file=out, flush=True)
            last = state
            if state in TERMINAL:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(f"\ntsforge: stopped following; job {job_id} goes on "
              f"(tsforge jobs cancel RUN_DIR stops it)", file=sys.stderr)
        return 130
    if state == "COMPLETED":
        return 0
    for rank_log in sorted(log.parent.glob(f"{job_id}_*_log.out")):
        text = rank_log.read_text(errors="replace")
        if "Traceback" in text and rank_log != log:
            print(f"--- {rank_log.name}\n{text[text.rindex('Traceback'):]}", file=out)
    return EXIT_FAILURE
