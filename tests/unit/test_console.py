"""The run logger's console lines and dashboard layout (tsforge/train/logger.py).

pytest tests/unit/test_console.py
"""

import re

from tsforge.train.logger import RunLogger, duration, layout


def test_progress_names_the_early_stopping_metric_and_its_best(tmp_path, capsys):
    logger = RunLogger(tmp_path, ["mae", "mse", "loss"])
    logger.begin(100, 300, "mse", best=9.5, best_step=None)  # resumed, best's step unknown
    logger.scalars(110, {"train/loss": 0.5, "train/lr": 1e-3, "perf/windows_per_s": 1234.0,
                         "perf/data_wait_frac": 0.25})  # fmt: skip
    for step, mse in ((120, 9.7), (140, 9.0), (160, 9.2)):
        logger.scalars(step, {"val/mae": 2.0, "val/mse": mse, "val/loss": 0.3})
    logger.close()
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"step 110/300  elapsed \d+:\d\d  ETA \d+:\d\d  loss 0\.5000  "
                        r"lr 1\.00e-03  1,234 windows/s  data wait 25%", lines[0])  # fmt: skip
    assert lines[1] == ("step 120/300  validation  val/mse 9.7000 (best 9.5000)  "
                        "val/mae 2.0000  val/loss 0.3000")  # fmt: skip
    assert "val/mse 9.0000 (new best)" in lines[2]
    assert "val/mse 9.2000 (best 9.0000 at step 140)" in lines[3]


def test_a_validation_without_the_metric_is_still_shown(tmp_path, capsys):
    logger = RunLogger(tmp_path, ["mae"])
    logger.begin(0, 50, "smape")
    logger.scalars(10, {"val/mae": 1.5})
    logger.close()
    assert capsys.readouterr().out.strip() == "step 10/50  validation  val/mae 1.5000"


def test_layout_one_quantity_per_chart_loss_and_validation_first():
    charts = layout(["mae", "mse", "smape", "loss"])
    assert list(charts)[:2] == ["loss", "validation"]
    assert list(charts["validation"]) == ["val/mae", "val/mse", "val/smape"]
    for category in charts.values():
        for kind, tags in category.values():
            assert kind == "Multiline" and len(tags) == 1


def test_duration():
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == [
        "0:00", "1:00", "1:01", "1:00:00", "1:02:05"
    ]
