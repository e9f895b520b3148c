"""A trained run scored on data it never saw, under that data's own protocol: `tsforge
evaluate RUN_DIR --data NAME_OR_STORE --horizon H` and the zero-shot suite (`--suite`).

    from tsforge.runs.zeroshot import evaluate_suite, evaluate_zero_shot
    report = evaluate_zero_shot("runs/mine", "ETTh1", horizon=96)
    report["test"]["mase"], report["baseline"]["seasonal_naive"]["mase"]
    suite = evaluate_suite("runs/mine")          # SUITE, with GIFT-Eval's aggregation

The protocol of a registry name is its `conf/data/<name>.yaml` composed by Hydra as a launch
would compose it (split, season, scaling, scale_by, metrics_on); a store keeps its own split,
with the season it records or `--season`. The run's model is rebuilt from its config with its
input_size, its univariate (or multivariate) windows, and the horizon asked for
(`runs.load.load_run_on`); the windows are scored by the run's own evaluator
(`runs.evaluate.evaluate_run`), beside the seasonal naive on the same windows. Nothing is
written into the run directory.

The suite's aggregation follows GIFT-Eval (Aksu et al. 2024): per dataset, MASE and CRPS
relative to the seasonal naive's on the same windows, then their geometric means over the
datasets. CRPS is GluonTS's mean weighted quantile loss (2 * the level-averaged pinball loss
summed over points / sum |y|); a point forecast counts as every quantile equal to it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tsforge.config import CONF_DIR
from tsforge.errors import UserError

# (registry name, horizon): ETTh1/ETTh2/ETTm1 H=96, Exchange H=96, ILI H=24, M4 Hourly H=48.
SUITE = (
    ("ETTh1", 96), ("ETTh2", 96), ("ETTm1", 96), ("Exchange", 96), ("ILI", 24),
    ("M4-Hourly", 48),
)  # fmt: skip


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _data_option(entry_name: str) -> str | None:
    """The `conf/data/` option whose file is this registry entry's protocol (None if none)."""
    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        if _key(path.stem) == _key(entry_name):
            return path.stem
    return None


def _store_season(path: Path) -> int | None:
    """The season a store records (registry stores keep their entry's), else None."""
    import zarr

    try:
        source = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.get("source", {})
        season = int(source.get("season_length"))
    except (TypeError, ValueError, OSError, KeyError, AttributeError):
        return None
    return season if season > 0 else None


def protocol(
    target: str,
    *,
    input_size: int,
    horizon: int,
    multivariate: bool = False,
    min_input_size: int | None = None,
    season: int | None = None,
) -> DictConfig:
    """The `data` section that scores a model of `input_size` at `horizon` on `target` (a
    registry name, or a store made by `tsforge data ingest`), composed by Hydra over the
    schema with that data's own protocol; a UserError for an unknown name or a missing
    store."""
    from tsforge.config.checks import compose_config
    from tsforge.data import registry

    sizes = [
        f"data.input_size={input_size}",
        f"data.horizon={horizon}",
        f"data.multivariate={multivariate}",
        f"data.min_input_size={'null' if min_input_size is None else min_input_size}",
    ]
    path = Path(target).expanduser()
    if path.exists() or target.endswith(".zarr") or "/" in target:
        if not path.exists():
            raise UserError(f"--data {target}: no such store; make one with tsforge data "
                            "ingest, or give a registry name (tsforge data list)")  # fmt: skip
        from tsforge.data.store import open_store

        open_store(path)  # a folder that is no store is refused as such, before its season
        season = season or _store_season(path)
        if season is None:
            raise UserError(
                f"--data {target}: the store records no season: pass --season M "
                "(24 for hourly data with a daily cycle, 7 for daily, 1 for none)"
            )
        quoted = str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'")
        overrides = ["data=store", f"data.path='{quoted}'", f"data.season={season}", *sizes]
    else:
        entry = registry.get(target)  # a UserError naming the registry's datasets
        option = _data_option(entry.name)
        overrides = [f"data={option}"] if option else \
            [f"data.name={entry.name}", f"data.season={entry.season_length}"]  # fmt: skip
        overrides += sizes + ([f"data.season={season}"] if season else [])
    return compose_config(overrides).data


