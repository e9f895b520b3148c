"""Forecasts scored as the M4 competition scores them: `tsforge score`.

    tsforge score forecasts.parquet --actuals test.csv --history train.csv --season 24
    tsforge score forecasts.csv --actuals test.parquet --history train.zarr --season 24 --json
    tsforge score runs/mine --actuals test.csv --history train.zarr   # the run forecasts

    from tsforge.runs.score import score, format_report
    report = score("forecasts.parquet", actuals="test.csv", history="train.csv", season=24)

FORECASTS is what `tsforge predict` writes, or any file in Nixtla's convention (long:
`unique_id, ds, <model>` and quantile columns `<model>-lo-80`, `<model>-median`,
`<model>-hi-80`; tsforge.forecasts). A file with several models needs `--model NAME`. A run
directory instead: its best (else latest) checkpoint forecasts the H steps after each series
of --history, exactly as `tsforge predict RUN_DIR --input HISTORY` would, and those are
scored; --season then defaults to the run's `data.season`.

Actuals are long `unique_id, ds, y`, or with `actuals_format="rows"` one row per series (an
id, then the values of its forecast steps in order, as M4's test files hold them); the
history is a tsforge store (its target) or a long file `unique_id, ds, y` of the in-sample
series. Every forecast series needs its history and
its actual values at every forecast step, and every series has the same number of steps.

The figures (tsforge.metrics): sMAPE and MASE as M4 defines them (MASE scaled by the in-sample
MAE of the seasonal naive forecast over each whole history; lag 1 where a history is too short
for the season), OWA against Naive2, MAE and MSE, and with quantiles the scaled CRPS; beside
them Naive1, seasonal naive and Naive2 computed on the same series, overall and per horizon
step. Series with a constant history have no MASE scale and are left out of MASE (M4 would
report infinity); `mase_series` says how many count.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tsforge.errors import UserError
from tsforge.forecasts import quantile_of
from tsforge.metrics import BASELINES, baseline_forecasts, mase_scale, owa, score_panel

ID, DS, Y = "unique_id", "ds", "y"


# --------------------------------------------------------------------------------- input
def _read_long(path: Path, flag: str, values: list[str]) -> tuple[pd.DataFrame, str]:
    """A long CSV / Parquet file as (frame with `unique_id, ds, *values, row`, time unit).
    Every cell must hold a value; `row` is the 1-based data row, for messages."""
    from tsforge.data.readers import open_source

    src = open_source(path)
    missing = [c for c in (ID, DS, *values) if c not in src.columns]
    if missing:
        raise UserError(
            f"{flag} {path} has no column {', '.join(repr(c) for c in missing)}: give long "
            f"format with the columns {', '.join((ID, DS, *values))}"
        )
    spec = src.time_spec(DS)
    frames = []
    for piece in src.pieces(id_col=ID, time_col=DS, numeric=values, time=spec,
                            piece_rows=1 << 20):  # fmt: skip
        frame = {ID: piece.ids.to_pandas().astype(object), DS: piece.time.to_pandas()}
        frame.update({c: piece.columns[c].to_numpy(zero_copy_only=False) for c in values})
        frame["row"] = piece.first_row + np.arange(len(piece))
        frames.append(pd.DataFrame(frame))
    if not frames or not sum(map(len, frames)):
        raise UserError(f"{flag} {path} has no data rows: give a file with at least one row")
    df = pd.concat(frames, ignore_index=True)
    for col in (ID, DS):
        if df[col].isna().any():
            row = int(df.loc[df[col].isna(), "row"].iloc[0])
            raise UserError(f"{flag} {path}: row {row} has no {col}: fill it or drop the row")
    for col in values:
        bad = ~np.isfinite(df[col].to_numpy(dtype=np.float64))
        if bad.any():
            row = int(df.loc[bad, "row"].iloc[0])
            raise UserError(
                f"{flag} {path}: column {col!r} of row {row} is empty, NaN or infinite "
                f"({int(bad.sum())} such rows): give every row a number or drop those rows"
            )
    df[ID] = df[ID].astype(str)
    dup = df.duplicated([ID, DS])
    if dup.any():
        first = df.loc[dup].iloc[0]
        raise UserError(
            f"{flag} {path}: series {first[ID]!r} has two rows at ds {_ds(first[DS], spec.unit)} "
            f"(row {int(first['row'])}, {int(dup.sum())} duplicated rows in all): keep one row "
            "per series and time"
        )
    return df.sort_values([ID, DS], kind="stable").reset_index(drop=True), spec.unit


def _ds(value, unit: str) -> str:
    return str(int(value)) if unit == "index" else str(pd.Timestamp(int(value)))


@dataclasses.dataclass
class _Forecasts:
    frame: pd.DataFrame  # unique_id, ds, point, q0, q1, ..., row; sorted
    unit: str
    model: str
    levels: tuple[float, ...]  # sorted; the frame's q<i> columns in this order


def _columns(path: Path, columns: list[str], model: str | None):
    """(model, {level: column}) of a forecast file's columns."""
    if "target" in columns:
        raise UserError(
            f"{path} has a 'target' column (forecasts of several targets): score one target "
            "at a time: keep the rows of one target and drop the column"
        )
    values = [c for c in columns if c not in (ID, DS)]
    # A quantile column is named after its model's point column (tsforge.forecasts).
    points = [c for c in values if not any(quantile_of(p, c) is not None for p in values)]
    if model is None:
        if len(points) != 1:
            raise UserError(
                f"{path} holds {'no' if not points else len(points)} forecast columns "
                f"({', '.join(points) or 'only unique_id, ds'}): "
                + ("name the one to score with --model NAME" if points else
                   "give forecasts as unique_id, ds, <model>")  # fmt: skip
            )
        model = points[0]
    elif model not in points:
        raise UserError(f"{path} has no forecast column {model!r}: --model is one of "
                        f"{', '.join(points) or '(none)'}")  # fmt: skip
    quantiles = {quantile_of(model, c): c for c in values if quantile_of(model, c) is not None}
    for q, c in quantiles.items():
        if not 0 < q < 1:
            raise UserError(f"{path}: column {c!r} names an interval of 100% or more: name levels "
                            f"between 0 and 100, such as {model}-lo-80 and {model}-hi-80")
    return model, dict(sorted(quantiles.items()))


