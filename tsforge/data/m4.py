"""M4 competition files (Makridakis et al., IJF 2020) into a store.

The official files are wide CSVs, one series per row: `"V1"` holds the id ("H1"), the values
follow and are right-padded with empty cells to the longest series. A frequency comes as a
train file and a test file with the same ids in the same order; the store holds each series
as train + test rows, with integer time (there are no timestamps) and a holdout split whose
test part is exactly the official test horizon.

    from tsforge.data import m4
    store = m4.write_store(train_csv, test_csv, "m4_hourly.zarr", horizon=48)

Rows are read by `tsforge.data.rows` (the reader of `tsforge data ingest --format rows`), a
run of rows at a time, so memory is a run of rows plus the writer's chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from tsforge.data.readers import open_source
from tsforge.data.rows import RowsSource
from tsforge.data.store import Codec, ColumnRoles, Store, StoreWriter
from tsforge.errors import UserError

# The official horizons (and the seasonality MASE uses) per frequency.
HORIZONS = {"Hourly": 48, "Daily": 14, "Weekly": 13, "Monthly": 18, "Quarterly": 8, "Yearly": 6}
SEASONALITY = {"Hourly": 24, "Daily": 1, "Weekly": 1, "Monthly": 12, "Quarterly": 4, "Yearly": 1}

def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """(id, values) for every row of an M4 wide CSV, padding dropped, values float64."""
    source = open_source(path)
    if source.columns[0] != "V1":
        raise UserError(f"{path} is not an M4 file: its first header cell should be 'V1'")
    for uid, values, row in RowsSource(source, id_col="V1").series():
        if np.isnan(values).any():
            raise UserError(f"{path} row {row}: an empty cell inside series {uid!r}: M4 series "
                            "have no missing values; use an intact copy of the file")  # fmt: skip
        yield uid, values


def write_store(
    train: str | os.PathLike,
    test: str | os.PathLike,
    out: str | os.PathLike,
    *,
    horizon: int,
    overwrite: bool = False,
    codec: Codec | None = None,
    extra_attrs: dict | None = None,
) -> Store:
    """Write train + test rows of every series into a store with a holdout split of `horizon`."""
    roles = ColumnRoles(target=("y",))
    with StoreWriter(
        out, roles=roles, freq="1", time_unit="index", codec=codec or Codec(), overwrite=overwrite
    ) as writer:
        test_rows = read_rows(test)
        for uid, past in read_rows(train):
            test_id, future = next(test_rows, (None, None))
            if test_id != uid:
                raise UserError(
                    f"{test} does not match {train}: series {uid!r} meets {test_id!r}; "
                    "use the train and test files of the same M4 frequency"
                )
            if len(future) != horizon:
                raise UserError(
                    f"{test}: series {uid!r} has {len(future)} test values, expected {horizon}"
                )
            writer.add_series(uid, 0, np.concatenate([past, future])[:, None])
        extra = next(test_rows, None)
        if extra is not None:
            raise UserError(f"{test} holds series {extra[0]!r} that {train} lacks")
        return writer.commit(
            splits={"kind": "holdout", "horizon": int(horizon)}, extra_attrs=extra_attrs
        )
