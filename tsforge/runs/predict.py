"""Forecasts past the end of new series with a trained run: `tsforge predict`.

    from tsforge.runs.load import load_run
    from tsforge.runs.predict import predict
    summary = predict(load_run("runs/mine"), "new.csv", "forecasts.parquet")

`predict` forecasts the H steps after each series' last target value. Its inputs are cut,
padded, masked and scaled by the window loader, as training and evaluation batches are: per
window from the input rows, or, with `scale_by=series`, with the statistics the run's loaders
give the training store's series of the same id (`loader.train_series_stats`, handed to the
loader as `series_stats`). A series shorter than input_size is left-padded down to the run's
`data.min_input_size` rows (1 when it set none); a shorter or empty one is refused, or left
out when asked (`skip_short`). A model that reads future-known covariates needs them over the
horizon: the input must hold H rows after each series' last target (covariates filled,
target empty). Output columns: `tsforge.forecasts`.

Shape legend:  B windows   L input_size   H horizon   C target channels of a window
               Q quantile levels
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from tsforge.data import chosen
from tsforge.data import scaling as scaling_mod
from tsforge.data.freq import Freq
from tsforge.data.loader import WindowLoader, WindowSpec, train_series_stats
from tsforge.data.mixture import Mixture
from tsforge.data.outputs import (
    FORECAST_SUFFIXES,
    check_file_target,
    place,
    within,
    writing,
)
from tsforge.data.store import Store
from tsforge.data.windows import WindowIndex
from tsforge.errors import UserError
from tsforge.forecasts import quantile_column
from tsforge.models import MODELS
from tsforge.runs.load import TrainedRun
from tsforge.train.precision import autocast_dtype, forecast

OUTPUT_SUFFIXES = FORECAST_SUFFIXES
# Levels reported for distribution losses (normal, studentt), which have no trained levels.
DEFAULT_LEVELS = (0.1, 0.5, 0.9)


# ---------------------------------------------------------------------------- prediction
@dataclasses.dataclass
class PredictSummary:
    """What `predict` wrote; `tsforge predict` prints it."""

    output: str
    rows: int
    n_series: int  # series in the input
    n_forecast: int  # series forecast
    n_padded: int  # of those, series with fewer rows than input_size: left-padded, masked
    input_size: int
    min_rows: int  # fewest rows up to a series' last target value that can be forecast
    horizon: int
    columns: list[str]
    # with skip_short only (else predict refuses them): ids of the series left out
    skipped_short: list[str]  # fewer than min_rows rows up to their last target value
    skipped_empty: list[str]  # no target value at all

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _levels(loss, quantiles) -> tuple[float, ...]:
    """Quantile levels to write, ascending: asked for, else the loss's own (none for a point
    loss)."""
    if quantiles:
        if not getattr(loss, "is_probabilistic", False):
            raise UserError(
                f"--quantiles: the model was trained with the point loss "
                f"{type(loss).__name__}, which gives no quantiles: leave --quantiles out"
            )
        levels = tuple(sorted(float(q) for q in quantiles))
        if not all(0.0 < q < 1.0 for q in levels):
            raise UserError(f"--quantiles must be levels in (0, 1), got {list(quantiles)}")
        return levels
    if not getattr(loss, "is_probabilistic", False):
        return ()
    return tuple(sorted(getattr(loss, "levels", ()) or DEFAULT_LEVELS))


def _columns(model: str, levels: tuple[float, ...]) -> list[str]:
    """`<model>` and one column per level, named as Nixtla names them (`tsforge.forecasts`)."""
    names = [model] + [quantile_column(model, q) for q in levels]
    if len(set(names)) < len(names):
        raise UserError(
            f"--quantiles {','.join(f'{q:g}' for q in levels)} name one column twice "
            f"({', '.join(names[1:])}): give distinct levels"
        )
    return names


def _check_output(output: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse an --output that could not be written, or whose replacement could lose data:
    `--overwrite` replaces a file, never a folder, an input, or a link."""
    check_file_target(output, flag="--output", suffixes=OUTPUT_SUFFIXES, overwrite=overwrite,
                      inputs=inputs)  # fmt: skip


