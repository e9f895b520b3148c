"""MASE's in-sample scale per series, as the trainer's evaluation uses it: M4's seasonal naive
MAE of each series' train rows from a real store, lag 1 where the train part is too short.

    python -m pytest tests/unit/test_mase_scales.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from tsforge.data.store import ColumnRoles, Store, StoreWriter
from tsforge.metrics import mase_scale
from tsforge.train.builders import mase_scales

SERIES = {
    # holdout 2: test = the last 2 rows, val = the 2 before, train = the rest
    "a": [1.0, 3.0, 2.0, 6.0, 9.0, 9.0, 9.0, 9.0],  # train 1 3 2 6: |2-1|, |6-3| -> 2
    "b": [5.0, 1.0, 7.0, 7.0, 7.0, 7.0],  # train 5 1: too short for lag 2, lag 1: |1-5| = 4
    "c": [4.0, 4.0, 4.0, 4.0, 0.0, 8.0],  # train constant: 0 (no scale)
    "d": [2.0, 2.0, 2.0, 2.0],  # no train row: NaN
}


@pytest.fixture
def store(tmp_path) -> Store:
    with StoreWriter(tmp_path / "s.zarr", roles=ColumnRoles(target=("y",)), freq="1",
                     time_unit="index") as w:  # fmt: skip
        for uid, y in SERIES.items():
            w.add_series(uid, 0, np.array(y, dtype=np.float32)[:, None])
        w.commit(splits={"kind": "holdout", "horizon": 2})
    return Store(tmp_path / "s.zarr")


@pytest.mark.parametrize("block_rows", [1, 5, 1 << 20])
def test_scales_of_the_train_rows(store, block_rows):
    data = OmegaConf.create({"split": None, "season": 2})
    got = mase_scales(data, store, block_rows=block_rows)
    assert got.shape == (4, 1)
    assert got[:3, 0].tolist() == [2.0, 4.0, 0.0]
    assert math.isnan(got[3, 0])


def test_mase_scale_of_one_history():
    assert mase_scale([1.0, 3.0, 2.0, 6.0], 2) == 2.0
    assert mase_scale([1.0, 3.0, np.nan, 6.0], 2) == 3.0  # pairs with a missing value left out
    assert mase_scale([1.0, 4.0], 24) == 3.0  # shorter than a season: lag 1
    assert math.isnan(mase_scale([1.0], 1))
