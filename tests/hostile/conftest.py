"""The seed workspace of the hostile-input suite, made once per session, copied per case.

    seed/
      data.csv      long CSV: 3 hourly series (a, b, c) of 300 rows: unique_id, ds, y
      store.zarr    that CSV ingested, with a holdout split of 24 steps
      run/          a tiny NHITS trained for 4 steps on store.zarr (relative paths: cases run
                    with the workspace as their folder)

`workspace` is a private copy of it for one case; cases name its files as {data.csv},
{store.zarr}, {run} (see harness.py). The built-in synthetic dataset is built once into a
cache shared by the session (TSFORGE_CACHE_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.harness import unmount_under

pytestmark = pytest.mark.integration

H = 12
TINY_RUN = [
    "data=store", "data.path=store.zarr", "data.input_size=24", f"data.horizon={H}",
    "data.season=24", "data.batch_size=32", "trainer.max_steps=4", "trainer.val_every_steps=2",
    "trainer.checkpoint_every_steps=2", "trainer.plot_series=0",
    "model.mlp_units=[[16,16],[16,16],[16,16]]",
]  # fmt: skip


def write_csv(path: Path, n_series: int = 3, length: int = 300, step_min: int = 60) -> None:
    """Series a, b, c... of `length` rows, `step_min` minutes apart (hourly by default);
    vectorised, as cases also write big ones."""
    rng = np.random.default_rng(0)
    t = np.arange(length)
    stamps = (np.datetime64("2024-01-01T00:00", "m") + t * step_min).astype(str)
    stamps = np.char.replace(stamps, "T", " ")
    lines = ["unique_id,ds,y"]
    for s in range(n_series):
        y = 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, length)
        values = np.char.mod("%.4f", y)
        lines += np.char.add(np.char.add(f"{'abc'[s]},", stamps), np.char.add(",", values)).tolist()
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def seed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-seed")
    cache = root.parent / "hostile-cache"
    os.environ["TSFORGE_CACHE_DIR"] = str(cache)
    write_csv(root / "data.csv")
    cli = [sys.executable, "-m", "tsforge", "data", "ingest", "data.csv", "--out",
           "store.zarr", "--split", '{"kind": "holdout", "horizon": 24}']  # fmt: skip
    proc = subprocess.run(cli, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    launch = [sys.executable, "-m", "tsforge.launch", *TINY_RUN, "hydra.run.dir=run"]
    proc = subprocess.run(launch, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def workspace(seed, tmp_path) -> Path:
    """A private copy of the seed workspace for one case; what its case mounted in it is
    unmounted afterwards."""
    ws = tmp_path / "ws"
    shutil.copytree(seed, ws, symlinks=True)
    yield ws
    unmount_under(ws)
