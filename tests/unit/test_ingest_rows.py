"""Ingest of rows input: one row per series, an id then its values (tsforge/data/rows.py).

Real files (CSV, .csv.gz, Parquet) ingested into real stores and read back; bad input is a
`UserError` naming the file, the row and the column.

    pytest tests/unit/test_ingest_rows.py
"""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tsforge.data.ingest import ingest
from tsforge.data.store import Store
from tsforge.errors import UserError

# Series of random lengths (0 included) in a padded rows CSV, and what it holds.
RNG = np.random.default_rng(7)
N_COLS = 12
LENGTHS = [12, 5, 0, 9, 1, 7]
SERIES = {f"s{i}": np.round(RNG.normal(10, 3, n), 3) for i, n in enumerate(LENGTHS)}


def rows_text(series: dict, n_cols: int = N_COLS, id_col: str = "id") -> str:
    head = ",".join([id_col] + [f"V{k + 2}" for k in range(n_cols)])
    lines = [head]
    for uid, values in series.items():
        cells = [repr(float(v)) for v in values] + [""] * (n_cols - len(values))
        lines.append(",".join([uid, *cells]))
    return "\n".join(lines) + "\n"


def write(tmp_path, text: str, name: str = "rows.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def series_of(store: Store) -> dict[str, np.ndarray]:
    return {str(uid): store.series_values(i)[:, 0] for i, uid in enumerate(store.ids)}


def test_ragged_rows_become_series_of_their_own_lengths(tmp_path):
    src = write(tmp_path, rows_text(SERIES))
    summary = ingest(src, tmp_path / "s.zarr", format="rows")
    store = Store(tmp_path / "s.zarr")
    kept = {u: v for u, v in SERIES.items() if len(v)}
    assert sorted(series_of(store)) == sorted(kept)
    for uid, values in series_of(store).items():
        np.testing.assert_allclose(values, kept[uid], rtol=1e-6)
    assert store.time_unit == "index" and store.freq == "1"
    assert set(store.starts.tolist()) == {0}
    assert summary.n_dropped_short == LENGTHS.count(0)
    assert summary.n_rows == sum(LENGTHS)


def test_small_pieces_give_the_same_store(tmp_path):
    """Pieces of a few rows (piece_rows counts values): row numbers and ids across pieces."""
    src = write(tmp_path, rows_text(SERIES))
    ingest(src, tmp_path / "a.zarr", format="rows")
    ingest(src, tmp_path / "b.zarr", format="rows", piece_rows=N_COLS + 1)
    assert Store(tmp_path / "a.zarr").fingerprint == Store(tmp_path / "b.zarr").fingerprint


def test_gzip_and_parquet_read_as_csv_does(tmp_path):
    text = rows_text(SERIES)
    ingest(write(tmp_path, text), tmp_path / "csv.zarr", format="rows")
    (tmp_path / "rows.csv.gz").write_bytes(gzip.compress(text.encode()))
    ingest(tmp_path / "rows.csv.gz", tmp_path / "gz.zarr", format="rows")
    cols = {"id": list(SERIES)}
    for k in range(N_COLS):
        cols[f"V{k + 2}"] = [float(v[k]) if k < len(v) else None for v in SERIES.values()]
    pq.write_table(pa.table(cols), tmp_path / "rows.parquet")
    ingest(tmp_path / "rows.parquet", tmp_path / "pq.zarr", format="rows")
    want = Store(tmp_path / "csv.zarr").fingerprint
    assert Store(tmp_path / "gz.zarr").fingerprint == want
    assert Store(tmp_path / "pq.zarr").fingerprint == want


def test_id_column_by_name_and_ignored_columns(tmp_path):
    text = "region,V2,V3,name,V4\nnorth,1,2,a,3\nsouth,4,,b,\n"
    ingest(write(tmp_path, text), tmp_path / "s.zarr", format="rows", id_col="name",
           ignore_cols=["region"])  # fmt: skip
    got = series_of(Store(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(got["a"], [1, 2, 3])
    np.testing.assert_array_equal(got["b"], [4])


def test_start_gives_every_series_dates_at_freq(tmp_path):
    src = write(tmp_path, rows_text(SERIES))
    ingest(src, tmp_path / "h.zarr", format="rows", start="2021-03-04 05:00", freq="h")
    store = Store(tmp_path / "h.zarr")
    assert store.time_unit == "ns" and store.freq == "h"
    assert set(store.starts.tolist()) == {int(np.datetime64("2021-03-04T05:00", "ns").astype(int))}
    ingest(src, tmp_path / "m.zarr", format="rows", start="2020-01-31", freq="ME")
    assert Store(tmp_path / "m.zarr").freq == "ME"
    ingest(src, tmp_path / "i.zarr", format="rows", start="100", freq=5)
    store = Store(tmp_path / "i.zarr")
    assert store.freq == "5" and set(store.starts.tolist()) == {100}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start="2020-01-01"), r"--start 2020-01-01 needs --freq"),
        (dict(start="yesterday", freq="D"), r"--start 'yesterday' is not a date/time"),
        (dict(start="01.02.2020", freq="D", time_format="%Y-%m"), r"does not match --time-format"),
        (dict(freq="h"), r"--freq h is a duration, but without a date/time --start"),
        (dict(freq="0"), r"--freq '0' is not a step forward"),
        (dict(start="2020-01-01", freq="7"), r"--freq '7' is not a frequency"),
        (dict(start="2250-01-01", freq="10000D"), r"run past the times that can be counted"),
        (dict(time_col="ds"), r"--time-col does not apply to --format rows"),
        (dict(target=["y"]), r"--target does not apply to --format rows"),
        (dict(static=["V2"]), r"--static does not apply"),
        (dict(series_id="x"), r"--series-id does not apply"),
        (dict(time_format="%Y"), r"--time-format reads --start"),
        (dict(id_col="nope"), r"has no column 'nope' .* pass --id-col"),
        (dict(ignore_cols=["id"]), r"'id' is the id column: leave it out of --ignore-cols"),
    ],
)
def test_options_refused(tmp_path, kwargs, match):
    src = write(tmp_path, rows_text(SERIES))
    with pytest.raises(UserError, match=match):
        ingest(src, tmp_path / "s.zarr", format="rows", **kwargs)
    assert not (tmp_path / "s.zarr").exists()


