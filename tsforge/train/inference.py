"""A trained run, rebuilt from its directory: evaluate it on a split, or forecast past the end
of new series.

    from tsforge.train.inference import evaluate_run, load_run, predict
    run = load_run("runs/mine", checkpoint="best")     # best.pt, else latest.pt
    report = evaluate_run(run, split="test")           # overall and per-horizon-step metrics
    summary = predict(run, "new.csv", "forecasts.parquet")

(`tsforge evaluate RUN_DIR` and `tsforge predict RUN_DIR --input SRC --output OUT` on the
command line.)

The run is rebuilt from `RUN_DIR/config.yaml` with the same builders that trained it
(`tsforge.train.builders`), so the store, the loss, the model and the evaluation loaders are
those of the run, and `evaluate_run` on the test split gives the `test` block of the run's
`metrics.json` again.

`predict` forecasts the H steps after each series' last target value. Its inputs are cut by
the window loader's own gather code (same masking, padding and covariates as in training) and
scaled as in training: per window from the input rows, or, with `scale_by=series`, with the
training store's train-split statistics of the series of the same id. A model that reads
future-known covariates needs them over the horizon: the input must hold H rows after each
series' last target (covariates filled, target empty).

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
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from tsforge.config.checks import check_saved
from tsforge.data import scaling as scaling_mod
from tsforge.data import splits as splits_mod
from tsforge.data.freq import Freq
from tsforge.data.loader import WindowLoader, WindowSpec
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
from tsforge.models import MODELS
from tsforge.train import CHECKPOINTS, builders
from tsforge.train.checkpoint import load_checkpoint, load_weights
from tsforge.train.distributed import DistEnv
from tsforge.train.precision import autocast_dtype, forecast
from tsforge.train.rundir import read_config

OUTPUT_SUFFIXES = FORECAST_SUFFIXES
# Levels reported for distribution losses (normal, studentt), which have no trained levels.
DEFAULT_LEVELS = (0.1, 0.5, 0.9)


# ------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class TrainedRun:
    """A run's config, data, loss and model with a checkpoint's weights, ready to use."""

    run_dir: Path
    cfg: DictConfig
    store: Store
    loss: torch.nn.Module
    model: torch.nn.Module
    env: DistEnv
    checkpoint: str  # "best" | "latest": the file the weights came from
    step: int

    @property
    def model_name(self) -> str:
        return str(self.cfg.model.name)


def _train_hint(run_dir: Path) -> str:
    return f"train it first with python -m tsforge.launch hydra.run.dir={run_dir}"


def checkpoint_path(run_dir: Path, which: str = "best") -> tuple[Path, str]:
    """(path, name) of the run's `best.pt` (else `latest.pt`), or of `latest.pt`."""
    if which not in CHECKPOINTS:
        raise UserError(f"--checkpoint {which!r} is not one of {', '.join(CHECKPOINTS)}")
    folder = run_dir / "checkpoints"
    for name in (which, "latest"):
        path = folder / f"{name}.pt"
        if path.exists():
            return path, name
    raise UserError(f"run {run_dir} has no checkpoint: {_train_hint(run_dir)}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"the run was trained with trainer.device={name} but no GPU is visible")
    return torch.device(name)


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the run in `run_dir` with the weights of its `checkpoint` ("best" | "latest")."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: {_train_hint(run_dir)}")
    config = run_dir / "config.yaml"
    if not config.exists():
        raise UserError(
            f"{run_dir} has no config.yaml, so it is not a tsforge run directory: "
            f"{_train_hint(run_dir)}"
        )
    path, name = checkpoint_path(run_dir, checkpoint)
    cfg = read_config(config)
    check_saved(cfg, config)
    threads = cfg.trainer.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    # One process, whatever launched this one: no process group is joined.
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=_device(cfg.trainer.device),
                  backend=None)
    store = builders.store(cfg.data)
    loss = builders.loss(cfg.loss).to(env.device)  # its buffers (quantile levels) too
    model = builders.model(cfg.model, cfg.data, store, loss)
    ckpt = load_checkpoint(path, fingerprint=store.fingerprint, model_name=cfg.model.name)
    load_weights(model, ckpt, path)
    model.to(env.device).eval()
    return TrainedRun(run_dir, cfg, store, loss, model, env, name, int(ckpt["step"]))