def read_forecasts(path: str | os.PathLike, model: str | None = None) -> _Forecasts:
    """A forecast file: the point column of `model` (the only one when None) and its
    quantile columns in either naming."""
    from tsforge.data.readers import open_source

    path = Path(path)
    model, quantiles = _columns(path, list(open_source(path).columns), model)
    df, unit = _read_long(path, "FORECASTS", [model, *quantiles.values()])
    names = {model: "point", **{c: f"q{i}" for i, c in enumerate(quantiles.values())}}
    return _Forecasts(df.rename(columns=names), unit, model, tuple(quantiles))


@dataclasses.dataclass
class _History:
    values: dict[str, np.ndarray]  # id -> the in-sample series, in time order
    last_ds: dict[str, int]  # id -> its last time stamp (ns or index)
    unit: str


def _actuals_from_rows(path: Path, fc: _Forecasts) -> pd.DataFrame:
    """Actuals given as one row per series (an id, then the values of the forecast steps, as
    M4's test files hold them), in long form at the forecasts' own time stamps: the k-th value
    of a row is the actual of the series' k-th forecast step."""
    from tsforge.data.readers import open_source
    from tsforge.data.rows import RowsSource

    steps = fc.frame.groupby(ID, sort=False)[DS].apply(list)
    out: dict[str, list] = {ID: [], DS: [], Y: [], "row": []}
    for uid, values, row in RowsSource(open_source(path), id_col=None).series():
        uid = str(uid)
        ds = steps.get(uid)
        if ds is None:  # a series without forecasts: named by the checks that follow
            ds, values = [-1], values[:1] if len(values) else np.array([0.0])
        elif len(values) != len(ds) or np.isnan(values).any():
            n = len(values)
            got = "a missing value" if n == len(ds) else f"{n} value{'s' * (n != 1)}"
            raise UserError(
                f"--actuals {path} row {row}: series {uid!r} has {got} but its forecasts "
                f"have {len(ds)} steps: give one value per forecast step"
            )
        out[ID] += [uid] * len(ds)
        out[DS] += list(ds)
        out[Y] += [float(v) for v in values]
        out["row"] += [row] * len(ds)
    if not out[ID]:
        raise UserError(f"--actuals {path} has no data rows: give a file with at least one row")
    return pd.DataFrame(out)