def evaluate_zero_shot(
    run_dir: str, target: str, horizon: int, *, season: int | None = None,
    checkpoint: str = "best",
) -> dict[str, Any]:  # fmt: skip
    """The run's model scored on the test split of `target` at `horizon`, beside the
    seasonal naive on the same windows: the report of `runs.evaluate.evaluate_run` plus
    `test` and `baseline.seasonal_naive` (mse, mae, mase, crps), as metrics.json has them."""
    from tsforge.runs.evaluate import evaluate_run
    from tsforge.runs.load import load_run_on, saved_run

    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
        raise UserError(f"--horizon {horizon!r}: must be a whole number > 0")
    _, cfg, _, _ = saved_run(run_dir, checkpoint)
    data = protocol(
        target,
        input_size=int(cfg.data.input_size),
        horizon=horizon,
        multivariate=bool(cfg.data.multivariate),
        min_input_size=cfg.data.min_input_size,
        season=season,
    )
    run = load_run_on(run_dir, data, checkpoint)
    short = (f"{target} is too short for the model's input_size={data.input_size} + horizon="
             f"{horizon}: use a shorter --horizon or longer data")  # fmt: skip
    report = evaluate_run(run, "test", crps=True, short_hint=short)
    keys = ("mse", "mae", "mase", "crps")
    report.update(
        data=target, data_name=str(data.name), horizon=horizon, input_size=int(data.input_size),
        season=int(data.season), metrics_on=str(data.metrics_on),
        test={k: report["model"].get(k) for k in keys},
        baseline={"seasonal_naive": {k: report["seasonal_naive"].get(k) for k in keys}},
    )  # fmt: skip
    return report


def _missing_files(name: str) -> list[str]:
    """Official files of registry entry `name` found neither in TSFORGE_DATA_DIR nor in the
    cache: the suite skips such a dataset rather than download it."""
    from tsforge.data import registry

    entry = registry.get(name)
    folders = [f for f in (registry.data_dir(), registry.cache_folder()) if f is not None]
    return [raw.name for raw in entry.files if not any((f / raw.name).is_file() for f in folders)]


def _ratio(a, b) -> float | None:
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    return a / b if ok(a) and ok(b) and b > 0 else None


def _geomean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and v > 0]
    if not kept or len(kept) < len(values):
        return None  # a dataset without a ratio: no mean that pretends to cover it
    return math.exp(sum(math.log(v) for v in kept) / len(kept))


def evaluate_suite(run_dir: str, *, checkpoint: str = "best", suite=SUITE) -> dict[str, Any]:
    """Every dataset of `suite` scored zero-shot (`evaluate_zero_shot`), a dataset whose
    files are missing (or that the model cannot take) reported as skipped with the reason;
    per dataset MASE and CRPS relative to the seasonal naive, and their geometric means."""
    from tsforge.runs.load import saved_run

    saved_run(run_dir, checkpoint)  # no run or no checkpoint: one error, not one per dataset
    rows: list[dict[str, Any]] = []
    for name, horizon in suite:
        missing = _missing_files(name)
        if missing:
            rows.append({"data": name, "horizon": horizon, "skipped": (
                f"files missing: {', '.join(missing)} (put them in TSFORGE_DATA_DIR, or "
                f"tsforge data download {name})")})  # fmt: skip
            continue
        try:
            r = evaluate_zero_shot(run_dir, name, horizon, checkpoint=checkpoint)
        except UserError as err:
            rows.append({"data": name, "horizon": horizon, "skipped": str(err)})
            continue
        test, naive = r["test"], r["baseline"]["seasonal_naive"]
        rows.append({
            "data": name, "horizon": horizon, "windows": r["windows"],
            "test": test, "baseline": {"seasonal_naive": naive},
            "relative": {"mase": _ratio(test["mase"], naive["mase"]),
                         "crps": _ratio(test["crps"], naive["crps"])},
        })  # fmt: skip
    done = [row for row in rows if "skipped" not in row]
    if not done:
        reasons = "; ".join(f"{row['data']}: {row['skipped']}" for row in rows)
        raise UserError(f"no dataset of the suite could be evaluated ({reasons})")
    return {
        "run_dir": str(run_dir),
        "datasets": rows,
        "evaluated": len(done),
        "skipped": len(rows) - len(done),
        "geomean": {k: _geomean([row["relative"][k] for row in done]) for k in ("mase", "crps")},
    }