def _is_store(path: Path) -> bool:
    """Whether the input is meant as a store (a Zarr folder); `Store` then checks it."""
    return path.is_dir() and (path / "zarr.json").exists()


def _open_input(src: Path, train: Store, tmp: Path, ingest_options: dict) -> Store:
    """The input as a store: a Zarr store as it is; CSV / Parquet ingested with the training
    store's column roles into `tmp` (which the caller deletes), at its own frequency (given,
    or inferred) so that input at another frequency is refused rather than regridded."""
    if not src.exists():
        raise UserError(f"--input {src} does not exist: give a store, a CSV or a Parquet file")
    if _is_store(src):
        store = Store(src)
    else:
        from tsforge.data.ingest import ingest

        freq = ingest_options["freq"]
        if freq is not None and Freq.parse(freq, train.time_unit) != _freq(train):
            raise UserError(
                f"--freq {freq} is not the run's frequency {train.freq}: give input at the "
                "training frequency (or leave --freq out to have it inferred)"
            )

        roles = train.roles
        _check_columns(src, roles, ingest_options)
        out = tmp / "input.zarr"
        # on_nan="keep": the rows after a series' last target hold future covariates only.
        ingest(src, out, target=roles.target, hist_exog=roles.hist_exog,
               futr_exog=roles.futr_exog, static=roles.static, on_nan="keep",
               **ingest_options)  # fmt: skip
        store = Store(out)
    if store.roles != train.roles:
        have = set(store.roles.value_columns + store.roles.static)
        missing = [c for c in train.roles.value_columns + train.roles.static if c not in have]
        what = (f"lacks the run's columns {', '.join(missing)}" if missing else
                f"has the columns {store.roles.to_dict()}")  # fmt: skip
        raise UserError(
            f"--input {src} {what}, but the run was trained on {train.roles.to_dict()}: give "
            "input with the training data's columns in the same roles"
        )
    if store.time_unit != train.time_unit or _freq(store) != _freq(train):
        raise UserError(
            f"--input {src} steps by {store.freq or '?'} ({_time_kind(store)}) but the run was "
            f"trained on data stepping by {train.freq} ({_time_kind(train)}): give input at "
            "the training frequency"
        )
    return store


def _freq(store: Store) -> Freq | None:
    try:
        return Freq.parse(store.freq, store.time_unit)
    except UserError:
        return None


def _time_kind(store: Store) -> str:
    return "integer time" if store.time_unit == "index" else "datetimes"


def _check_columns(src: Path, roles, options: dict) -> None:
    """Refuse input without a column of the run's data, or with one it did not have, in
    predict's own words (ingest's would name its own options)."""
    from tsforge.data.readers import open_source

    have = open_source(src).columns
    keys = ([options["id_col"]] if options["format"] == "long" else []) + [options["time_col"]]
    need = keys + list(roles.value_columns + roles.static)
    missing = [c for c in need if c not in have]
    if missing:
        raise UserError(
            f"--input {src} has no column {', '.join(repr(c) for c in missing)}: the run's data "
            f"had {', '.join(need)} (name other id / time columns with --id-col / --time-col)"
        )
    extra = [c for c in have if c not in need and c not in options["ignore_cols"]]
    if extra and options["format"] == "long":
        raise UserError(
            f"--input {src} has columns the run's data did not have: {', '.join(extra)}: "
            f"leave them out with --ignore-cols {','.join(extra)}"
        )


def _target_ends(store: Store) -> np.ndarray:
    """Each series' rows up to its last finite target value (0: none): where forecasts start.
    One pass over the store's chunks, a chunk at a time."""
    targets = store.column_index(store.roles.target)
    indptr = store.indptr
    end = indptr[:-1].copy()
    R = store.chunk_rows
    for a in range(0, store.n_timesteps, R):
        b = min(a + R, store.n_timesteps)
        finite = np.isfinite(store.values[a:b][:, targets]).any(axis=1)
        rows = a + np.flatnonzero(finite)
        if not len(rows):
            continue
        series = np.searchsorted(indptr, rows, side="right") - 1
        last = len(rows) - 1 - np.unique(series[::-1], return_index=True)[1]
        end[series[last]] = rows[last] + 1
    return end - indptr[:-1]