def read_history(src: str | os.PathLike) -> _History:
    """The in-sample series of a store (its target, up to each series' last value) or of a
    long file `unique_id, ds, y`."""
    from tsforge.data.store import Store, is_store

    src = Path(src)
    if not src.exists():
        raise UserError(f"--history {src} does not exist: give a store or a CSV / Parquet file")
    if not is_store(src):
        df, unit = _read_long(src, "--history", [Y])
        groups = df.groupby(ID, sort=False)
        return _History({k: g[Y].to_numpy(np.float64) for k, g in groups},
                        {k: int(g[DS].iloc[-1]) for k, g in groups}, unit)  # fmt: skip
    from tsforge.data.freq import Freq

    store = Store(src)
    if len(store.roles.target) != 1:
        raise UserError(
            f"--history {src} has {len(store.roles.target)} targets "
            f"({', '.join(store.roles.target)}): score one target, from a long file "
            "unique_id, ds, y"
        )
    col = store.column_index(store.roles.target)[0]
    R = store.chunk_rows
    y = np.concatenate([store.values[a : a + R][:, col] for a in range(0, store.n_timesteps, R)])
    freq = Freq.parse(store.freq, store.time_unit)
    values, last = {}, {}
    for i, (uid, a, b) in enumerate(zip(store.ids, store.indptr[:-1], store.indptr[1:])):
        series = y[a:b].astype(np.float64)
        finite = np.flatnonzero(np.isfinite(series))
        n = int(finite[-1]) + 1 if len(finite) else 0  # rows after the last value: covariates
        if len(finite) < n or n == 0:
            raise UserError(
                f"--history {src}: series {str(uid)!r} has "
                + ("no value" if n == 0 else f"{n - len(finite)} missing values")
                + ": fill them (tsforge data ingest --on-gap ffill / --on-nan drop) or score "
                "without that series"
            )
        values[str(uid)] = series[:n]
        last[str(uid)] = int(freq.step(int(store.starts[i]), n - 1))
    return _History(values, last, store.time_unit)


# -------------------------------------------------------------------------------- checks
def _some(ids, k: int = 3) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - k} more" if len(ids) > k else ""
    return ", ".join(repr(i) for i in ids[:k]) + more


