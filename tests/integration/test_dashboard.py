"""The TensorBoard dashboard of a run, read by TensorBoard's own reader and its HTTP server.

pytest tests/integration/test_dashboard.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.integration.test_training import launch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("dash") / "run"
    code, _, err = launch(
        run_dir, "trainer.max_steps=20", "trainer.val_every_steps=10", "loss.name=quantile"
    )
    assert code == 0, err
    return run_dir


def _accumulator(folder: Path) -> EventAccumulator:
    """TensorBoard's reader over one run folder (a run directory: its tb/)."""
    folder = folder / "tb" if (folder / "tb").is_dir() else folder
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_images_and_layout(run):
    acc = _accumulator(run)
    tags = acc.Tags()
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "perf/windows_per_s",
        "perf/windows_per_s_rank0",
        "perf/step_time_ms",
        "perf/data_wait_frac",
        "perf/windows_per_s_per_rank",
        "perf/mfu",
        "mem/cpu_rss_mb",
        "val/mae",
        "val/mse",
        "val/loss",
        "val/scaled_crps",
    ):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("val/mae")] == [10, 20]
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) == 2 and all(v > 0 for v in losses)
    images = [t for t in tags["images"] if t.startswith("val_forecast/")]
    assert len(images) == 4
    assert [e.step for e in acc.Images(images[0])] == [10, 20]
    assert acc.Images(images[0])[0].width > 100


def _event_dirs(run: Path) -> list[Path]:
    return sorted({p.parent for p in (run / "tb").rglob("events.out.tfevents.*")})


def test_no_hparam_scalars_anywhere(run):
    config = _flat_config(run)
    for folder in _event_dirs(run):
        acc = _accumulator(folder)
        for tag in acc.Tags()["scalars"]:
            assert not tag.startswith("hparam"), (folder, tag)
            assert tag not in config, (folder, tag)
            assert tag.split("/")[0] in ("train", "val", "perf", "mem", "test", "best_val"), (
                folder, tag)


def _flat_config(run: Path) -> dict:
    from tsforge.train.hparams import flat_hparams
    from tsforge.train.rundir import read_config

    return flat_hparams(read_config(run / "config.yaml"))


def test_custom_scalars_layout_has_one_quantity_per_chart(run):
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = _accumulator(run)
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0]
                                          .tensor_proto.string_val[0])  # fmt: skip
    charts = [chart for category in layout.category for chart in category.chart]
    assert charts
    for chart in charts:
        assert len(chart.multiline.tag) == 1, chart
    charted = {chart.multiline.tag[0] for chart in charts}
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/mae", "val/mse", "val/scaled_crps"} <= charted
    # every chart has data, but for the per-rank regex
    assert {t for t in charted if "\\" not in t} <= scalars


def test_forecast_images_carry_the_series_id(run, monkeypatch):
    from tsforge.data import chosen
    from tsforge.train.plots import window_label
    from tsforge.train.rundir import read_config

    monkeypatch.setenv("TSFORGE_CACHE_DIR", str(run.parent / "cache"))
    store = chosen.store(read_config(run / "config.yaml").data)
    ids = {str(i) for i in store.ids}
    tags = [t for t in _accumulator(run).Tags()["images"] if t.startswith("val_forecast/")]
    shown = [t.split("/", 1)[1].split("_", 1)[1] for t in tags]
    assert set(shown) <= ids and len(set(shown)) == len(tags)  # distinct series first
    title, tag = window_label(store, 0, 0, 100)
    assert str(store.ids[0]) in title and tag == str(store.ids[0])
    if store.time_unit == "ns":  # a date, not an offset
        assert "forecast from 2" in title
    else:
        assert "forecast from t=" in title


def test_hparams_session_carries_config_and_test_metrics(run):
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    sessions = [d for d in _event_dirs(run) if _has_hparams(d)]
    assert sessions == [run / "tb" / "test"]  # one session, away from the curves
    content = _accumulator(sessions[0]).PluginTagToContent("hparams")
    # no experiment summary: TensorBoard builds it from the sweep's runs and marks what differs
    assert metadata.EXPERIMENT_TAG not in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
    hparams = start.session_start_info.hparams
    assert hparams["model.name"].string_value == "nhits"
    assert hparams["trainer.max_steps"].number_value == 20
    final = json.loads((run / "metrics.json").read_text())
    session = _accumulator(run / "tb" / "test")
    assert set(session.Tags()["scalars"]) == {f"test/{k}" for k in final["test"] if k != "loss"} \
        | {f"best_val/{k}" for k in final["best_val"]}  # what a search selects on  # fmt: skip
    assert [e.value for e in session.Scalars("test/mae")] == pytest.approx(
        [final["test"]["mae"]], rel=1e-6)


def _has_hparams(folder: Path) -> bool:
    try:
        return bool(_accumulator(folder).PluginTagToContent("hparams"))
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_the_run(run):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run / "tb"),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        deadline, tags = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    tags = json.load(resp)
                if any("train/loss" in run_tags for run_tags in tags.values()):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert tags, "tensorboard did not answer"
        scalar_tags = set().union(*(set(v) for v in tags.values()))
        assert {"train/loss", "val/mae", "perf/windows_per_s"} <= scalar_tags
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_sweep_s_hparams_columns_are_the_keys_it_varies_and_the_test_metrics(tmp_path):
    from tensorboard.plugins.hparams import api_pb2, metadata

    from tests.integration.test_training import SMALL

    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "tsforge.launch", "-m", "optim.lr=1e-3,3e-3", *SMALL,
         "trainer.max_steps=4", "trainer.val_every_steps=2", "trainer.plot_series=0",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TSFORGE_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for num in (0, 1):
        acc = _accumulator(sweep / str(num) / "tb" / "test")
        content = acc.PluginTagToContent("hparams")
        exp = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        assert [(h.name, h.differs) for h in exp.hparam_infos] == [("optim.lr", True)]
        assert exp.hparam_infos[0].type == api_pb2.DATA_TYPE_FLOAT64
        assert list(exp.hparam_infos[0].domain_discrete.values) and sorted(
            v.number_value for v in exp.hparam_infos[0].domain_discrete.values
        ) == pytest.approx([1e-3, 3e-3])
        final = json.loads((sweep / str(num) / "metrics.json").read_text())
        tags = [m.name.tag for m in exp.metric_infos]
        assert sorted(tags) == sorted([f"test/{k}" for k in final["test"] if k != "loss"]
                                      + [f"best_val/{k}" for k in final["best_val"]])
        assert tags[:2] == ["test/mae", "test/mse"]  # the evaluator's order, not the alphabet
        start = metadata.parse_session_start_info_plugin_data(
            content[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["optim.lr"].number_value == pytest.approx([1e-3, 3e-3][num])