def _series_stats(run: TrainedRun, store: Store, wanted: np.ndarray):
    """scale_by=series: loc / scale [n_input, C] of the input's series, those the run's
    loaders scale the training store's series of the same id with (`train_series_stats`).
    Only the `wanted` series need one; the others get loc 0, scale 1 (never read)."""
    train, data = run.store, run.cfg.data
    loc, scale = train_series_stats(train, chosen.split_spec(data, train), data.scaling)
    if train.n_series == 1 and store.n_series == 1:  # wide data: ids come from file names
        return loc, scale
    where = {str(uid): i for i, uid in enumerate(train.ids)}
    ids = [str(u) for u in store.ids]
    missing = [ids[i] for i in np.flatnonzero(wanted) if ids[i] not in where]
    if missing:
        raise UserError(
            f"series {_some(missing)} of the input are not in the training store "
            f"{train.path}: the run scales inputs by each series' training statistics "
            "(data.scale_by=series), so it can forecast only the series it was trained on"
        )
    at = np.array([where.get(u, -1) for u in ids], dtype=np.int64)
    known = at >= 0
    out_loc = np.zeros((store.n_series, loc.shape[1]), np.float32)
    out_scale = np.ones((store.n_series, scale.shape[1]), np.float32)
    out_loc[known], out_scale[known] = loc[at[known]], scale[at[known]]
    return out_loc, out_scale


def _some(ids: list[str], shown: int = 3) -> str:
    """'a', 'b', 'c' and 62 more: quoted, with any control character of a hostile id escaped."""
    more = f" and {len(ids) - shown:,} more" if len(ids) > shown else ""
    return ", ".join(map(repr, ids[:shown])) + more


class _Writer:
    """Long-format rows to a temporary file beside `output`, renamed into place on close."""

    def __init__(self, output: Path, schema):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self.output = output
        self.tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.schema = schema
        try:
            if output.suffix.lower() == ".csv":
                self.writer = pacsv.CSVWriter(str(self.tmp), schema)
            else:
                self.writer = pq.ParquetWriter(str(self.tmp), schema)
        except BaseException:
            # The file may exist already (a full disk refuses its header): nobody else
            # would remove it.
            self.tmp.unlink(missing_ok=True)
            raise
        self.rows = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        arrays = [pa.array(columns[f.name], f.type) for f in self.schema]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += len(next(iter(columns.values())))

    def commit(self) -> None:
        self.writer.close()
        place(self.tmp, self.output)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _schema(store: Store, value_cols: list[str], many_targets: bool, seconds: bool):
    import pyarrow as pa

    if store.time_unit == "index":
        ds = pa.int64()
    else:  # in seconds, CSV shows "2020-01-01 00:00:00" rather than nine more zeros
        ds = pa.timestamp("s" if seconds else "ns")
    fields = [("unique_id", pa.string()), ("ds", ds)]
    if many_targets:
        fields.append(("target", pa.string()))
    fields += [(c, pa.float32()) for c in value_cols]
    return pa.schema(fields)