def _align(fc: _Forecasts, actuals: pd.DataFrame, history: _History, names: dict):
    """(ids, actual values [N, H]) once every forecast has its history and its actuals."""
    f = fc.frame
    ids = list(dict.fromkeys(f[ID]))
    no_history = [i for i in ids if i not in history.values]
    if no_history:
        raise UserError(
            f"{len(no_history)} series of {names['forecasts']} ({_some(no_history)}) are not in "
            f"--history {names['history']}: give the history of every forecast series"
        )
    have = set(actuals[ID])
    no_actuals = [i for i in ids if i not in have]
    if no_actuals:
        raise UserError(
            f"--actuals {names['actuals']} has no rows of {len(no_actuals)} forecast series "
            f"({_some(no_actuals)}): give their actual values, or drop their forecasts"
        )
    extra = have - set(ids)
    if extra:
        raise UserError(
            f"--actuals {names['actuals']} holds {len(extra)} series without forecasts "
            f"({_some(extra)}): forecast them, or drop them from the actuals"
        )
    steps = f.groupby(ID, sort=False).size()
    if steps.nunique() != 1:
        common = int(steps.mode().iloc[0])
        odd = steps[steps != common]
        raise UserError(
            f"{names['forecasts']} has forecasts of different lengths: series "
            f"{odd.index[0]!r} has {int(odd.iloc[0])} steps, most have {common}: give every "
            "series the same horizon"
        )
    H = int(steps.iloc[0])
    merged = f[[ID, DS]].merge(actuals[[ID, DS, Y]], on=[ID, DS], how="left", sort=False)
    lacking = merged[Y].isna().to_numpy()
    if lacking.any():
        row = merged.loc[lacking].iloc[0]
        raise UserError(
            f"--actuals {names['actuals']} has no value of series {row[ID]!r} at ds "
            f"{_ds(row[DS], fc.unit)} ({int(lacking.sum())} forecast steps lack one): give "
            "actuals for every forecast step (the horizons of the two files must match)"
        )
    if len(actuals) != len(f):
        counts = actuals.groupby(ID).size()
        odd = counts[counts != H]
        raise UserError(
            f"--actuals {names['actuals']} has {int(odd.iloc[0])} rows of series "
            f"{odd.index[0]!r} but the forecasts have {H} steps: give actuals for the "
            "forecast steps only (the horizons of the two files must match)"
        )
    first = f.groupby(ID, sort=False)[DS].first()
    early = [i for i in ids if first[i] <= history.last_ds[i]]
    if early:
        i = early[0]
        raise UserError(
            f"the forecasts of series {i!r} start at ds {_ds(first[i], fc.unit)}, within its "
            f"history (which ends at {_ds(history.last_ds[i], history.unit)}): give as "
            "--history only the values before the forecasts"
        )
    return ids, merged[Y].to_numpy(np.float64).reshape(len(ids), H)


# ------------------------------------------------------------------------------- scoring
def score(
    forecasts: str | os.PathLike,
    *,
    actuals: str | os.PathLike,
    history: str | os.PathLike,
    season: int | None = None,
    model: str | None = None,
    checkpoint: str = "best",
    actuals_format: str = "long",
) -> dict:
    """The report of `tsforge score` (its --json): see the module's docstring."""
    forecasts = Path(forecasts)
    if forecasts.is_dir() and (forecasts / "config.yaml").exists():
        return _score_run(forecasts, actuals, history, season, checkpoint, actuals_format)
    if season is None:
        raise UserError("--season is needed to score a forecast file: give the data's "
                        "seasonal period (M4: 24 hourly, 12 monthly, 4 quarterly, 1 yearly)")
    if season < 1:
        raise UserError(f"--season {season}: give a seasonal period of at least 1")
    if not forecasts.exists():
        raise UserError(f"FORECASTS {forecasts} does not exist: give a forecast file (tsforge "
                        "predict's --output) or a run directory")  # fmt: skip
    fc = read_forecasts(forecasts, model)
    if actuals_format == "rows":
        act, act_unit = _actuals_from_rows(Path(actuals), fc), fc.unit
    elif actuals_format == "long":
        act, act_unit = _read_long(Path(actuals), "--actuals", [Y])
    else:
        raise UserError(f"--actuals-format {actuals_format!r}: use long or rows")
    hist = read_history(history)
    units = {"FORECASTS": fc.unit, "--actuals": act_unit, "--history": hist.unit}
    if len(set(units.values())) > 1:
        kinds = ", ".join(f"{k} {'integers' if u == 'index' else 'timestamps'}"
                          for k, u in units.items())  # fmt: skip
        raise UserError(f"the files' ds columns differ in kind ({kinds}): give all three the "
                        "same kind of time")  # fmt: skip
    names = {"forecasts": str(forecasts), "actuals": str(actuals), "history": str(history)}
    ids, truth_NH = _align(fc, act, hist, names)
    return _report(fc, ids, truth_NH, [hist.values[i] for i in ids], season)


