"""The TensorBoard dashboard of a run, read by TensorBoard's own reader and its HTTP server.

pytest tests/integration/test_dashboard.py
"""

from __future__ import annotations

import json
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


def _accumulator(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
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
    assert "custom_scalars__config__" in tags["tensors"]


def test_hparams_carry_config_and_final_metrics(run):
    acc = _accumulator(run)
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.name"].string_value == "nhits"
    assert hparams["trainer.max_steps"].number_value == 20
    final = json.loads((run / "metrics.json").read_text())
    metric = [e.value for e in acc.Scalars("hparam/test/mae")]
    assert metric == pytest.approx([final["test"]["mae"]], rel=1e-6)


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
