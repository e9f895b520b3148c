"""The `tsforge` command's error output: what reaches stderr when the machine fails.

    python -m pytest -q tests/unit/test_cli_errors.py
"""

from __future__ import annotations

import asyncio
import gc
import logging

from tsforge.cli.main import main


def _drop_a_failed_future() -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_exception(OSError(28, "No space left on device"))
        del future  # never awaited: asyncio reports it as the future is collected
        gc.collect()
    finally:
        loop.close()


def test_futures_left_failed_by_a_full_disk_print_no_traceback(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    main(["data", "list"])  # any command sets the filter
    caplog.clear()
    _drop_a_failed_future()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_other_asyncio_messages_still_pass(caplog):
    main(["data", "list"])
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
    assert any("destroyed" in r.getMessage() for r in caplog.records)
