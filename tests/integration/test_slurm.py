"""`launcher=slurm` on a real SLURM cluster: the local cluster of `slurm/local-cluster.sh`,
laid out as a site is (two GPU nodes, each a host of its own on a bridge, with two GPUs as
gres) and running tsforge from its wheel, installed in the cluster's virtual environment:
every job here is launched with that environment's Python, from outside the checkout.

A 2-node DDP job completes (world size 2, `launcher.wait` follows it to its exit status), its
two ranks on the two hosts, with their own addresses; a 1-node x 2-GPU job gives each task
its own GPU; `scontrol requeue` mid-run puts the job back and it resumes from its latest
checkpoint to `trainer.max_steps` with the losses of the uninterrupted run; the time-limit
signal makes the trainer checkpoint and the job requeue itself; a killed rank fails the job
at once; a 2x2 sweep is one job array whose elements all finish; `tsforge tune` runs its
trials as array elements, prunes one and keeps its study in the cluster's MariaDB; `tsforge jobs
status|logs|cancel`; the templates `slurm/train.sbatch` (2 nodes, and its requeue),
`sweep.sbatch` and `tensorboard.sbatch` (on the node's own address only) run for real.

    sudo bash slurm/local-cluster.sh up          # the session fixture runs it too
    pytest tests/integration/test_slurm.py       # about 5 minutes on 2 cores

A requeued job waits about two minutes (reason BeginTime) before it runs again; the requeue
test overlaps that wait with the tests after it: its job is submitted by the first test and
checked by the last one. Needs root (the fixture installs and starts the cluster); skipped
otherwise, or where there is neither a cluster nor apt-get.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.integration.cluster import (
    CLUSTER_PYTHON,
    GPUS_PER_NODE,
    NODES,
    listening,
    local_cluster,
    require_cluster_host,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PY = str(CLUSTER_PYTHON)
SMALL = [
    "model.mlp_units=[[64,64],[64,64],[64,64]]",
    "data.batch_size=64",
    "trainer.threads=1",
    "trainer.log_every_steps=50",
    "trainer.val_every_steps=500",
    "trainer.checkpoint_every_steps=500",
]
STEPS = 1500  # long enough to requeue in the middle, about 20 s on two shared cores


@pytest.fixture(scope="session")
def cluster():
    require_cluster_host()
    up = local_cluster("up")
    assert re.search(r"^debug\*\s+up\s", up.stdout, re.M), up.stdout  # ends with sinfo


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def launch(env, run_dir: Path, *overrides: str, wait: bool = True):
    """`python -m tsforge.launch launcher=slurm ...` with the cluster's Python, run beside the
    run directory: never in the checkout, whose tsforge `python -m` would import first."""
    cmd = [PY, "-m", "tsforge.launch", "launcher=slurm", *SMALL, *overrides,
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=run_dir.parent)  # fmt: skip
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def submitted(out: str) -> str:
    match = re.search(r"submitted SLURM job (\S+):", out)
    assert match, out
    return match.group(1)


def tsforge(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "tsforge", *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=120)  # fmt: skip


def state(job_id: str) -> str | None:
    from tsforge.launchers.slurm import job_state

    return job_state(job_id)


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in records(run_dir) if "train/loss" in r}


def scontrol_show(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def scontrol_summary(job_id: str) -> str:
    """What SLURM says of the job, for a failure message."""
    info = scontrol_show(job_id)
    return " ".join(f"{k}={info.get(k)}" for k in ("JobState", "Reason", "Restarts", "StartTime"))


# -- the job whose requeue overlaps the other tests -------------------------------------------
@pytest.fixture(scope="module")
def requeued(cluster, env, tmp_path_factory):
    """A run put back by `scontrol requeue` once it has trained a little."""
    run = tmp_path_factory.mktemp("requeued") / "run"
    code, out, err = launch(env, run, f"trainer.max_steps={STEPS}", "launcher.nodes=2")
    assert code == 0, err
    job = submitted(out)
    wait_until("the first training records", lambda: train_losses(run), timeout=120, every=0.2)
    subprocess.run(["scontrol", "requeue", job], check=True)
    return {"run": run, "job": job, "requeued_at": time.time()}


@pytest.fixture(scope="module")
def two_node_run(cluster, env, requeued, tmp_path_factory):
    """An uninterrupted 2-node run, followed by `launcher.wait=true`; the reference losses."""
    run = tmp_path_factory.mktemp("two_node") / "run"
    code, out, err = launch(env, run, f"trainer.max_steps={STEPS}", "launcher.nodes=2",
                            "launcher.wait=true")  # fmt: skip
    return {"run": run, "code": code, "out": out, "err": err}


def test_two_node_job_completes_and_wait_follows_it(two_node_run):
    run, out = two_node_run["run"], two_node_run["out"]
    job = submitted(out)
    assert two_node_run["code"] == 0, out + two_node_run["err"]
    assert "world size 2" in out and f"job {job} is COMPLETED" in out  # rank 0's log, followed
    assert f"tensorboard --logdir {run / 'tb'}" in out
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["slurm_job_ids"] == [job] and meta["resumes"] == []
    # One rank on each host, each with the host's own address: DDP crossed the bridge.
    ranks = meta["ranks"]
    assert [(r["rank"], r["host"], r["address"]) for r in ranks] == [
        (i, node, address) for i, (node, address) in enumerate(NODES.items())]  # fmt: skip
    # submitit's batch script runs the tasks with the cluster's Python: tsforge is the wheel.
    assert f"{PY} -u -m submitit" in (run / "slurm" / f"{job}_submission.sh").read_text()
    final = json.loads((run / "metrics.json").read_text())
    assert final["steps"] == STEPS and final["world_size"] == 2
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/latest.pt", "tb"):
        assert (run / name).exists(), name
    assert state(job) == "COMPLETED"  # from sacct, through slurmdbd


def test_gpu_tasks_each_get_their_own_gpu(cluster, env, tmp_path):
    """1 node x 2 tasks x 2 GPUs: SLURM schedules the gres and binds one GPU to each task
    (the launcher asks for it); training itself runs on the CPU."""
    run = tmp_path / "run"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    code, out, err = launch(env, run, "trainer.max_steps=20", "trainer.val_every_steps=10",
                            f"launcher.gpus_per_node={GPUS_PER_NODE}",
                            f"launcher.tasks_per_node={GPUS_PER_NODE}", "trainer.device=cpu",
                            "launcher.wait=true")  # fmt: skip
    assert code == 0, out + err
    job = submitted(out)
    ranks = json.loads((run / "meta.json").read_text())["ranks"]
    assert len({r["host"] for r in ranks}) == 1 and len(ranks) == GPUS_PER_NODE
    bound = [r["cuda_visible_devices"] for r in ranks]
    assert sorted(bound) == [str(i) for i in range(GPUS_PER_NODE)], ranks  # one GPU each
    assert all(r["slurm_step_gpus"] for r in ranks), ranks
    alloc = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-S", since,
                            "-o", "AllocTRES"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert f"gres/gpu={GPUS_PER_NODE}" in alloc, alloc


def test_requeue_puts_the_job_back_and_keeps_the_first_log(requeued):
    job = requeued["job"]
    info = wait_until("the job back in the queue", lambda: (s := scontrol_show(job)).get(
        "JobState") == "PENDING" and s, timeout=60)  # fmt: skip
    assert info["Restarts"] == "1" and info["Reason"] == "BeginTime"
    log = (requeued["run"] / "slurm" / f"{job}_0_log.out").read_text()
    assert "training nhits" in log and "DUE TO JOB REQUEUE" in log
    assert (requeued["run"] / "checkpoints" / "latest.pt").exists()


def test_what_sbatch_refuses_is_one_line(cluster, env, tmp_path):
    code, out, err = launch(env, tmp_path / "run", "+launcher.sbatch_extra.reservation=nope")
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "sbatch refused the job" in err and "reservation" in err
    partition = launch(env, tmp_path / "run2", "launcher.partition=gpu")
    assert partition[0] == 2 and "use one of debug" in partition[2]


def test_killed_rank_fails_the_job_promptly(cluster, env, tmp_path):
    run = tmp_path / "run"
    proc = launch(env, run, "trainer.max_steps=100000", "launcher.nodes=2", "launcher.wait=true",
                  wait=False)  # fmt: skip
    wait_until("training", lambda: train_losses(run), timeout=120, every=0.2)
    meta = json.loads((run / "meta.json").read_text())
    rank1 = _task_pid(meta["slurm_job_ids"][0], rank=1)
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert time.monotonic() - killed < 30  # no wait for the process-group timeout
    assert re.search(r"task 1: Killed", out) and "is FAILED" in out


def _task_pid(job_id: str, rank: int) -> int:
    """The process of one SLURM task: the nodes are namespaces of this machine, whose
    processes it sees."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (f"SLURM_JOB_ID={job_id}".encode() in environ
                and f"SLURM_PROCID={rank}".encode() in environ
                and b"submitit.core._submit" in cmdline):  # fmt: skip
            return int(proc.name)
    raise AssertionError(f"no task {rank} of job {job_id}")


