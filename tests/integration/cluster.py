"""Shared by the tests that build and use the local SLURM cluster (test_ansible, test_slurm).

    from tests.integration.cluster import local_cluster, require_cluster_host, wait_until
    require_cluster_host()          # skips where no cluster can be built
    local_cluster("up")             # slurm/local-cluster.sh up; its output on failure
    wait_until("two idle nodes", lambda: idle_nodes() == 2, timeout=60)

The cluster's layout, as ansible/inventories/local describes it: two GPU nodes, each in its
own network and UTS namespace on the bridge tsforge0, and tsforge installed from its wheel in
a virtual environment on the shared folder (CLUSTER_PYTHON), which the jobs run from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import tsforge

ROOT = Path(__file__).resolve().parents[2]
STATE = Path("/var/lib/tsforge-cluster")
NODES = {"gpu-node01": "10.77.0.11", "gpu-node02": "10.77.0.12"}
CONTROLLER_ADDRESS = "10.77.0.1"
GPUS_PER_NODE = 2
CLUSTER_PYTHON = STATE / "shared" / "venvs" / f"tsforge-{tsforge.__version__}" / "bin" / "python"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmstepd")


def require_cluster_host() -> None:
    """Skip unless this host can run the local cluster: root, and SLURM or apt-get to get it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("no SLURM here and no apt-get to install it")


def local_cluster(command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`slurm/local-cluster.sh COMMAND`, which must succeed; its output is in the failure."""
    proc = subprocess.run(["bash", str(ROOT / "slurm/local-cluster.sh"), command],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"local-cluster.sh {command}:\n{proc.stdout[-6000:]}{proc.stderr}"
    return proc


def wait_until(what: str, check, timeout: float, every: float = 1.0, explain=None):
    """`check()`'s first truthy value, polled every `every` seconds; fails after `timeout`,
    with `explain()` (what the cluster says, say) in the message when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    detail = f": {explain()}" if explain else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def in_node(node: str, *cmd: str) -> subprocess.CompletedProcess:
    """A command run on a node: in its network namespace, as its slurmd and jobs run."""
    return subprocess.run(["ip", "netns", "exec", node, *cmd], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def listening(tcp_port: int, node: str | None = None) -> list[str]:
    """The local addresses with a TCP socket listening on the port (`ss`), on this host or
    on a node."""
    cmd = ["ss", "-Hltn", f"sport = :{tcp_port}"]
    out = (in_node(node, *cmd) if node else subprocess.run(cmd, capture_output=True, text=True))
    return sorted(line.split()[3].rsplit(":", 1)[0] for line in out.stdout.splitlines() if line)


def machine_state() -> dict[str, object]:
    """What `up` adds and `down` must take away again: network namespaces, links, mounts,
    /etc/hosts, device files and the cluster's daemons (TensorBoard by its port: other
    TensorBoards may run here)."""

    def lines(*cmd: str) -> list[str]:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()

    daemons = []
    for proc in Path("/proc").iterdir():
        try:
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if name in DAEMONS:
            daemons.append(name)
    devices = Path("/dev/tsforge-cluster")
    return {
        "netns": sorted(lines("ip", "netns", "list")),
        "links": sorted(re.sub(r"@.*", "", line.split(": ")[1]) for line in
                        lines("ip", "-o", "link", "show")),  # fmt: skip
        "addresses": sorted(line.split()[3] for line in lines("ip", "-o", "-4", "addr", "show")),
        "mounts": [line for line in lines("findmnt", "-rn", "-o", "TARGET") if "tsforge" in line],
        "hosts": Path("/etc/hosts").read_text(),
        "devices": sorted(str(p) for p in devices.rglob("*")) if devices.exists() else None,
        "daemons": sorted(daemons),
        "tensorboard": listening(6006),
    }
