"""The Ansible playbooks (ansible/): lint, syntax, validation, rendered GPU configs, and the
real run that provisions this machine's test cluster (the one test_slurm.py uses).

    pytest tests/integration/test_ansible.py     # 3-7 minutes; more on a bare machine
    TSFORGE_UPDATE_GOLDEN=1 pytest tests/integration/test_ansible.py -k golden   # re-record

ansible-lint (production profile) and yamllint must be clean; both inventories pass
`--syntax-check`; the example inventory (4 GPU nodes x 8 A100) renders slurm.conf, gres.conf
and cgroup.conf equal to tests/integration/golden/example/; bad inventories stop in the
validation play, with their message, before any host is touched. The real run needs root (it
installs packages, makes network namespaces and starts daemons) and is skipped otherwise: it
starts from a machine without the cluster (`local-cluster.sh down`) and brings it up with
`local-cluster.sh up` (the namespaced hosts, tsforge's wheel, the playbook). Afterwards both
GPU nodes are idle, each with its own hostname, address and GPUs; a 2-node job runs one task
on each and `sacct` reports it COMPLETED; tsforge is the wheel, in the cluster's environment;
TensorBoard listens on 127.0.0.1 only; the study database of `tsforge tune` is reached through
its client file (mode 0640) with SQLAlchemy and PyMySQL, takes a table and sees nothing of the
accounting database; a second `up` rebuilds nothing, its playbook reports changed=0 (the study
database's user is checked, not made again) and every daemon keeps running; the node health
check drains a node with its reason and returns it to service. Last, `down` twice leaves the
machine as it was before (namespaces, links, /etc/hosts, device files, daemons);
test_slurm.py brings the cluster up again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.cluster import (
    CLUSTER_PYTHON,
    CONTROLLER_ADDRESS,
    GPUS_PER_NODE,
    NODES,
    STATE,
    in_node,
    listening,
    local_cluster,
    machine_state,
    require_cluster_host,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
GOLDEN = Path(__file__).resolve().parent / "golden" / "example"
PIDFILES = ["run/slurmdbd.pid", "run/slurmctld.pid", "run/tensorboard.pid",
            *(f"run/slurmd-{node}.pid" for node in NODES)]  # fmt: skip
ENV = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1",
       "PY_COLORS": "0"}  # fmt: skip


def tool(name: str) -> str:
    """A command of the dev extras, from this Python's environment first."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the dev extras, pip install -e '.[dev]'"
    return found


def run(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=timeout)  # fmt: skip