def test_time_limit_checkpoints_requeues_and_resumes(cluster, env, tmp_path):
    """SLURM sends USR2 signal_delay_s before the limit: the loop checkpoints, the job requeues
    itself through submitit, and resumes from that checkpoint. `tsforge jobs` then ends it."""
    run = tmp_path / "run"
    code, out, err = launch(env, run, "trainer.max_steps=1000000", "trainer.log_every_steps=500",
                            "launcher.timeout_min=2", "launcher.signal_delay_s=60")  # fmt: skip
    assert code == 0, err
    job = submitted(out)
    log = run / "slurm" / f"{job}_0_log.out"
    wait_until("the requeue", lambda: log.exists() and "requeueing job" in log.read_text(),
               timeout=150)  # fmt: skip
    wait_until("the job back in the queue", lambda: state(job) == "PENDING", timeout=60)
    stopped_at = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"]
    assert stopped_at > 0
    # The test does not need SLURM's pause before a requeued job runs again: skip it, once the
    # clock is past the second of the requeue. A launch in that same second carries a credential
    # no newer than the revoked one: slurmd refuses it and SLURM fails the job.
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    resumes = wait_until("the resume", lambda: json.loads(
        (run / "meta.json").read_text())["resumes"], timeout=120,
        explain=lambda: scontrol_summary(job))  # fmt: skip
    assert resumes == [{"from_step": stopped_at, "at": resumes[0]["at"], "job_id": job,
                        "changed": {}}]  # the requeued job runs the same config

    status = tsforge("jobs", "status", str(run), env=env)
    assert status.returncode == 0 and f"job {job}: RUNNING" in status.stdout
    assert f"from step {stopped_at}" in status.stdout
    logs = tsforge("jobs", "logs", str(run), env=env)
    assert logs.stdout.count("training nhits") == 1 and "resuming from step" in logs.stdout
    cancel = tsforge("jobs", "cancel", str(run), env=env)
    assert cancel.returncode == 0 and f"job {job}: cancelled" in cancel.stdout
    wait_until("the cancel", lambda: state(job) == "CANCELLED", timeout=60)


