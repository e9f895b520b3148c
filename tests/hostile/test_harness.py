"""The harness catches what it promises to catch (each check can fail).

    python -m pytest tests/hostile/test_harness.py
"""

from __future__ import annotations

import pytest

from tests.hostile.harness import Case, check, compare

pytestmark = pytest.mark.integration

INFO = ["data", "info", "{store.zarr}"]


def test_a_good_case_passes(workspace):
    check(Case("info", INFO, code=0), workspace)


@pytest.mark.parametrize("case,message", [
    (Case("wrong-code", ["data", "info", "{nothing.zarr}"], code=0), "exit 2"),
    (Case("wrong-line", ["data", "info", "{nothing.zarr}"], code=2, says="no such words"),
     "does not match"),
    (Case("after", INFO, code=0, after=lambda ws: pytest.fail("after ran")), "after ran"),
    (Case("note", INFO, code=0, says="a note never written"), "no note"),
], ids=str)  # fmt: skip
def test_a_broken_promise_fails(workspace, case, message):
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        check(case, workspace)


@pytest.mark.parametrize("before,after,case,message", [
    ({"a": (1, 1)}, {}, Case("x", [], 0), "a was removed"),
    ({"a": (1, 1)}, {"a": (2, 1)}, Case("x", [], 0), "a was changed"),
    ({}, {"out.zarr": (-1, 0)}, Case("x", [], 0), "out.zarr was created"),
    ({}, {".f.pt.tmp-12": (3, 1)}, Case("x", [], 0, creates=["*"]), "left behind"),
], ids=["removed", "changed", "created", "temporary"])  # fmt: skip
def test_compare_catches(before, after, case, message):
    with pytest.raises(AssertionError, match=message):
        compare(case, before, after)


def test_compare_allows_what_the_case_names():
    compare(Case("x", [], 0, changes=["run/*"], creates=["new.csv"]),
            {"run": (-1, 0), "run/a": (1, 1)}, {"run": (-1, 0), "new.csv": (5, 5)})
