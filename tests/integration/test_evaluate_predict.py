"""`tsforge evaluate` and `tsforge predict` on a real run, trained once for the module.

The run is a tiny NHITS with the quantile loss on the built-in synthetic data (hourly series
with a future-known calendar covariate and a static one), trained with data.min_input_size=48
(input_size 96). Evaluate must give the run's own metrics.json back; predict must forecast the
steps after each series' last target, in the data's units and Nixtla's column names, equal to
what the evaluator gives on the same windows (one scaling path), and forecast every series
or refuse naming those it cannot.

    python -m pytest -m integration tests/integration/test_evaluate_predict.py
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
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from tsforge.cli.main import main
from tsforge.data.store import Store
from tsforge.runs.evaluate import evaluate_run
from tsforge.runs.load import load_run
from tsforge.runs.predict import predict
from tsforge.train import builders

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
H = 24  # the synthetic data config's horizon
# the point forecast, then quantiles 0.1, 0.5, 0.9 of the loss as Nixtla names them
COLUMNS = ["unique_id", "ds", "nhits", "nhits-lo-80", "nhits-median", "nhits-hi-80"]
MIN_INPUT = 48  # data.min_input_size: series down to 48 rows are left-padded to 96
TINY = [
    "trainer.max_steps=10", "trainer.val_every_steps=5", "trainer.plot_series=0",
    "model.mlp_units=[[32,32],[32,32],[32,32]]", "loss.name=quantile",
    f"data.min_input_size={MIN_INPUT}",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run_dir, environment) of a tiny trained run; the cache holds its synthetic store."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = root / "run"
    env = {**os.environ, "TSFORGE_CACHE_DIR": str(root / "cache")}
    cmd = [sys.executable, "-m", "tsforge.launch", *TINY, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    with pytest.MonkeyPatch.context() as mp:  # in-process calls find the same store
        mp.setenv("TSFORGE_CACHE_DIR", env["TSFORGE_CACHE_DIR"])
        yield run_dir, env


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "tsforge", *map(str, args)],
        env={**env, "PYTHONWARNINGS": "default"}, capture_output=True, text=True, timeout=300,
        cwd=REPO,
    )  # fmt: skip


def store_of(run_dir: Path) -> Store:
    return load_run(run_dir).store


def write_input(store: Store, path: Path, *, blank_last: int = H, cut: dict | None = None,
                drop: tuple[str, ...] = ()) -> None:
    """The store as long CSV input (`unique_id, ds, y, hour_of_day, log_level`), with the
    target blanked in each series' last `blank_last` rows (its future covariates stay), and
    the series in `cut` shortened to their last `cut[id]` rows."""
    values = store.values[:]
    lengths = store.lengths
    ids = np.repeat(store.ids.astype(object), lengths)
    offset = np.arange(store.n_timesteps) - np.repeat(store.indptr[:-1], lengths)
    ds = np.repeat(store.starts, lengths) + offset * 3600 * 10**9
    y = values[:, 0].copy()
    y[offset >= np.repeat(lengths - blank_last, lengths)] = np.nan
    keep = np.ones(len(y), bool)
    for uid, rows in (cut or {}).items():
        keep &= ~((ids == uid) & (offset < np.repeat(lengths, lengths) - rows))
    table = pa.table({
        "unique_id": pa.array(ids[keep], pa.string()),
        "ds": pa.array(ds[keep].astype("M8[ns]")).cast(pa.timestamp("s")),
        "y": pa.array(y[keep], from_pandas=True),
        "hour_of_day": values[keep, 1],
        "log_level": np.repeat(store.static[:, 0], lengths)[keep],
    })  # fmt: skip
    pacsv.write_csv(table.drop_columns(list(drop)), path)


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_json_is_the_runs_test_metrics(run):
    run_dir, env = run
    proc = cli(env, "evaluate", run_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    final = json.loads((run_dir / "metrics.json").read_text())
    assert report["split"] == "test" and report["checkpoint"] == "best"
    assert report["step"] in (5, 10)
    for got, want in ((report["model"], final["test"]),
                      (report["seasonal_naive"], final["baseline"]["seasonal_naive"])):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # complete windows: every step has the same count, so the mean of steps is the total
    for who, overall in (("model", report["model"]), ("seasonal_naive", report["seasonal_naive"])):
        for metric in ("mae", "mse"):
            steps = report["per_step"][who][metric]
            assert len(steps) == H and all(math.isfinite(v) for v in steps)
            assert np.mean(steps) == pytest.approx(overall[metric], rel=1e-9)


def test_evaluate_tables_and_other_split(run, capsys):
    run_dir, _ = run
    assert main(["evaluate", str(run_dir), "--split", "val", "--checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    assert "latest checkpoint (step 10), val split" in out
    assert "seasonal_naive" in out and "per horizon step" in out
    step_rows = out.split("per horizon step")[1].strip().splitlines()[1:]
    assert [int(r.split()[0]) for r in step_rows] == list(range(1, H + 1))


def test_evaluate_best_on_val_is_the_best_validation(run):
    run_dir, _ = run
    report = evaluate_run(load_run(run_dir, "best"), "val")
    best_val = json.loads((run_dir / "metrics.json").read_text())["best_val"]
    assert report["model"]["mae"] == pytest.approx(best_val["mae"], rel=1e-9)


# ------------------------------------------------------------------------------- predict
def test_predict_csv_and_parquet(run, tmp_path):
    run_dir, env = run
    store = store_of(run_dir)
    src = tmp_path / "input.csv"
    write_input(store, src)
    csv_out, pq_out = tmp_path / "out" / "f.csv", tmp_path / "out" / "f.parquet"
    csv_out.parent.mkdir()
    proc = cli(env, "predict", run_dir, "--input", src, "--output", csv_out)
    assert proc.returncode == 0, proc.stderr
    assert f"{store.n_series * H:,} rows" in proc.stdout and proc.stderr == ""
    assert main(["predict", str(run_dir), "--input", str(src), "--output", str(pq_out)]) == 0

    from_csv = pacsv.read_csv(csv_out).to_pandas()
    from_pq = pq.read_table(pq_out).to_pandas()
    for frame in (from_csv, from_pq):
        assert list(frame.columns) == COLUMNS
        assert len(frame) == store.n_series * H
        assert not frame.isna().any().any()
        # ds continues each series hourly: exactly the rows whose target was blanked
        for s in (0, store.n_series - 1):
            rows = frame[frame.unique_id == store.ids[s]]
            n = int(store.lengths[s])
            want = store.starts[s] + np.arange(n - H, n) * 3600 * 10**9
            got = rows.ds.to_numpy().astype("M8[ns]").astype(np.int64)
            np.testing.assert_array_equal(got, want)
        q = frame[COLUMNS[3:]].to_numpy()
        assert (np.diff(q, axis=1) >= 0).all()  # the loss sorts its quantiles
    np.testing.assert_allclose(from_csv[COLUMNS[2:]].to_numpy(), from_pq[COLUMNS[2:]].to_numpy(),
                               rtol=1e-6)  # fmt: skip
    assert sorted(p.name for p in csv_out.parent.iterdir()) == ["f.csv", "f.parquet"]


def evaluator_forecasts(trained, store: Store | None = None) -> dict[str, np.ndarray]:
    """Point forecasts [H] of each series' last test window, as the run's evaluator gives them
    (the loaders of `builders.loaders` and `Evaluator.evaluate`: the path of the test metrics)
    on the run's store, or on `store`."""
    cfg, store = trained.cfg, store or trained.store
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, store, trained.env)
    points = []
    builders.evaluator(cfg, loaders, trained.loss, trained.env).evaluate(
        trained.model, "test", observe=lambda point_BHC, *_: points.append(point_BHC))
    test = loaders["test"]
    point_NH = torch.cat(points)[: test.n_windows, :, 0].numpy()  # windows in order, then pads
    series, _, t = test.index.locate(np.arange(test.n_windows))
    last = t == store.lengths[series] - H
    return {str(store.ids[s]): p for s, p in zip(series[last], point_NH[last])}


