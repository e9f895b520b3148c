"""A table of runs: what differs in their configs and how they did.

    from tsforge.runs.table import find_runs, summarize, differing_keys
    runs = [summarize(d) for d in find_runs(["runs/sweep_2026-11-27"])]

A run directory is any folder holding `config.yaml`; a sweep folder holds one per element.
Each run is summarised from its files alone (config.yaml, meta.json, metrics.json,
metrics.jsonl, checkpoints/), so runs still training or stopped show what they have.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tsforge.config.flat import flat
from tsforge.errors import UserError
from tsforge.train.rundir import read_config, read_json, step_files, step_of

TAIL_BYTES = 64 * 1024  # of metrics.jsonl, read for the last step


def find_runs(dirs: list[str | Path]) -> list[Path]:
    """Run directories under each of `dirs` (a run itself, or a folder of runs), in order."""
    found: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"{d} is not a folder: give a run directory or a sweep folder")
        if (d / "config.yaml").exists():
            found.append(d)
            continue
        found += sorted(
            (p.parent for p in d.rglob("config.yaml") if "checkpoints" not in p.parts),
            key=_natural,
        )
    if not found:
        raise UserError(
            f"no run directory (a folder with config.yaml) under {', '.join(map(str, dirs))}"
        )
    return found


def _natural(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.parts)


def steps_done(run: Path) -> int | None:
    """The run's progress: the step of its last readable record in metrics.jsonl, else of its
    newest step checkpoint; None before either exists."""
    path = run / "metrics.jsonl"
    if path.is_file():
        with open(path, "rb") as f:  # the tail is enough: records are appended in step order
            f.seek(max(0, path.stat().st_size - TAIL_BYTES))
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                step = json.loads(line).get("step")
            except (ValueError, AttributeError, RecursionError):
                continue  # the first line of the tail, or a record cut short
            if isinstance(step, int) and not isinstance(step, bool):
                return step
    steps = [step_of(p) for p in step_files(run)]
    return max(steps) if steps else None


def val_curve(run: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) of every validation of `val/<metric>` in the run's metrics.jsonl, in
    step order; a resumed run's repeated steps count once (the latest). Lines that do not
    read (one being written, an edited file) are skipped."""
    path, key = run / "metrics.jsonl", f"val/{metric}"
    found: dict[int, float] = {}
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        step, value = record.get("step"), record.get(key)
        if isinstance(step, int) and isinstance(value, (int, float)) and math.isfinite(value):
            found[step] = float(value)
    return sorted(found.items())


def summarize(run: Path) -> dict[str, Any]:
    """One row: status, steps, best validation, test metrics, throughput, flat config.

    A UserError naming the file when config.yaml, metrics.json or meta.json is not what
    tsforge wrote (`rows` turns that into a warning and skips the run)."""
    config = flat(OmegaConf.to_container(read_config(run / "config.yaml"), resolve=True))
    final = read_json(run / "metrics.json")
    meta = read_json(run / "meta.json")
    if final:
        status, steps = "pruned" if final.get("pruned") else "finished", final.get("steps")
    else:
        steps = steps_done(run)
        status = "running/stopped" if steps is not None else "started"
    test = _dict(final.get("test"))
    naive = _dict(_dict(final.get("baseline")).get("seasonal_naive"))
    best_val = _dict(final.get("best_val"))
    resumes = meta.get("resumes", [])
    return {
        "run": str(run),
        "status": status,
        "steps": steps,
        "best_val": next(iter(best_val.values()), None),
        "best_val_metric": next((f"val/{k}" for k in best_val), None),  # early stopping's
        "best_val_step": final.get("best_val_step"),
        "test_mse": test.get("mse"),
        "test_mae": test.get("mae"),
        "naive_mse": naive.get("mse"),
        "windows_per_s": final.get("train_windows_per_s"),
        "resumes": len(resumes) if isinstance(resumes, list) else 0,
        "config": config,
    }


def rows(runs: list[Path], warn=None) -> list[dict[str, Any]]:
    """`summarize` of each run; a run whose files do not read is skipped, with one line to
    `warn` (stderr by default) naming the file. When none reads: a UserError, the first's."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    out, skipped = [], []
    for run in runs:
        try:
            out.append(summarize(run))
        except UserError as err:
            skipped.append(f"skipped {run}: {err}")
    if not out:
        more = f" (and {len(skipped) - 1} more runs that do not read)" if len(skipped) > 1 else ""
        raise UserError(f"no run could be read: {skipped[0]}{more}")
    for line in skipped:
        warn(f"tsforge: warning: {line}")
    return out


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def differing_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values are not the same in every run (hydra's own keys aside)."""
    keys = sorted(set().union(*(r["config"] for r in rows)))
    return [
        k for k in keys if len({json.dumps(r["config"].get(k), sort_keys=True) for r in rows}) > 1
    ]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
        )
    return str(value)


def table(rows: list[dict[str, Any]], config_keys: list[str]) -> str:
    """A plain-text table: one line per run, config differences first. The best validation
    names its metric: in the header (`best_val(val/mae)`) when every run has the same one,
    else in each cell."""
    names = {r["best_val_metric"] for r in rows if r.get("best_val_metric")}
    one = names.pop() if len(names) == 1 else None
    stats = ["steps", "best_val", "test_mse", "test_mae", "naive_mse", "windows_per_s"]

    def best(r: dict[str, Any]) -> str:
        shown = _cell(r["best_val"])
        return shown if one or r["best_val"] is None else f"{shown} {r['best_val_metric']}"

    head = ["run", *config_keys, "status",
            *(f"best_val({one})" if k == "best_val" and one else k for k in stats)]  # fmt: skip
    lines = [
        [r["run"], *(_cell(r["config"].get(k)) for k in config_keys), r["status"],
         *(best(r) if k == "best_val" else _cell(r[k]) for k in stats)]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line) for line in [head, *lines])
