"""Every named experiment composes, and each long-horizon cell is what its name says.

    pytest -q tests/unit/test_experiments.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tsforge.config.checks import compose_config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiment"
NAMES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
CELL = re.compile(r"^(etth1|etth2|ettm1|exchange|ili)_(nhits|dlinear|patchtst)_h(\d+)$")
DATA = {"etth1": "ETTh1", "etth2": "ETTh2", "ettm1": "ETTm1", "exchange": "Exchange",
        "ili": "ILI"}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_experiment_composes(name):
    cfg = compose_config([f"experiment={name}"])
    match = CELL.match(name)
    if match:
        dataset, model, horizon = match.groups()
        assert cfg.data.name == DATA[dataset]
        assert cfg.model.name == model
        assert cfg.data.horizon == int(horizon)
        # The protocol: train-fit standardisation, metrics on standardized values, every window.
        assert (cfg.data.scale_by, cfg.data.metrics_on) == ("series", "scaled")
        assert cfg.data.legacy_test_drop_last == 0
        assert cfg.trainer.early_stop_metric == "mse"


def test_the_table_has_every_cell_the_benchmark_names():
    cells = {n for n in NAMES if CELL.match(n)}
    ett = {f"{d}_{m}_h{h}" for d in ("etth1", "etth2", "ettm1")
           for m in ("nhits", "dlinear", "patchtst") for h in (96, 192, 336, 720)}  # fmt: skip
    assert ett <= cells
    assert {f"exchange_dlinear_h{h}" for h in (96, 192, 336, 720)} <= cells
    assert {f"ili_patchtst_h{h}" for h in (24, 36, 48, 60)} <= cells
