"""Rows input to training, as users run it: `tsforge data ingest --format rows`, then
`python -m tsforge.launch data=store ... data.split=holdout:H`, in real processes; and the
first rows of the real M4 Hourly train file (skipped when TSFORGE_DATA_DIR lacks it).

    pytest tests/integration/test_ingest_rows.py
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsforge.data.store import Store

pytestmark = pytest.mark.integration

H = 6
TINY = [
    "data=store", "data.input_size=12", f"data.horizon={H}", "data.season=12",
    "data.batch_size=16", "trainer.max_steps=4", "trainer.val_every_steps=2",
    "trainer.plot_series=0", "trainer.threads=1", "model.mlp_units=[[16,16],[16,16],[16,16]]",
]  # fmt: skip


def tsforge(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default", "TSFORGE_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "tsforge", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def launch(*overrides, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default", "TSFORGE_CACHE_DIR": str(cwd / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", *TINY, *overrides]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def ragged_csv(path: Path, lengths: list[int]) -> None:
    """Seasonal series of the given lengths, one per row, padded with empty cells."""
    rng = np.random.default_rng(3)
    width = max(lengths)
    lines = [",".join(["id"] + [f"V{k + 2}" for k in range(width)])]
    for i, n in enumerate(lengths):
        t = np.arange(n)
        y = 20 + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, n)
        lines.append(",".join([f"s{i}", *(f"{v:.3f}" for v in y), *[""] * (width - n)]))
    path.write_text("\n".join(lines) + "\n")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_rows_ingest_then_train_with_holdout_chosen_at_launch(tmp_path):
    lengths = [60, 45, 80, 52]
    ragged_csv(tmp_path / "rows.csv", lengths)
    done = tsforge("data", "ingest", "rows.csv", "--out", "rows.zarr", "--format", "rows",
                   "--id-col", "id", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = Store(tmp_path / "rows.zarr")
    assert sorted(store.lengths.tolist()) == sorted(lengths) and store.splits == {}

    # the same split written as holdout:H and as a spec: the same validation windows
    spec = f"{{kind: holdout, horizon: {H}, test: 0}}"
    for run, split in (("run", f"holdout:{H}"), ("spec", spec)):
        done = launch("data.path=rows.zarr", f"data.split={split}", f"hydra.run.dir={run}",
                      cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "without validation" not in done.stderr
    val = {run: [{k: v for k, v in r.items() if k.startswith(("step", "val/"))}
                 for r in records(tmp_path / run) if "val/mae" in r] for run in ("run", "spec")}
    assert [r["step"] for r in val["run"]] == [2, 4]
    assert all(np.isfinite(r["val/mae"]) for r in val["run"])
    assert val["run"] == val["spec"]
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["best_val"] is not None


def test_without_a_split_it_trains_without_validation_and_says_so(tmp_path):
    ragged_csv(tmp_path / "rows.csv", [60, 45])
    assert tsforge("data", "ingest", "rows.csv", "--out", "rows.zarr", "--format", "rows",
                   cwd=tmp_path).returncode == 0  # fmt: skip
    done = launch("data.path=rows.zarr", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not [r for r in records(tmp_path / "run") if "val/mae" in r]
    notes = [line for line in done.stderr.splitlines() if "validation" in line]
    assert len(notes) == 1 and "data.split" in notes[0]


@pytest.mark.parametrize(
    "split, says",
    [
        ("holdout:0", "H in holdout:H must be a whole number"),
        ("holdout:two", "H in holdout:H must be a whole number"),
        ("last_48", "unknown split preset .* holdout:H"),
        ("{kind: holdout}", "needs the key 'horizon'"),
    ],
)
def test_a_bad_split_at_launch_exits_2_before_any_run_directory(tmp_path, split, says):
    ragged_csv(tmp_path / "rows.csv", [60, 45])
    assert tsforge("data", "ingest", "rows.csv", "--out", "rows.zarr", "--format", "rows",
                   cwd=tmp_path).returncode == 0  # fmt: skip
    done = launch("data.path=rows.zarr", f"data.split={split}", "hydra.run.dir=run",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(rf"data\.split '.*'.*{says}", lines[0]), lines
    assert not (tmp_path / "run").exists()


def test_ingest_split_takes_holdout_colon(tmp_path):
    ragged_csv(tmp_path / "rows.csv", [30, 20])
    done = tsforge("data", "ingest", "rows.csv", "--out", "rows.zarr", "--format", "rows",
                   "--split", "holdout:5", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Store(tmp_path / "rows.zarr").splits == {"kind": "holdout", "horizon": 5, "test": 0}


def test_duplicate_ids_exit_2_with_one_line(tmp_path):
    (tmp_path / "dup.csv").write_text("id,V2,V3\na,1,2\nb,3,\na,4,5\n")
    done = tsforge("data", "ingest", "dup.csv", "--out", "d.zarr", "--format", "rows",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tsforge: error: dup.csv rows 1 and 3 both hold series 'a': one row per series; "
        "remove or rename one of them"
    ]
    assert not (tmp_path / "d.zarr").exists()


def test_first_rows_of_m4_hourly(tmp_path):
    src = Path(os.environ.get("TSFORGE_DATA_DIR", "")) / "m4" / "Hourly-train.csv"
    if not os.environ.get("TSFORGE_DATA_DIR") or not src.is_file():
        pytest.skip("TSFORGE_DATA_DIR has no m4/Hourly-train.csv")
    with open(src, newline="") as f:
        head = [next(f) for _ in range(51)]  # the header and 50 series
    (tmp_path / "h50.csv").write_text("".join(head))
    want = {}
    for cells in csv.reader(head[1:]):
        values = [c for c in cells[1:] if c != ""]
        assert cells[1 : 1 + len(values)] == values  # M4 pads only at the end
        want[cells[0]] = np.array(values, dtype=np.float64)
    done = tsforge("data", "ingest", "h50.csv", "--out", "h50.zarr", "--format", "rows",
                   "--id-col", "V1", "--split", "holdout:48", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = Store(tmp_path / "h50.zarr")
    assert store.n_series == 50 and store.time_unit == "index"
    got = {str(uid): store.series_values(i)[:, 0] for i, uid in enumerate(store.ids)}
    assert sorted(got) == sorted(want)
    for uid, values in want.items():
        assert len(got[uid]) == len(values), uid
        np.testing.assert_allclose(got[uid], values, rtol=1e-6)