# ---------------------------------------------------------------------------- evaluation
class _PerStep:
    """Sums of |e|, e^2 and counts per horizon step of the model and the baseline (float64),
    fed by `Evaluator.evaluate(observe=...)` one batch at a time."""

    def __init__(self, horizon: int, device: torch.device):
        self.sums = torch.zeros(2, 3, horizon, dtype=torch.float64, device=device)

    def __call__(self, point_BHC, y_BHC, mask_BHC, naive_BHC) -> None:
        observed = mask_BHC > 0
        count_H = observed.sum(dim=(0, 2)).double()
        for k, f_BHC in enumerate((point_BHC, naive_BHC)):
            if f_BHC is None:
                continue
            err = torch.where(observed, f_BHC.double() - y_BHC.double(), 0.0)
            self.sums[k, 0] += err.abs().sum(dim=(0, 2))
            self.sums[k, 1] += err.square().sum(dim=(0, 2))
            self.sums[k, 2] += count_H

    def result(self) -> dict[str, dict[str, list[float | None]]]:
        out = {}
        for k, name in enumerate(("model", "seasonal_naive")):
            abs_H, sq_H, n_H = self.sums[k].cpu().numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = {"mae": _floats(abs_H / n_H), "mse": _floats(sq_H / n_H)}
        return out


def _floats(x: np.ndarray) -> list[float | None]:
    """JSON-safe: NaN (a step with no observed point) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in x]


def evaluate_run(run: TrainedRun, split: str = "test") -> dict[str, Any]:
    """Metrics of the run's model and of the seasonal-naive baseline on every window of
    `split`, overall and per horizon step (`mae`, `mse` lists of H values)."""
    if split not in ("val", "test"):
        raise UserError(f"--split {split!r}: use test or val")
    cfg = run.cfg
    loaders = builders.loaders(cfg.data, cfg.trainer.seed, run.store, run.env)
    if split not in loaders:
        raise UserError(
            f"the {split} split of {cfg.data.name} has no window of input_size="
            f"{cfg.data.input_size} + horizon={cfg.data.horizon}: evaluate another split "
            "(--split val|test)"
        )
    evaluator = builders.evaluator(cfg, loaders, run.loss, run.env)
    per_step = _PerStep(cfg.data.horizon, run.env.device)
    metrics = evaluator.evaluate(run.model, split, with_baseline=True, observe=per_step)
    return {
        "run_dir": str(run.run_dir),
        "split": split,
        "checkpoint": run.checkpoint,
        "step": run.step,
        "windows": loaders[split].n_windows,
        "model_name": run.model_name,
        "model": {k: v for k, v in metrics.items() if not k.startswith("naive/")},
        "seasonal_naive": {k[6:]: v for k, v in metrics.items() if k.startswith("naive/")},
        "per_step": per_step.result(),
    }


# ---------------------------------------------------------------------------- prediction
@dataclasses.dataclass
class PredictSummary:
    """What `predict` wrote; `tsforge predict` prints it."""

    output: str
    rows: int
    n_series: int  # series in the input
    n_forecast: int  # series forecast
    horizon: int
    columns: list[str]
    skipped_short: list[str]  # ids of series with fewer rows than the model's input needs
    skipped_empty: list[str]  # ids of series without any target value

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _levels(loss, quantiles) -> tuple[float, ...]:
    """Quantile levels to write: asked for, else the loss's own (none for a point loss)."""
    if quantiles:
        if not getattr(loss, "is_probabilistic", False):
            raise UserError(
                f"--quantiles: the model was trained with the point loss "
                f"{type(loss).__name__}, which gives no quantiles: leave --quantiles out"
            )
        levels = tuple(float(q) for q in quantiles)
        if not all(0.0 < q < 1.0 for q in levels):
            raise UserError(f"--quantiles must be levels in (0, 1), got {list(quantiles)}")
        return levels
    if not getattr(loss, "is_probabilistic", False):
        return ()
    return tuple(getattr(loss, "levels", ()) or DEFAULT_LEVELS)


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