def _report(fc: _Forecasts, ids, truth_NH, histories, season: int) -> dict:
    N, H = truth_NH.shape
    point_NH = fc.frame["point"].to_numpy(np.float64).reshape(N, H)
    q_NHQ = None
    if fc.levels:
        cols = [f"q{i}" for i in range(len(fc.levels))]
        q_NHQ = fc.frame[cols].to_numpy(np.float64).reshape(N, H, len(cols))
    scale_N = np.array([mase_scale(y, season) for y in histories])
    base = [baseline_forecasts(y, H, season) for y in histories]
    results = {"model": score_panel(point_NH, truth_NH, scale_N, q_NHQ, fc.levels)}
    for name in BASELINES:
        results[name] = score_panel(np.stack([b[name] for b in base]), truth_NH, scale_N)
    ref, ref_steps = results["naive2"]
    for overall, steps in results.values():
        overall["owa"] = owa(overall["smape"], overall["mase"], ref["smape"], ref["mase"])
        steps["owa"] = [owa(*v) for v in zip(steps["smape"], steps["mase"],
                                            ref_steps["smape"], ref_steps["mase"])]  # fmt: skip
    order = ("smape", "mase", "owa", "mae", "mse")

    def ordered(d: dict) -> dict:
        return {k: d[k] for k in (*order, *sorted(set(d) - set(order)))}

    return {
        "model": fc.model,
        "n_series": N,
        "horizon": H,
        "season": season,
        "levels": list(fc.levels),
        "mase_series": int(np.sum(np.isfinite(scale_N) & (scale_N > 0))),
        "metrics": ordered(results["model"][0]),
        "baselines": {k: ordered(results[k][0]) for k in BASELINES},
        "per_step": {k: ordered(v[1]) for k, v in results.items()},
    }


def _score_run(run_dir: Path, actuals, history, season, checkpoint, actuals_format) -> dict:
    """A run's forecasts of the steps after each series of `history`, scored."""
    from tsforge.runs.load import load_run
    from tsforge.runs.predict import predict

    run = load_run(run_dir, checkpoint)
    season = int(run.cfg.data.season) if season is None else season
    tmp = Path(tempfile.mkdtemp(prefix="tsforge-score-"))
    try:
        out = tmp / "forecasts.parquet"
        predict(run, history, out)
        report = score(out, actuals=actuals, history=history, season=season,
                       model=run.model_name, actuals_format=actuals_format)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"run_dir": str(run_dir), "checkpoint": run.checkpoint, "step": run.step, **report}


# -------------------------------------------------------------------------------- output
def format_report(report: dict) -> str:
    """The overall table (the model beside the baselines) and the per-step table."""
    cols = [report["model"], *BASELINES]
    blocks = [report["metrics"], *(report["baselines"][b] for b in BASELINES)]
    width = max(14, *(len(c) for c in cols))
    keys = list(report["metrics"])

    def num(x) -> str:
        return "-" if x is None or not np.isfinite(x) else f"{x:.4f}"

    lines = [
        f"{report['n_series']} series x {report['horizon']} steps, season "
        f"{report['season']} (MASE over {report['mase_series']} series with a scale)",
        "",
        f"{'metric':<12}" + "".join(f"  {c:>{width}}" for c in cols),
    ]
    for k in keys:
        lines.append(f"{k:<12}" + "".join(f"  {num(b.get(k)):>{width}}" for b in blocks))
    steps = report["per_step"]
    lines += ["", "per horizon step: sMAPE, MASE of the model (naive2 in brackets)",
              f"{'h':>4}  {'smape':>18}  {'mase':>18}"]
    for h in range(report["horizon"]):
        m, n2 = steps["model"], steps["naive2"]
        lines.append(f"{h + 1:>4}  {num(m['smape'][h]):>8} ({num(n2['smape'][h]):>7})  "
                     f"{num(m['mase'][h]):>8} ({num(n2['mase'][h]):>7})")  # fmt: skip
    return "\n".join(lines)