def test_sweep_is_one_array_and_every_element_finishes(cluster, env, tmp_path):
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    out = subprocess.run(
        [PY, "-m", "tsforge.launch", "-m", "launcher=slurm", "model=nhits,dlinear",
         "optim.lr=1e-3,3e-4", "trainer.max_steps=40", "trainer.val_every_steps=20",
         "trainer.threads=1", "data.batch_size=64", "launcher.array_parallelism=2",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - started < 30  # returns at once, without waiting for the jobs
    array = re.search(r"submitted SLURM job array (\d+): 4 runs, at most 2 at once", out.stdout)
    assert array, out.stdout
    assert "ArrayTaskThrottle=2" in subprocess.run(
        ["scontrol", "show", "job", array.group(1)], capture_output=True, text=True).stdout
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    assert [r["swept"] for r in runs] == [
        ["model=nhits", "optim.lr=0.001"], ["model=nhits", "optim.lr=0.0003"],
        ["model=dlinear", "optim.lr=0.001"], ["model=dlinear", "optim.lr=0.0003"],
    ]  # fmt: skip
    assert [r["job_id"] for r in runs] == [f"{array.group(1)}_{i}" for i in range(4)]
    wait_until("every element to end", lambda: all(
        state(r["job_id"]) in {"COMPLETED", "FAILED", "CANCELLED"} for r in runs),
        timeout=240, every=2)  # fmt: skip
    status = tsforge("jobs", "status", str(sweep), env=env).stdout
    assert status.count(": COMPLETED") == 4, status
    for num, r in enumerate(runs):
        final = json.loads((sweep / str(num) / "metrics.json").read_text())
        config = (sweep / str(num) / "config.yaml").read_text()
        assert final["steps"] == 40 and r["swept"][0].split("=")[1] in config


STUDY_DB = "mysql+pymysql:///?read_default_file=/etc/tsforge/study-db.cnf"


def test_tune_runs_trials_as_array_elements_prunes_and_keeps_the_study_in_mariadb(
        cluster, env, tmp_path):  # fmt: skip
    import optuna

    (tmp_path / "conf" / "search").mkdir(parents=True)
    (tmp_path / "conf" / "search" / "lr.yaml").write_text("""
metric: mse
params:
  optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
enqueue: [{optim.lr: 3.0e-3}, {optim.lr: 5.0e-3}, {optim.lr: 1.0e-9}]
pruner: median
startup_trials: 1
trials: 4
poll_s: 1
""")
    study_dir = tmp_path / "study"
    out = subprocess.run(
        [PY, "-m", "tsforge", "tune", "lr", "--config-dir", str(tmp_path / "conf"), "--study",
         str(study_dir), "--storage", STUDY_DB, "launcher=slurm", "launcher.array_parallelism=2",
         "model=dlinear", "trainer.max_steps=1500", "trainer.val_every_steps=50",
         "trainer.log_every_steps=10", "trainer.threads=1", "data.batch_size=64"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record = json.loads((study_dir / "study.json").read_text())
    assert record["storage"] == STUDY_DB and not (study_dir / "study.db").exists()
    study = optuna.load_study(study_name=record["study_name"], storage=STUDY_DB)
    try:
        trials = study.get_trials()
        states = [t.state for t in trials]
        job_ids = [t.user_attrs["job_id"] for t in trials]
        assert [t.number for t in trials] == [0, 1, 2, 3]
        # the first two trials are one array's elements; a slot freed later is refilled by a
        # batch of one (submitit submits a one-element array as a plain job)
        assert job_ids[:2] == [f"{job_ids[0].split('_')[0]}_{i}" for i in (0, 1)], job_ids
        assert all(re.fullmatch(r"\d+(_\d+)?", j) for j in job_ids[2:]), job_ids
        # the first trial to end completes (pruning waits for one complete trial); the other of
        # the two may complete or fall behind it and be pruned, as their finishing order decides
        complete, pruned_state = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
        assert complete in states[:2] and set(states[:2]) <= {complete, pruned_state}, out.stdout
        assert states[2] == pruned_state, out.stdout  # lr=1e-9 trails every trial at once
        pruned = json.loads((study_dir / "trials" / "2" / "metrics.json").read_text())
        assert pruned["pruned"] is True and pruned["steps"] < 1500
        assert state(job_ids[2]) == "COMPLETED"  # a pruned trial ends cleanly
        assert (study_dir / "conf" / "experiment" / "lr_tuned.yaml").is_file()
        for n in range(4):  # `tsforge jobs` knows each trial's job
            assert job_ids[n] in tsforge("jobs", "status", str(study_dir / "trials" / str(n)),
                                         env=env).stdout  # fmt: skip
    finally:
        optuna.delete_study(study_name=record["study_name"], storage=STUDY_DB)


def test_train_sbatch_runs_a_two_node_job(cluster, env, tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", f"--output={tmp_path}/%j.out",
         str(ROOT / "slurm/train.sbatch"), *SMALL, "trainer.max_steps=40",
         "trainer.val_every_steps=20"],
        env={**env, "RUN_DIR": str(run), "PYTHON": PY}, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    job = re.search(r"Submitted batch job (\d+)", out.stdout).group(1)
    log = (tmp_path / f"{job}.out").read_text()
    assert out.returncode == 0, log
    assert "2 node(s) x 1 task(s)" in log and "0: training nhits" in log  # srun --label
    assert json.loads((run / "meta.json").read_text())["world_size"] == 2
    assert json.loads((run / "metrics.json").read_text())["steps"] == 40


def test_train_sbatch_requeues_after_the_checkpoint_on_the_signal(cluster, env, tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        ["sbatch", f"--output={tmp_path}/%j.out", str(ROOT / "slurm/train.sbatch"), *SMALL,
         "trainer.max_steps=1000000"],
        env={**env, "RUN_DIR": str(run), "PYTHON": PY}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    job = re.search(r"Submitted batch job (\d+)", out.stdout).group(1)
    try:
        wait_until("training", lambda: train_losses(run), timeout=120, every=0.2)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # as at the time limit
        wait_until("the job back in the queue", lambda: state(job) == "PENDING", timeout=60)
        assert "checkpoint written: requeueing job" in (tmp_path / f"{job}.out").read_text()
        step = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"]
        assert step >= max(train_losses(run))  # written when it stopped, not before
    finally:
        subprocess.run(["scancel", job])


def test_sweep_sbatch_runs_every_line(cluster, env, tmp_path):
    overrides = tmp_path / "sweep.txt"
    small = " ".join([*SMALL, "trainer.max_steps=40", "trainer.val_every_steps=20"])
    overrides.write_text(f"trainer.seed=1 {small}\ntrainer.seed=2 {small}\n")
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        ["bash", str(ROOT / "slurm/sweep.sbatch"), str(overrides), str(sweep)],
        env={**env, "PYTHON": PY, "SBATCH_ARGS": f"--output={tmp_path}/%A_%a.out"},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    array = re.search(r"Submitted batch job (\d+)", out.stdout).group(1)
    jobs = [f"{array}_0", f"{array}_1"]
    wait_until("both elements to end", lambda: all(
        state(j) in {"COMPLETED", "FAILED", "CANCELLED"} for j in jobs), timeout=240, every=2)
    assert [state(j) for j in jobs] == ["COMPLETED", "COMPLETED"], [
        (tmp_path / f"{j}.out").read_text() for j in jobs]  # fmt: skip
    for num, seed in ((0, 1), (1, 2)):
        assert f"\n  seed: {seed}\n" in (sweep / str(num) / "config.yaml").read_text()
        assert (sweep / str(num) / "metrics.json").exists()


def test_tensorboard_sbatch_serves_the_runs_on_the_node_address_only(cluster, env, tmp_path):
    out = subprocess.run(["sbatch", f"--output={tmp_path}/tb.out",
                          str(ROOT / "slurm/tensorboard.sbatch"), str(tmp_path)],
                         env={**env, "PYTHON": PY}, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    job = re.search(r"Submitted batch job (\d+)", out.stdout).group(1)
    try:
        log = tmp_path / "tb.out"
        line = wait_until("the port-forward line", lambda: log.exists() and re.search(
            r"on (\S+) \(\S+\); .*\n  ssh -N -L (\d+):(\S+):\d+", log.read_text()),
            timeout=60)  # fmt: skip
        node, port, address = line.group(1), int(line.group(2)), line.group(3)
        assert address == NODES[node]  # the node's own address, which SLURM reaches it at

        def serves():
            try:
                with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as page:
                    return page.status == 200
            except OSError:
                return False

        wait_until("TensorBoard to answer", serves, timeout=90)
        assert listening(port, node) == [address]  # not on every interface of the node
    finally:
        subprocess.run(["scancel", job])


def test_requeued_job_resumes_to_max_steps_with_the_uninterrupted_losses(requeued, two_node_run):
    run, job = requeued["run"], requeued["job"]
    wait_until("the requeued job to end", lambda: state(job) in {"COMPLETED", "FAILED"},
               timeout=400, every=2)  # fmt: skip
    assert state(job) == "COMPLETED"
    meta = json.loads((run / "meta.json").read_text())
    (resume,) = meta["resumes"]
    assert 0 < resume["from_step"] < STEPS and resume["job_id"] == job
    assert json.loads((run / "metrics.json").read_text())["steps"] == STEPS
    reference = train_losses(two_node_run["run"])
    assert max(reference) == STEPS
    assert train_losses(run) == reference
