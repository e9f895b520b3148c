"""Zero-shot evaluation and fine-tuning on tiny real runs: `tsforge evaluate RUN_DIR --data
NAME_OR_STORE --horizon H`, `--suite`, and `trainer.init_from`.

    python -m pytest -m integration tests/integration/test_zeroshot.py

Two tiny NHITS runs are trained once for the module: one with the quantile loss on a store of
two hourly series (`a.zarr`), one that reads a future-known covariate (`cov.zarr`). They are
scored on another store (`b.zarr`: three series, another cycle and level), on a store of three
channels (univariate windows: channels as series), and on their own store, where the zero-shot
path must give the run's own test metrics back (one split and scaling path). Fine-tuning starts
a run on `b.zarr` from the first run's weights: with lr 0 its checkpoint holds them exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tsforge.cli.main import main
from tsforge.models import MODELS
from tsforge.runs.evaluate import POINT_CRPS_LEVELS, _PointCrps

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
L, H = 48, 24
TINY = [
    f"data.input_size={L}", f"data.horizon={H}", "data.batch_size=32", "trainer.plot_series=0",
    "trainer.max_steps=6", "trainer.val_every_steps=3", "trainer.checkpoint_every_steps=3",
    "trainer.threads=1", "model.mlp_units=[[16,16],[16,16],[16,16]]",
]  # fmt: skip
SPLIT = '{"kind": "holdout", "horizon": 48}'


def write_long(path: Path, n_series: int, length: int, period: int, level: float,
               covariate: bool = False) -> None:  # fmt: skip
    rng = np.random.default_rng(n_series)
    t = np.arange(length)
    stamps = np.datetime_as_string(np.datetime64("2024-01-01T00:00") + t.astype("m8[h]"))
    lines = ["unique_id,ds,y" + (",x" if covariate else "")]
    for s in range(n_series):
        y = level + 3 * np.sin(2 * np.pi * t / period + s) + rng.normal(0, 0.3, length)
        x = np.cos(2 * np.pi * t / period)
        for i in range(length):
            row = f"s{s},{stamps[i].replace('T', ' ')},{y[i]:.4f}"
            lines.append(row + (f",{x[i]:.4f}" if covariate else ""))
    path.write_text("\n".join(lines) + "\n")


def write_wide(path: Path, length: int = 500) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(length)
    stamps = np.datetime_as_string(np.datetime64("2024-01-01T00:00") + t.astype("m8[h]"))
    lines = ["date,c0,c1,c2"]
    for i in range(length):
        vals = [5 * (c + 1) + np.sin(2 * np.pi * t[i] / 24 + c) + rng.normal(0, 0.2)
                for c in range(3)]  # fmt: skip
        lines.append(stamps[i].replace("T", " ") + "," + ",".join(f"{v:.4f}" for v in vals))
    path.write_text("\n".join(lines) + "\n")


def ingest(src: Path, out: Path, *extra: str, split: str = SPLIT) -> None:
    code = main(["data", "ingest", str(src), "--out", str(out), "--freq", "h", "--split", split,
                 *extra])  # fmt: skip
    assert code == 0


def launch(env, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tsforge.launch", *overrides]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The stores and the two trained runs, and the environment to launch in."""
    root = tmp_path_factory.mktemp("zeroshot")
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    write_long(root / "a.csv", 2, 600, 24, 10.0)
    write_long(root / "b.csv", 3, 400, 12, 50.0)
    write_long(root / "cov.csv", 2, 600, 24, 10.0, covariate=True)
    write_wide(root / "wide.csv")
    ingest(root / "a.csv", root / "a.zarr")
    ingest(root / "b.csv", root / "b.zarr")
    ingest(root / "cov.csv", root / "cov.zarr", "--futr-exog", "x")
    ingest(root / "wide.csv", root / "wide.zarr", "--format", "wide", "--time-col", "date")
    for name, store, extra in (("run", "a.zarr", ["loss.name=quantile"]),
                               ("covrun", "cov.zarr", [])):  # fmt: skip
        proc = launch(env, "data=store", f"data.path={root / store}", *TINY, *extra,
                      f"hydra.run.dir={root / name}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return root, env


def evaluate_json(capsys, *args) -> dict:
    capsys.readouterr()  # what came before (an ingest's summary) is not the report
    code = main(["evaluate", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_zero_shot_on_another_store_reports_the_interface_keys_and_writes_nothing(ws, capsys):
    root, _ = ws
    before = snapshot(root / "run")
    report = evaluate_json(capsys, root / "run", "--data", root / "b.zarr", "--horizon", H,
                           "--season", 12)  # fmt: skip
    assert snapshot(root / "run") == before
    for block in (report["test"], report["baseline"]["seasonal_naive"]):
        assert set(block) == {"mse", "mae", "mase", "crps"}
        assert all(math.isfinite(v) and v >= 0 for v in block.values()), block
    assert report["season"] == 12 and report["horizon"] == H and report["input_size"] == L
    # the seasonal naive with the right season is near perfect on these noisy sines
    assert report["baseline"]["seasonal_naive"]["mae"] < 1.0
    # a quantile model's CRPS is the evaluator's own over its levels
    assert report["test"]["crps"] == pytest.approx(report["model"]["scaled_crps"])


def test_zero_shot_on_its_own_store_gives_the_runs_test_metrics(ws, capsys):
    root, _ = ws
    report = evaluate_json(capsys, root / "run", "--data", root / "a.zarr", "--horizon", H,
                           "--season", 24)  # fmt: skip
    final = json.loads((root / "run" / "metrics.json").read_text())
    for key in ("mse", "mae", "mase"):
        assert report["test"][key] == pytest.approx(final["test"][key], rel=1e-6)
        naive = report["baseline"]["seasonal_naive"][key]
        assert naive == pytest.approx(final["baseline"]["seasonal_naive"][key], rel=1e-6)


def test_channels_of_a_wide_store_are_scored_as_univariate_series(ws, capsys):
    root, _ = ws
    report = evaluate_json(capsys, root / "run", "--data", root / "wide.zarr", "--horizon", H,
                           "--season", 24)  # fmt: skip
    # holdout 48 of one 500-row series: 48 - 24 + 1 test windows a channel, three channels
    assert report["windows"] == 3 * (48 - H + 1)
    assert math.isfinite(report["test"]["mase"])


def test_point_forecast_crps_is_the_absolute_error_over_the_absolute_truth():
    """Every quantile equal to the point forecast: at GIFT-Eval's symmetric levels, the
    level-averaged pinball loss is |e| / 2, so CRPS = sum |e| / sum |y|."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(4, 6, 2, generator=gen, dtype=torch.float64) + 3
    f = torch.randn(4, 6, 2, generator=gen, dtype=torch.float64) + 3
    mask = torch.ones_like(y)
    mask[0, :2] = 0
    crps = _PointCrps(POINT_CRPS_LEVELS, torch.device("cpu"))
    crps(f, y, mask, f + 1)
    model, naive = crps.result()
    observed = mask > 0
    want = ((f - y).abs()[observed].sum() / y.abs()[observed].sum()).item()
    assert model == pytest.approx(want, rel=1e-9)
    assert naive == pytest.approx(((f + 1 - y).abs()[observed].sum()
                                   / y.abs()[observed].sum()).item(), rel=1e-9)  # fmt: skip


def test_a_model_with_covariates_on_data_without_them_is_refused(ws, capsys):
    root, _ = ws
    own = evaluate_json(capsys, root / "covrun", "--data", root / "cov.zarr", "--horizon", H,
                        "--season", 24)  # fmt: skip
    assert math.isfinite(own["test"]["mae"])
    code = main(["evaluate", str(root / "covrun"), "--data", str(root / "b.zarr"),
                 "--horizon", str(H), "--season", "12"])  # fmt: skip
    assert code == 2
    assert "trained with covariates" in capsys.readouterr().err


def test_a_horizon_the_model_was_not_trained_for_is_refused(ws, capsys):
    root, _ = ws
    code = main(["evaluate", str(root / "run"), "--data", str(root / "b.zarr"), "--horizon",
                 "12", "--season", "12"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"model nhits was trained for horizon {H}; --horizon must be {H}" in err


@pytest.mark.parametrize("args, says", [
    (["--data", "b.zarr", "--horizon", "-3"], "argument --horizon: '-3' must be > 0"),
    (["--data", "b.zarr"], "--data needs --horizon H"),
    (["--horizon", "12"], "--horizon and --season go with --data"),
    (["--suite", "--data", "b.zarr"], "--suite and --data exclude each other"),
    (["--data", "b.zarr", "--horizon", "24", "--split", "val"], "score the test split"),
])  # fmt: skip
def test_usage_errors_are_one_line(ws, capsys, args, says):
    root, _ = ws
    args = [str(root / a) if a.endswith(".zarr") else a for a in args]
    assert main(["evaluate", str(root / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_the_suite_skips_datasets_whose_files_are_missing(ws, capsys, monkeypatch, tmp_path):
    """ILI (H=24) is evaluated from a data folder holding its file only; the rest are skipped."""
    root, _ = ws
    from tsforge.data import registry

    source = registry.data_dir()
    ili = registry.get("ILI").files[0].name
    if source is None or not (source / ili).is_file():
        pytest.skip(f"TSFORGE_DATA_DIR holds no {ili}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ili).symlink_to(source / ili)
    monkeypatch.setenv("TSFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TSFORGE_CACHE_DIR", str(tmp_path / "cache"))
    report = evaluate_json(capsys, root / "run", "--suite")
    rows = {row["data"]: row for row in report["datasets"]}
    assert report["evaluated"] == 1 and report["skipped"] == 5
    assert "files missing" in rows["ETTh1"]["skipped"]
    ili_row = rows["ILI"]
    naive = ili_row["baseline"]["seasonal_naive"]
    assert ili_row["relative"]["mase"] == pytest.approx(ili_row["test"]["mase"] / naive["mase"])
    assert report["geomean"]["mase"] == pytest.approx(ili_row["relative"]["mase"])


def test_the_suite_with_no_dataset_at_hand_is_refused(ws, capsys, monkeypatch, tmp_path):
    root, _ = ws
    monkeypatch.setenv("TSFORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TSFORGE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["evaluate", str(root / "run"), "--suite"]) == 2
    assert "no dataset of the suite could be evaluated" in capsys.readouterr().err


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_init_from_starts_from_the_weights_exactly_and_a_resume_ignores_it(ws):
    root, env = ws
    source = root / "init_source.pt"  # a copy: deleted below, after the first start
    shutil.copyfile(root / "run" / "checkpoints" / "best.pt", source)
    ft = root / "finetuned"
    common = ["data=store", f"data.path={root / 'b.zarr'}", *TINY, "loss.name=quantile",
              "optim.lr=0", f"trainer.init_from={source}", f"hydra.run.dir={ft}"]  # fmt: skip
    proc = launch(env, *common, "trainer.max_steps=1", "trainer.val_every_steps=0")
    assert proc.returncode == 0, proc.stderr
    got, want = model_state(ft / "checkpoints" / "latest.pt"), model_state(source)
    assert got.keys() == want.keys()
    for key in want:  # lr 0: the one step changed nothing, so these are the loaded weights
        assert torch.equal(got[key], want[key]), key
    meta = json.loads((ft / "meta.json").read_text())
    a_fingerprint = torch.load(source, weights_only=True)["fingerprint"]
    assert meta["init_from"] == {"path": str(source.resolve()), "step": 6,
                                 "fingerprint": a_fingerprint}  # fmt: skip

    source.unlink()  # a resume needs its own checkpoint only, not the weights it started from
    again = launch(env, *common, "trainer.max_steps=2", "trainer.val_every_steps=0")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is ignored: the run resumes from its own checkpoint") == 1


def test_init_from_a_model_of_other_shapes_is_refused_naming_the_parameter(ws):
    root, env = ws
    ft = root / "mismatch"
    proc = launch(env, "data=store", f"data.path={root / 'b.zarr'}", *TINY,
                  "model.mlp_units=[[8,8],[8,8],[8,8]]", f"trainer.init_from={root / 'run'}",
                  f"hydra.run.dir={ft}")  # fmt: skip
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    # the first block's MLP reads the max-pooled input (48 steps, kernel 2): 24 values
    assert "trainer.init_from=" in line and "parameter blocks.0.mlp.0.weight is [16, 24]" in line
    assert "[8, 24] in the model this config builds" in line
    assert not ft.exists()


@pytest.mark.skipif("patch_decoder" not in MODELS, reason="no patch_decoder model here")
def test_a_patch_decoder_trained_at_128_fine_tunes_and_evaluates_at_96(ws, capsys):
    root, env = ws
    base = ["model=patch_decoder", "data=store", "data.input_size=128", "data.batch_size=16",
            "trainer.max_steps=2", "trainer.val_every_steps=0", "trainer.plot_series=0",
            "trainer.threads=1"]  # fmt: skip
    proc = launch(env, *base, f"data.path={root / 'a.zarr'}", "data.horizon=128",
                  f"hydra.run.dir={root / 'pd128'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    write_wide(root / "long.csv", length=1500)
    ingest(root / "long.csv", root / "long.zarr", "--format", "wide", "--time-col", "date",
           split='{"kind": "holdout", "horizon": 128}')  # fmt: skip
    proc = launch(env, *base, f"data.path={root / 'long.zarr'}", "data.horizon=96",
                  f"trainer.init_from={root / 'pd128'}",
                  f"hydra.run.dir={root / 'pd96'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((root / "pd96" / "meta.json").read_text())["init_from"]["step"] == 2
    report = evaluate_json(capsys, root / "pd128", "--data", root / "long.zarr", "--horizon", 96,
                           "--season", 24)  # fmt: skip
    assert math.isfinite(report["test"]["mae"])