def forecasts_by_id(path: Path) -> dict[str, np.ndarray]:
    frame = pq.read_table(path).to_pandas()
    return {str(u): g["nhits"].to_numpy() for u, g in frame.groupby("unique_id", sort=False)}


@pytest.mark.parametrize("scale_by", ["window", "series"])
def test_predict_equals_the_evaluator_on_the_last_test_windows(run, tmp_path, scale_by):
    run_dir, _ = run
    trained = load_run(run_dir)
    # scale_by=series was not trained here, but predict must still scale as the run's
    # loaders do: with the training store's train-split statistics of each series
    trained.cfg.data.scale_by = scale_by
    assert trained.cfg.data.metrics_on == "original"  # the evaluator's points in data units
    src, out = tmp_path / "input.csv", tmp_path / "f.parquet"
    write_input(trained.store, src)
    summary = predict(trained, src, out)
    assert summary.n_forecast == trained.store.n_series and summary.n_padded == 0
    want = evaluator_forecasts(trained)
    got = forecasts_by_id(out)
    assert len(want) == trained.store.n_series and set(got) == set(want)
    for uid, point in want.items():
        np.testing.assert_allclose(got[uid], point, rtol=1e-5, atol=1e-5)


def test_predict_pads_short_series_as_the_evaluator_does(run, tmp_path):
    """Series shorter than input_size: predict's padded, masked, scaled windows are those the
    evaluator makes of the same rows with data.min_input_size."""
    run_dir, _ = run
    trained = load_run(run_dir)
    ids = [str(u) for u in trained.store.ids[:3]]
    # histories of 60 and 48 rows (padded to 96), and one of 200 (not padded)
    cut = {ids[0]: 60 + H, ids[1]: MIN_INPUT + H, ids[2]: 200 + H}
    full, src, out = tmp_path / "full.csv", tmp_path / "input.csv", tmp_path / "f.parquet"
    write_input(trained.store, full, blank_last=0, cut=cut)  # the actuals: test = last H
    write_input(trained.store, src, cut=cut)  # the same with the last H targets blank
    from tsforge.data.ingest import ingest

    roles = trained.store.roles
    ingest(full, tmp_path / "full.zarr", futr_exog=roles.futr_exog, static=roles.static,
           split={"kind": "holdout", "horizon": H})  # fmt: skip
    summary = predict(trained, src, out)
    assert summary.n_forecast == trained.store.n_series and summary.n_padded == 2
    want = evaluator_forecasts(trained, Store(tmp_path / "full.zarr"))
    got = forecasts_by_id(out)
    assert set(want) == set(got) == {str(u) for u in trained.store.ids}
    for uid in ids:
        assert len(got[uid]) == H
        np.testing.assert_allclose(got[uid], want[uid], rtol=1e-5, atol=1e-5)


