"""The column names of forecast files (`tsforge.forecasts`): Nixtla's, and back to levels.

    python -m pytest tests/unit/test_forecasts.py
"""

from __future__ import annotations

import pytest

from tsforge.forecasts import quantile_column, quantile_of

# Names StatsForecast / NeuralForecast give the bounds of their 80 %, 90 % and 95 % intervals.
NIXTLA = {0.1: "m-lo-80", 0.9: "m-hi-80", 0.05: "m-lo-90", 0.95: "m-hi-90",
          0.025: "m-lo-95", 0.975: "m-hi-95", 0.5: "m-median"}  # fmt: skip


@pytest.mark.parametrize("q", sorted(NIXTLA))
def test_interval_bounds_have_nixtlas_names(q):
    assert quantile_column("m", q) == NIXTLA[q]


@pytest.mark.parametrize("q", [0.01, 0.1, 0.2, 0.25, 0.333, 0.5, 0.75, 0.8, 0.9, 0.99, 0.0001])
def test_names_give_their_level_back(q):
    name = quantile_column("nhits", q)
    assert quantile_of("nhits", name) == pytest.approx(q, abs=1e-9)


def test_other_columns_are_not_quantiles():
    for model, column in (("m", "m"), ("m", "unique_id"), ("m", "m-lo-x"), ("m", "m-q-0.1"),
                          ("mm", "m-lo-80"), ("m", "n-hi-80"), ("m", "m-lo-80-extra")):
        assert quantile_of(model, column) is None, column
    # a model whose name looks like a column of another
    assert quantile_of("m-lo-80", "m-lo-80-hi-90") == pytest.approx(0.95)