def predict(
    run: TrainedRun,
    src: str | os.PathLike,
    output: str | os.PathLike,
    *,
    quantiles: tuple[float, ...] | None = None,
    overwrite: bool = False,
    skip_short: bool = False,
    format: str = "long",
    id_col: str = "unique_id",
    time_col: str = "ds",
    on_gap: str = "error",
    ignore_cols: tuple[str, ...] = (),
    freq: str | None = None,
    time_format: str | None = None,
) -> PredictSummary:
    """Forecast the H steps after the last target of every series of `src` (a store, or a
    CSV / Parquet file laid out like the run's data) into `output` (.csv or .parquet), long:
    `unique_id, ds, [target,] <model>, <model>-lo-<level>..., <model>-median,
    <model>-hi-<level>...` in the data's units (`tsforge.forecasts`). A column `target` names
    the channel when the data has several targets.

    A series with fewer rows than input_size up to its last target is left-padded and masked,
    as `data.min_input_size` pads in training, down to `data.min_input_size` rows (1 when the
    run set none). A series shorter than that, or without any target value, is refused (a
    UserError naming them), or left out with `skip_short`. `freq` is the input's frequency
    (default: inferred); it must be the run's. `output` must lie in an existing folder;
    `overwrite` replaces a file there, never a folder or an input."""
    src, output = Path(src), Path(output)
    if isinstance(run.store, Mixture):
        raise UserError(f"{run.run_dir} was trained on data=mixture: predict reads the layout of "
                        "the input from the run's store, and a mixture has none; evaluate it "
                        "with 'tsforge evaluate', or fine-tune it on your store first")
    _check_output(output, overwrite, [src, run.store.path])
    levels = _levels(run.loss, quantiles)
    names = _columns(run.model_name, levels)
    options = dict(format=format, id_col=id_col, time_col=time_col, on_gap=on_gap,
                   ignore_cols=tuple(ignore_cols), freq=freq, time_format=time_format)  # fmt: skip

    def reads(err: OSError) -> bool:  # a fault of reading the input or the training store
        return err.filename is not None and any(
            within(err.filename, p) for p in (src, run.store.path))

    with writing(output, "--output", reads=reads):
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.input-", dir=output.parent))
        try:
            store = _open_input(src, run.store, tmp, options)
            return _forecast(run, store, src, output, levels, names, skip_short)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _min_rows(data: DictConfig) -> int:
    """Fewest rows up to a series' last target value that predict forecasts: the run's
    `data.min_input_size`, else 1 (any series with a value, padded to input_size)."""
    return int(data.min_input_size) if data.min_input_size else 1


def _unforecastable(src: Path, ids: np.ndarray, short: np.ndarray, empty: np.ndarray,
                    m: int) -> str:  # fmt: skip
    """The one line that refuses the series predict cannot forecast, and says the fix."""
    bad = short | empty
    n_bad, n = int(bad.sum()), len(ids)
    why, fix = [], []
    if short.any():
        why.append(f"{int(short.sum()):,} have fewer than data.min_input_size={m} rows up to "
                   "their last target value")  # fmt: skip
        fix.append(f"give each series at least {m} rows up to its last target value")
    if empty.any():
        why.append(f"{int(empty.sum()):,} have no target value")
        fix.append("leave out the series without values")
    who = f"{n_bad:,} of the {n:,} series" if n_bad < n else f"all {n:,} series"
    if n_bad < n:
        fix.append(f"pass --skip-short to forecast the other {n - n_bad:,}")
    return (f"{who} of --input {src} cannot be forecast: {' and '.join(why)} "
            f"({_some([str(u) for u in ids[bad]])}): {', or '.join(fix)}")