def cut_input(run_dir: Path, tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """An input with series padded (60 rows), too short (20 rows) and empty; (path, ids of
    the input, ids predict cannot forecast)."""
    store = store_of(run_dir)
    ids = [str(u) for u in store.ids]
    src = tmp_path / "cut.csv"
    # the last series keeps only its H future rows: no target value at all
    write_input(store, src, cut={ids[0]: 60 + H, ids[1]: 20 + H, ids[2]: 20 + H, ids[-1]: H})
    return src, ids, [ids[1], ids[2], ids[-1]]


def test_predict_refuses_series_too_short_to_pad_naming_them(run, tmp_path):
    run_dir, env = run
    src, ids, bad = cut_input(run_dir, tmp_path)
    (tmp_path / "out").mkdir()
    proc = cli(env, "predict", run_dir, "--input", src, "--output", tmp_path / "out" / "f.csv")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsforge: error:"), proc.stderr
    message = lines[0]
    assert f"3 of the {len(ids)} series" in message
    assert f"2 have fewer than data.min_input_size={MIN_INPUT} rows" in message
    assert "1 have no target value" in message
    for uid in bad:
        assert repr(uid) in message
    assert f"--skip-short to forecast the other {len(ids) - 3}" in message
    assert not any((tmp_path / "out").iterdir())


def test_predict_skip_short_forecasts_every_other_series(run, tmp_path):
    run_dir, env = run
    src, ids, bad = cut_input(run_dir, tmp_path)
    out = tmp_path / "f.csv"
    proc = cli(env, "predict", run_dir, "--input", src, "--output", out, "--skip-short")
    assert proc.returncode == 0, proc.stderr
    n = len(ids) - len(bad)
    assert f"forecast {n} of {len(ids)} series (1 shorter than input_size=96" in proc.stdout
    assert f"{n * H:,} rows" in proc.stdout
    assert f"skipped 2 series that have fewer than data.min_input_size={MIN_INPUT}" in proc.stdout
    assert f"skipped 1 series that have no target value (--skip-short): {bad[-1]!r}" in proc.stdout
    frame = pacsv.read_csv(out).to_pandas()
    assert set(frame.unique_id) == set(ids) - set(bad)
    assert (frame.groupby("unique_id").size() == H).all()


def test_predict_pads_to_one_row_without_min_input_size(run, tmp_path):
    """A run trained without data.min_input_size forecasts any series with a value."""
    run_dir, _ = run
    trained = load_run(run_dir)
    trained.cfg.data.min_input_size = None
    src, ids, bad = cut_input(run_dir, tmp_path)
    out = tmp_path / "f.parquet"
    summary = predict(trained, src, out, skip_short=True)
    assert summary.min_rows == 1 and summary.n_padded == 3
    assert summary.skipped_short == [] and summary.skipped_empty == [bad[-1]]
    assert set(forecasts_by_id(out)) == set(ids) - {bad[-1]}


def test_predict_reads_stores(run, tmp_path):
    run_dir, _ = run
    trained = load_run(run_dir)
    ids = [str(u) for u in trained.store.ids[:2]]
    src = tmp_path / "input.csv"
    write_input(trained.store, src, cut={ids[0]: 50 + H, ids[1]: 96 + H})  # input_size is 96
    from tsforge.data.ingest import ingest

    roles = trained.store.roles
    ingest(src, tmp_path / "input.zarr", futr_exog=roles.futr_exog, static=roles.static,
           on_nan="keep")  # fmt: skip
    frames = []
    for i, source in enumerate((src, tmp_path / "input.zarr")):
        out = tmp_path / f"f{i}.csv"
        summary = predict(trained, source, out)
        assert summary.n_padded == 1 and not summary.skipped_short
        assert summary.rows == trained.store.n_series * H
        frames.append(pacsv.read_csv(out).to_pandas())
        assert set(frames[-1].unique_id) == {str(u) for u in trained.store.ids}
    np.testing.assert_allclose(frames[0][COLUMNS[2:]].to_numpy(),
                               frames[1][COLUMNS[2:]].to_numpy())  # fmt: skip


# ------------------------------------------------------------------------------ refusals
def _case(run_dir: Path, tmp: Path, name: str):
    """(arguments, words the one-line message must hold) of a bad invocation."""
    store = store_of(run_dir)
    (tmp / "out").mkdir()  # predict writes only into a folder that exists
    out = tmp / "out" / "f.csv"
    good = tmp / "input.csv"
    write_input(store, good)
    if name == "no run directory":
        return ["evaluate", tmp / "nope"], ["does not exist", "hydra.run.dir="]
    if name == "no config":
        (tmp / "empty").mkdir()
        return ["evaluate", tmp / "empty"], ["no config.yaml"]
    if name == "no checkpoint":
        (tmp / "fresh").mkdir()
        shutil.copy(run_dir / "config.yaml", tmp / "fresh")
        return ["predict", tmp / "fresh", "--input", good, "--output", out], [
            "has no checkpoint", f"python -m tsforge.launch hydra.run.dir={tmp / 'fresh'}"]
    if name == "split without windows":
        shutil.copytree(run_dir / "checkpoints", tmp / "other" / "checkpoints")
        text = (run_dir / "config.yaml").read_text().replace("split: null", "split: ett_hour")
        (tmp / "other" / "config.yaml").write_text(text)
        return ["evaluate", tmp / "other"], ["test split", "no window"]
    if name == "no future covariates":
        return ["predict", run_dir, "--input", store.path, "--output", out], [
            "future-known covariates hour_of_day", f"{H} rows"]
    if name == "column missing":
        bad = tmp / "bad.csv"
        write_input(store, bad, drop=("hour_of_day",))
        return ["predict", run_dir, "--input", bad, "--output", out], ["hour_of_day"]
    if name == "bad output":
        return ["predict", run_dir, "--input", good, "--output", tmp / "out" / "f.txt"], [
            ".csv or a .parquet"]
    if name == "no input":
        return ["predict", run_dir, "--input", tmp / "none.csv", "--output", out], [
            "does not exist"]
    if name == "bad quantiles":
        return ["predict", run_dir, "--input", good, "--output", out, "--quantiles", "0.5,1.5"], [
            "--quantiles"]
    raise AssertionError(name)


CASES = ["no run directory", "no config", "no checkpoint", "split without windows",
         "no future covariates", "column missing", "bad output", "no input",
         "bad quantiles"]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_with_one_line(run, tmp_path, name):
    run_dir, env = run
    args, words = _case(run_dir, tmp_path, name)
    proc = cli(env, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsforge: error:"), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # no output, no temporary files


def test_existing_output_is_kept(run, tmp_path):
    run_dir, env = run
    src, out = tmp_path / "input.csv", tmp_path / "f.csv"
    write_input(store_of(run_dir), src)
    out.write_text("keep me\n")
    proc = cli(env, "predict", run_dir, "--input", src, "--output", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "input.csv"]