def _series_stats(run: TrainedRun, store: Store, series_ids: np.ndarray):
    """Training-store loc / scale [n_input, C] of the input's series (matched by id)."""
    train, data = run.store, run.cfg.data
    spec = builders.split_spec(data, train)
    _, train_hi = splits_mod.resolve(spec, train.lengths, "train")
    targets = train.column_index(train.roles.target)
    loc, scale = scaling_mod.fit_series(train, train_hi, targets, data.scaling)
    if train.n_series == 1 and store.n_series == 1:  # wide data: ids come from file names
        return loc, scale
    where = {str(uid): i for i, uid in enumerate(train.ids)}
    missing = [str(u) for u in series_ids if str(u) not in where]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(
            f"series {', '.join(repr(m) for m in missing[:3])}{more} of the input are not in "
            f"the training store {train.path}: the run scales inputs by each series' training "
            "statistics (data.scale_by=series), so it can forecast only the series it was "
            "trained on"
        )
    at = np.array([where[str(u)] for u in series_ids], dtype=np.int64)
    return loc[at], scale[at]


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
    `unique_id, ds, [target,] <model>, <model>-q-<level>...` in the data's units. A column
    `target` names the channel when the data has several targets. `freq` is the input's
    frequency (default: inferred); it must be the run's. `output` must lie in an existing
    folder; `overwrite` replaces a file there, never a folder or an input."""
    src, output = Path(src), Path(output)
    _check_output(output, overwrite, [src, run.store.path])
    levels = _levels(run.loss, quantiles)
    options = dict(format=format, id_col=id_col, time_col=time_col, on_gap=on_gap,
                   ignore_cols=tuple(ignore_cols), freq=freq, time_format=time_format)  # fmt: skip

    def reads(err: OSError) -> bool:  # a fault of reading the input or the training store
        return err.filename is not None and any(
            within(err.filename, p) for p in (src, run.store.path))

    with writing(output, "--output", reads=reads):
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.input-", dir=output.parent))
        try:
            store = _open_input(src, run.store, tmp, options)
            return _forecast(run, store, src, output, levels)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _forecast(run: TrainedRun, store: Store, src: Path, output: Path, levels) -> PredictSummary:
    data, roles = run.cfg.data, store.roles
    L, H = int(data.input_size), int(data.horizon)
    spec = WindowSpec(input_size=L, horizon=H, min_input_size=data.min_input_size,
                      multivariate=data.multivariate)  # fmt: skip
    ids = store.ids
    t_end = _target_ends(store)
    empty = t_end == 0
    # lo = hi - H = the forecast start: one window per series (and channel) that has the
    # input rows the model needs, none for a shorter series.
    index = WindowIndex(t_end, t_end + H, spec, len(roles.target))
    short = (index.counts == 0) & ~empty
    if not index.n_windows:
        raise UserError(
            f"no series of --input {src} has the {L - spec.pad} rows before its last target "
            f"that the model's input needs (input_size={L}): give longer series"
        )
    uses_futr = MODELS[run.model_name].supports_exog and bool(roles.futr_exog)
    lacking = (index.counts > 0) & (store.lengths < t_end + H)
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
        stats = _series_stats(run, store, ids)

    # The loader's gather reads windows as training does; scaling="none" leaves the inputs
    # raw, to be scaled here with statistics the loader would take from this store.
    loader = WindowLoader(store, spec, split_spec={"kind": "none"}, mode="eval",
                          global_batch_size=1, scaling="none", cache_mb=data.cache_mb)  # fmt: skip
    names = [run.model_name] + [f"{run.model_name}-q-{q:g}" for q in levels]
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
            point_BHC, q_BHCQ = _run_model(run, batch, levels, stats, dtype)
            writer.write(_rows(store, freq, series, channel, t, H, point_BHC, q_BHCQ, names,
                               many, spec.multivariate))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return PredictSummary(
        output=str(output), rows=writer.rows, n_series=store.n_series,
        n_forecast=int((index.counts > 0).sum()), horizon=H, columns=list(writer.schema.names),
        skipped_short=[str(u) for u in ids[short]], skipped_empty=[str(u) for u in ids[empty]],
    )  # fmt: skip


@torch.no_grad()
def _run_model(run: TrainedRun, batch: dict, levels, stats, dtype):
    """Scale a raw batch as in training, forecast, and return point [B, H, C] and quantiles
    [B, H, C, Q] (or None) in the data's units, as numpy."""
    y_BLC = batch["insample_y"].numpy()
    mask_BLC = batch["insample_mask"].numpy()
    if stats is None:
        loc, scale = scaling_mod.window_stats(y_BLC, mask_BLC, run.cfg.data.scaling)
    else:
        series, channel = batch["series"].numpy(), batch["channel"].numpy()
        at = series if run.cfg.data.multivariate else (series, np.maximum(channel, 0))
        loc = stats[0][at].reshape(len(series), 1, -1)
        scale = stats[1][at].reshape(len(series), 1, -1)
    scaling_mod.apply(y_BLC, loc, scale, mask_BLC)
    device = run.env.device
    y_hat_BHCO = forecast(run.model, batch, device, dtype)
    loc_t = torch.from_numpy(loc).to(device)
    scale_t = torch.from_numpy(scale).to(device)
    point = scaling_mod.inverse(run.loss.point(y_hat_BHCO), loc_t, scale_t).cpu().numpy()
    if not levels:
        return point, None
    q = run.loss.quantiles(y_hat_BHCO, levels)
    q = scaling_mod.inverse(q, loc_t.unsqueeze(-1), scale_t.unsqueeze(-1))
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
