"""Waiting for a cluster or a job to reach a state, for the integration tests.

    from tests.integration.polling import wait_until
    wait_until("two idle nodes", lambda: idle_nodes() == 2, timeout=60)
"""

from __future__ import annotations

import time


def wait_until(what: str, check, timeout: float, every: float = 1.0):
    """`check()`'s first truthy value, polled every `every` seconds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
