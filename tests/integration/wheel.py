"""A wheel of this checkout, built as a user builds it, for the tests that install it.

    from tests.integration.wheel import build_wheel, fresh_venv
    wheel = build_wheel(tmp / "dist")          # python -m build --wheel, from a clean copy
    python = fresh_venv(tmp / "venv", wheel)   # a new virtualenv with torch and the wheel

The copy holds what git tracks and what it does not ignore, as a clean clone would (with
uncommitted changes), so the build never writes into the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"  # the CPU build; GPU users install their CUDA build first


def clean_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def build_wheel(dist: Path) -> Path:
    """`python -m build --wheel` of a clean copy; the path of the wheel."""
    src = clean_copy(dist.parent / "src")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist),
                           str(src)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = dist.glob("tsforge-*.whl")
    return wheel


def fresh_venv(venv: Path, wheel: Path) -> Path:
    """A new virtualenv (no system packages) with torch and the wheel; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH, str(wheel)],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python
