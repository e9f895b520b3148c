"""Shared by the tests that build and use the local SLURM cluster (test_ansible, test_slurm).

    from tests.integration.cluster import require_cluster_host, wait_until
    require_cluster_host()          # skips where no cluster can be built
    wait_until("two idle nodes", lambda: idle_nodes() == 2, timeout=60)
"""

from __future__ import annotations

import os
import shutil
import time

import pytest


def require_cluster_host() -> None:
    """Skip unless this host can run the local cluster: root, and SLURM or apt-get to get it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("no SLURM here and no apt-get to install it")


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
