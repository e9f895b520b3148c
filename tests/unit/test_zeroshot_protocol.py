"""The protocol zero-shot evaluation scores a dataset under: the dataset's own config, composed
by Hydra as a launch would, with the model's sizes (`tsforge.runs.zeroshot.protocol`).

    python -m pytest tests/unit/test_zeroshot_protocol.py

No data file is read: a registry name's protocol is its conf/data file.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tsforge.config import CONF_DIR
from tsforge.errors import UserError
from tsforge.runs.zeroshot import SUITE, _geomean, protocol


@pytest.mark.parametrize(
    "name, option",
    [("ETTh1", "etth1"), ("ILI", "ili"), ("M4-Hourly", "m4_hourly"), ("exchange", "exchange")],
)
def test_a_registry_name_is_scored_under_its_own_config_file(name, option):
    data = protocol(name, input_size=64, horizon=12, min_input_size=32)
    own = OmegaConf.load(CONF_DIR / "data" / f"{option}.yaml")
    for key in ("name", "season", "scaling", "scale_by", "metrics_on"):
        assert data[key] == own[key], key
    assert (data.input_size, data.horizon, data.min_input_size) == (64, 12, 32)
    assert data.multivariate is False


def test_a_registry_name_without_a_config_file_keeps_the_registrys_season():
    data = protocol("Weather", input_size=96, horizon=24)
    assert (data.name, data.season) == ("Weather", 144)


def test_a_season_given_wins_over_the_config_file():
    assert protocol("ETTh1", input_size=96, horizon=24, season=12).season == 12


def test_every_suite_dataset_has_a_protocol():
    for name, horizon in SUITE:
        assert protocol(name, input_size=96, horizon=horizon).horizon == horizon


def test_an_unknown_name_is_refused_naming_the_registry():
    with pytest.raises(UserError, match="unknown dataset 'ETTh9': use one of synthetic, ETTh1"):
        protocol("ETTh9", input_size=96, horizon=24)


def test_geometric_means_cover_every_dataset_or_none():
    assert _geomean([0.5, 2.0]) == pytest.approx(1.0)
    assert _geomean([0.25, 1.0, 4.0]) == pytest.approx(1.0)
    assert _geomean([0.5, None]) is None