def _forecast(run: TrainedRun, store: Store, src: Path, output: Path, levels, names,
              skip_short: bool) -> PredictSummary:  # fmt: skip
    data, roles = run.cfg.data, store.roles
    L, H, m = int(data.input_size), int(data.horizon), _min_rows(data)
    # Forecasts pad down to m real input rows, as training pads with data.min_input_size.
    spec = WindowSpec(input_size=L, horizon=H, min_input_size=m, multivariate=data.multivariate)
    ids = store.ids
    t_end = _target_ends(store)
    empty = t_end == 0
    short = (t_end < m) & ~empty
    if (short | empty).all() or ((short | empty).any() and not skip_short):
        raise UserError(_unforecastable(src, ids, short, empty, m))
    # lo = hi - H = the forecast start: one window per series (and channel) with >= m rows.
    index = WindowIndex(t_end, t_end + H, spec, len(roles.target))
    wanted = index.counts > 0
    uses_futr = MODELS[run.model_name].supports_exog and bool(roles.futr_exog)
    lacking = wanted & (store.lengths < t_end + H)
    if uses_futr and lacking.any():
        i = int(np.flatnonzero(lacking)[0])
        raise UserError(
            f"{run.model_name} reads the future-known covariates {', '.join(roles.futr_exog)} "
            f"over the horizon, but series '{ids[i]}' of --input {src} ends "
            f"{int(store.lengths[i] - t_end[i])} rows after its last target: give the {H} rows "
            f"after each series' last target with {', '.join(roles.futr_exog)} filled and "
            f"{', '.join(roles.target)} empty ({int(lacking.sum())} series lack them)"
        )
    stats = None
    if data.scale_by == "series" and data.scaling != "none":
        stats = _series_stats(run, store, wanted)
    # The loader cuts, pads, masks and scales the windows as it does in training and
    # evaluation; only the statistics of scale_by=series come from the training store.
    loader = WindowLoader(store, spec, split_spec={"kind": "none"}, mode="eval",
                          global_batch_size=1, scaling=data.scaling, scale_by=data.scale_by,
                          series_stats=stats, cache_mb=data.cache_mb)  # fmt: skip
    many = len(roles.target) > 1
    freq = Freq.parse(store.freq, store.time_unit)
    seconds = output.suffix.lower() == ".csv" and bool(
        np.all(store.starts % 10**9 == 0) and (freq.is_calendar or freq.n % 10**9 == 0)
    )
    writer = _Writer(output, _schema(store, names, many, seconds))
    dtype = autocast_dtype(run.cfg.trainer.precision, run.env.device)
    batch_size = max(1, int(data.eval_batch_size))
    try:
        for a in range(0, index.n_windows, batch_size):
            series, channel, t = index.locate(np.arange(a, min(a + batch_size, index.n_windows)))
            batch = loader.gather(series, channel, t)
            point_BHC, q_BHCQ = _run_model(run, batch, levels, dtype)
            writer.write(_rows(store, freq, series, channel, t, H, point_BHC, q_BHCQ, names,
                               many, spec.multivariate))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return PredictSummary(
        output=str(output), rows=writer.rows, n_series=store.n_series,
        n_forecast=int(wanted.sum()), n_padded=int((wanted & (t_end < L)).sum()),
        input_size=L, min_rows=m, horizon=H, columns=list(writer.schema.names),
        skipped_short=[str(u) for u in ids[short]], skipped_empty=[str(u) for u in ids[empty]],
    )  # fmt: skip


@torch.no_grad()
def _run_model(run: TrainedRun, batch: dict, levels, dtype):
    """Point [B, H, C] and quantile [B, H, C, Q] (or None) forecasts of a loader batch in the
    data's units (un-scaled with the batch's loc / scale, as the evaluator does), as numpy."""
    device = run.env.device
    y_hat_BHCO = forecast(run.model, batch, device, dtype)
    loc, scale = batch["loc"].to(device), batch["scale"].to(device)
    point = scaling_mod.inverse(run.loss.point(y_hat_BHCO), loc, scale).cpu().numpy()
    if not levels:
        return point, None
    q = run.loss.quantiles(y_hat_BHCO, levels)
    q = scaling_mod.inverse(q, loc.unsqueeze(-1), scale.unsqueeze(-1))
    return point, q.cpu().numpy()


def _rows(store, freq, series, channel, t, H, point_BHC, q_BHCQ, names, many, multivariate):
    """Long-format columns of a batch: one row per window, channel and horizon step."""
    B, _, C = point_BHC.shape
    # rows in (window, channel, step) order
    values = [point_BHC.transpose(0, 2, 1).reshape(-1)]
    if q_BHCQ is not None:
        q = q_BHCQ.transpose(0, 2, 1, 3).reshape(-1, q_BHCQ.shape[-1])
        values += [q[:, j] for j in range(q.shape[1])]
    steps = np.arange(H)
    k = (t[:, None, None] + steps[None, None, :]).repeat(C, axis=1).reshape(-1)
    start = np.repeat(store.starts[series], C * H)
    ts = np.asarray(freq.step(start, k), dtype=np.int64)
    if store.time_unit == "ns":
        ts = ts.astype("datetime64[ns]")
    out = {"unique_id": np.repeat(store.ids[series].astype(object), C * H), "ds": ts}
    if many:
        targets = np.array(store.roles.target, dtype=object)
        ch = np.tile(np.arange(C), B) if multivariate else channel
        out["target"] = np.repeat(targets[ch], H)
    out.update(zip(names, values))
    return out