def test_start_given_with_another_layout_is_refused(tmp_path):
    src = write(tmp_path, "unique_id,ds,y\na,2020-01-01,1\na,2020-01-02,2\n")
    with pytest.raises(UserError, match=r"--start is for --format rows"):
        ingest(src, tmp_path / "s.zarr", start="2020-01-01")


def test_start_in_a_format_of_its_own(tmp_path):
    src = write(tmp_path, rows_text(SERIES))
    ingest(src, tmp_path / "s.zarr", format="rows", start="04.03.2021", freq="D",
           time_format="%d.%m.%Y")  # fmt: skip
    start = Store(tmp_path / "s.zarr").starts[0]
    assert start == np.datetime64("2021-03-04", "ns").astype(np.int64)


@pytest.mark.parametrize(
    "text, match",
    [
        # the row (1-based data row) and the column of the bad cell are named
        ("id,V2,V3,V4\na,1,2,3\nb,4,five,\n", r"rows\.csv row 2: V3 'five' is not a number"),
        ("id,V2,V3,V4\na,1,2,3\nb,4,5,6\na,7,,\n", r"rows\.csv rows 1 and 3 both hold series 'a'"),
        ("id,V2,V3,V4\na,1,2,3\n,4,5,6\n", r"rows\.csv row 2: id is empty"),
        ("id,V2,V3,V4\na,1,2,3\nb,4,,6\n", r"rows\.csv row 2: V3 is empty or NaN \(series 'b'\)"),
        ("id,V2,V3,V4\na,1,2,3\nb,4,5\n", r"rows\.csv row 2: expected 4 fields, found 3"),
        ("id\na\nb\n", r"no value column beside the id column 'id'"),
        ("id,V2,V3\na,,\nb,,\n", r"all 2 series are shorter than --min-length 1"),
    ],
)
def test_bad_rows_name_the_row_and_column(tmp_path, text, match):
    src = write(tmp_path, text)
    with pytest.raises(UserError, match=match) as err:
        ingest(src, tmp_path / "s.zarr", format="rows")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s.zarr").exists()


def test_duplicate_ids_across_pieces_are_found(tmp_path):
    again = rows_text({"s1": np.ones(3)}).splitlines()[1]  # a last row for s1 again
    src = write(tmp_path, rows_text(SERIES) + again + "\n")
    last = len(SERIES) + 1
    # piece_rows counts values: one row of N_COLS values a piece
    with pytest.raises(UserError, match=rf"rows 2 and {last} both hold series 's1'"):
        ingest(src, tmp_path / "s.zarr", format="rows", piece_rows=N_COLS)


def test_missing_values_inside_a_series_follow_on_nan(tmp_path):
    src = write(tmp_path, "id,V2,V3,V4,V5\na,1,,3,\nb,4,5,6,7\n")
    ingest(src, tmp_path / "keep.zarr", format="rows", on_nan="keep")
    got = series_of(Store(tmp_path / "keep.zarr"))
    np.testing.assert_array_equal(got["a"], [1, np.nan, 3])
    summary = ingest(src, tmp_path / "fill.zarr", format="rows", on_nan="drop", on_gap="ffill")
    got = series_of(Store(tmp_path / "fill.zarr"))
    np.testing.assert_array_equal(got["a"], [1, 1, 3])
    assert summary.n_nan_dropped == 1 and summary.n_gaps_filled == 1


def test_rows_and_holdout_split(tmp_path):
    src = write(tmp_path, rows_text(SERIES))
    ingest(src, tmp_path / "s.zarr", format="rows", split="holdout:3")
    assert Store(tmp_path / "s.zarr").splits == {"kind": "holdout", "horizon": 3, "test": 0}