def playbook(inventory: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return run(tool("ansible-playbook"), "-i", str(ANSIBLE / "inventories" / inventory),
               str(ANSIBLE / "site.yml"), *args, timeout=timeout)  # fmt: skip


def recap(out: str) -> dict[str, int]:
    """The PLAY RECAP counts of the (single) host."""
    match = re.search(r"^\S+\s+:\s+(ok=.*)$", out.split("PLAY RECAP")[-1], re.M)
    assert match, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


# -- static checks ------------------------------------------------------------------------------
def test_yamllint_is_clean():
    proc = run(tool("yamllint"), "-s", "ansible", ".yamllint", ".ansible-lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile_is_clean():
    proc = run(tool("ansible-lint"), "--offline", "--profile", "production", "ansible")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


@pytest.mark.parametrize("inventory", ["local", "example"])
def test_syntax_check(inventory):
    proc = playbook(inventory, "--syntax-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_inventory_passes_validation_offline():
    # The validation play contacts no host: the example's hosts do not exist.
    proc = playbook("example", "--tags", "validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "unreachable=1" not in proc.stdout and "gpu04" in proc.stdout


@pytest.mark.parametrize("name", ["slurm.conf", "gres.conf", "cgroup.conf"])
def test_example_inventory_renders_golden_gpu_configs(tmp_path, name):
    proc = run(tool("ansible-playbook"), "-i", str(ANSIBLE / "inventories/example"),
               str(ANSIBLE / "render.yml"), "-e", f"render_dir={tmp_path}")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rendered = (tmp_path / name).read_text()
    if os.environ.get("TSFORGE_UPDATE_GOLDEN"):
        (GOLDEN / name).write_text(rendered)
    assert rendered == (GOLDEN / name).read_text(), f"{name} differs from {GOLDEN / name}"


def test_golden_gpu_configs_say_what_the_issue_asks():
    slurm_conf = (GOLDEN / "slurm.conf").read_text()
    for line in ["SelectType=select/cons_tres", "GresTypes=gpu", "JobRequeue=1",
                 "SlurmctldParameters=preempt_send_user_signal",
                 "ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup,task/affinity",
                 "PartitionName=cpu Nodes=gpu01,gpu02,gpu03,gpu04"]:  # fmt: skip
        assert line in slurm_conf, line
    nodes = re.findall(r"^NodeName=(gpu0\d) .*Gres=gpu:a100:8 ", slurm_conf, re.M)
    assert nodes == ["gpu01", "gpu02", "gpu03", "gpu04"]
    gres_conf = (GOLDEN / "gres.conf").read_text()
    gres = re.findall(r"^NodeName=(\S+) Name=gpu Type=a100 File=/dev/nvidia\[0-7\]$", gres_conf,
                      re.M)  # fmt: skip
    assert gres == nodes and "\nAutoDetect=off\n" in gres_conf
    cgroup = (GOLDEN / "cgroup.conf").read_text()
    assert all(f"{k}=yes" in cgroup for k in ["ConstrainCores", "ConstrainRAMSpace",
                                              "ConstrainDevices"])  # fmt: skip


# -- validation stops before any host is touched -----------------------------------------------
@pytest.mark.parametrize(
    "inventory,extra_vars,message",
    [
        # A node with no GPUs but a gpu Gres: the local inventory, this very host.
        ("local", '{"slurm_node_gres": "gpu:a100:8"}',
         "remove the gpu entry from slurm_node_gres and set slurm_node_gpus"),
        # A host of the GPU group that declares no GPUs.
        ("example", '{"slurm_node_gpus": 0}',
         "is in the slurm_gpu group but declares 0 GPUs: set slurm_node_gpus"),
        # Several nodes on one host, with fewer addresses than nodes.
        ("local", '{"slurm_node_addresses": ["10.77.0.11"]}', "one address per name"),
        # A wheel that is not a path to a .whl file.
        ("local", '{"tsforge_wheel": "tsforge.tar.gz"}', "the absolute path of a .whl file"),
    ],
)  # fmt: skip
def test_validation_failure_stops_before_touching_the_host(inventory, extra_vars, message):
    conf = Path("/etc/slurm/slurm.conf")
    before = conf.stat().st_mtime_ns if conf.exists() else None
    proc = playbook(inventory, "-e", extra_vars, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in " ".join(out.split()), out  # the message, whatever its line breaks
    # Only the validation play ran: no facts gathered, no role applied.
    assert "PLAY [Validate the inventory" in out and "PLAY [Base system" not in out, out
    assert "TASK [Gather facts]" not in out, out
    assert (conf.stat().st_mtime_ns if conf.exists() else None) == before


# -- the real run: this machine's test cluster -------------------------------------------------
def sinfo_states() -> dict[str, str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return dict(line.split() for line in out.splitlines() if line.strip())


def pids() -> dict[str, str]:
    return {p: (STATE / p).read_text().strip() for p in PIDFILES if (STATE / p).exists()}


IDLE = dict.fromkeys(NODES, "idle")


@pytest.fixture(scope="module")
def provisioned():
    """The cluster brought up from a machine without it; the machine's state before."""
    require_cluster_host()
    local_cluster("down")
    before = machine_state()
    started = time.monotonic()
    up = local_cluster("up")
    return {"out": up.stdout, "seconds": time.monotonic() - started, "before": before}


def test_run_leaves_two_idle_gpu_nodes_each_a_host_of_its_own(provisioned):
    assert "PLAY RECAP" in provisioned["out"] and recap(provisioned["out"])["failed"] == 0
    wait_until("both nodes idle", lambda: sinfo_states() == IDLE, timeout=120)
    for node, address in NODES.items():
        info = subprocess.run(["scontrol", "show", "node", node], capture_output=True,
                              text=True).stdout  # fmt: skip
        assert f"NodeAddr={address} " in info and f"Gres=gpu:virtual:{GPUS_PER_NODE}" in info
        # The node's own hostname and address, in its namespaces (as its jobs see them).
        uts = f"--uts=/run/tsforge-cluster/uts/{node}"
        seen = subprocess.run(["nsenter", f"--net=/run/netns/{node}", uts, "sh", "-c",
                               "hostname; ip -4 -o addr show dev eth0; getent hosts $(hostname)"],
                              capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert seen.splitlines()[0] == node, seen
        assert f" {address}/24 " in seen and seen.splitlines()[-1].split()[0] == address
        devices = sorted(p.name for p in Path(f"/dev/tsforge-cluster/{node}").iterdir())
        assert devices == [f"nvidia{i}" for i in range(GPUS_PER_NODE)]
    gres = Path("/etc/slurm/gres.conf").read_text()
    assert "AutoDetect=off" in gres
    assert re.findall(r"^NodeName=(\S+) Name=gpu Type=virtual File=(\S+)$", gres, re.M) == [
        (node, f"/dev/tsforge-cluster/{node}/nvidia[0-1]") for node in NODES]  # fmt: skip
    # The controller answers the nodes on the bridge, and nothing else leaves it.
    assert in_node("gpu-node01", "ip", "route").stdout.strip() == (
        f"{CONTROLLER_ADDRESS.rsplit('.', 1)[0]}.0/24 dev eth0 proto kernel scope link "
        f"src {NODES['gpu-node01']}")  # fmt: skip


def test_two_node_job_runs_on_both_hosts_and_sacct_reports_it(provisioned, tmp_path):
    # Only records from now on: the accounting database may hold older jobs with this id.
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    sub = subprocess.run(["sbatch", "--parsable", "-N", "2", "-n", "2", "-p", "debug",
                          f"--output={tmp_path}/job.out", "--wrap", "srun hostname"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]

    def accounted() -> str | None:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-S", since,
                              "-o", "State,NNodes"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        return out if out and not out.startswith(("PENDING", "RUNNING", "COMPLETING")) else None

    assert wait_until(f"job {job} in sacct", accounted, timeout=180) == "COMPLETED|2"
    assert sorted((tmp_path / "job.out").read_text().split()) == sorted(NODES)  # their names


def test_tsforge_is_the_wheel_in_the_cluster_environment(provisioned):
    (wheel,) = (STATE / "wheels").glob("tsforge-*.whl")
    venv = CLUSTER_PYTHON.parents[1]
    found = subprocess.run([str(CLUSTER_PYTHON), "-c", "import tsforge; print(tsforge.__file__)"],
                           capture_output=True, text=True, cwd="/", timeout=60)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(str(venv)), found.stdout  # installed there, not the checkout
    recorded = (venv / "tsforge-wheel.sha256").read_text().strip()
    assert recorded == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_tensorboard_listens_on_loopback_only(provisioned):
    assert listening(6006) == ["127.0.0.1"]  # what the role's README says: reach it by ssh -L
    with urllib.request.urlopen("http://127.0.0.1:6006/", timeout=10) as page:
        assert page.status == 200


STUDY_DB_FILE = Path("/etc/tsforge/study-db.cnf")
# What tsforge tune connects with: no host in the URL, so PyMySQL takes the file's.
STUDY_DB_URL = f"mysql+pymysql:///?read_default_file={STUDY_DB_FILE}"


def test_study_database_takes_a_table_through_its_client_file_and_no_more(provisioned):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("pymysql")
    info = STUDY_DB_FILE.stat()
    # Owner root, group the inventory's tsforge_study_db_client_group (root by default).
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, 0)
    accounting = subprocess.run(["mysql", "-N", "-e", "SHOW DATABASES LIKE 'slurm_acct_db'"],
                                capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert accounting.split() == ["slurm_acct_db"]  # there, so a refusal below is a refusal
    table = f"tsforge_test_{os.getpid()}"
    engine = sqlalchemy.create_engine(STUDY_DB_URL)
    text = sqlalchemy.text
    try:
        with engine.begin() as db:
            assert db.execute(text("SELECT DATABASE()")).scalar() == "tsforge_studies"
            db.execute(text(f"CREATE TABLE {table} (id INT PRIMARY KEY)"))
            db.execute(text(f"INSERT INTO {table} VALUES (1)"))
            assert db.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 1
            db.execute(text(f"DROP TABLE {table}"))
        with engine.connect() as db:
            seen = {row[0] for row in db.execute(text("SHOW DATABASES"))}
            assert seen == {"information_schema", "tsforge_studies"}, seen
            for statement in ["USE slurm_acct_db", "SELECT * FROM slurm_acct_db.acct_table"]:
                with pytest.raises(sqlalchemy.exc.DBAPIError, match="denied"):
                    db.execute(text(statement))
    finally:
        engine.dispose()


def test_second_run_changes_nothing_and_keeps_the_cluster_running(provisioned):
    """`up` again: the wheel is not rebuilt, and the playbook reports changed=0."""
    before = pids()
    assert len(before) == len(PIDFILES), before
    again = local_cluster("up")
    assert "built tsforge" not in again.stdout
    counts = recap(again.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, again.stdout[-6000:]
    # The study database's tasks ran: its user was checked and found, not made again.
    assert re.search(r"TASK \[tsforge : Check the study database and its user\].*\nok: ",
                     again.stdout), again.stdout[-6000:]  # fmt: skip
    assert re.search(r"TASK \[tsforge : Create the study database and its user\].*\nskipping: ",
                     again.stdout), again.stdout[-6000:]  # fmt: skip
    assert pids() == before  # no daemon was restarted
    assert set(sinfo_states().values()) <= {"idle", "mix", "alloc"}


def test_health_check_drains_a_bad_node_with_its_reason_and_resumes_it(provisioned):
    check = "/usr/local/sbin/tsforge-node-health"
    shared = STATE / "shared"
    moved = STATE / "shared.moved-by-test"
    env = {**os.environ, "SLURMD_NODENAME": "gpu-node02"}
    shared.rename(moved)
    try:
        assert subprocess.run([check, "--check"], capture_output=True).returncode == 1
        subprocess.run([check], env=env, check=True, timeout=60)
        reason = subprocess.run(["sinfo", "-h", "-n", "gpu-node02", "-o", "%t|%E"],
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert reason.startswith("drain") and "tsforge-health:" in reason, reason
        assert f"{shared} missing" in reason, reason
    finally:
        moved.rename(shared)
        for node in NODES:  # the periodic check may have run in between, on either
            subprocess.run([check], env={**os.environ, "SLURMD_NODENAME": node}, timeout=60)
    wait_until("both nodes idle again", lambda: sinfo_states() == IDLE, timeout=60)


def test_down_twice_leaves_the_machine_as_it_was(provisioned):
    """Last: `down` takes away all that `up` made, and a second `down` changes nothing."""
    assert machine_state() != provisioned["before"]  # the cluster is there
    local_cluster("down")
    assert machine_state() == provisioned["before"]
    local_cluster("down")
    assert machine_state() == provisioned["before"]
