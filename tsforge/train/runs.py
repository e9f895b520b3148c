"""A table of runs: what differs in their configs and how they did.

    from tsforge.train.runs import find_runs, summarize, differing_keys
    runs = [summarize(d) for d in find_runs(["runs/sweep_2026-11-27"])]

A run directory is any folder holding `config.yaml`; a sweep folder holds one per element.
Each run is summarised from its files alone (config.yaml, meta.json, metrics.json,
metrics.jsonl, checkpoints/), so runs still training or stopped show what they have.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tsforge.errors import UserError
from tsforge.train.checkpoint import CheckpointManager


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


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}


def _last_step(run: Path) -> int | None:
    steps = [int(p.stem.split("_")[1]) for p in CheckpointManager(run).step_files()]
    return max(steps) if steps else None


def summarize(run: Path) -> dict[str, Any]:
    """One row: status, steps, best validation, test metrics, throughput, flat config."""
    config = _flat(OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=False))
    final = _read_json(run / "metrics.json")
    meta = _read_json(run / "meta.json")
    if final:
        status, steps = "finished", final.get("steps")
    else:
        steps = _last_step(run)
        status = "running/stopped" if steps is not None else "started"
    test = final.get("test", {})
    naive = final.get("baseline", {}).get("seasonal_naive", {})
    best_val = final.get("best_val", {})
    return {
        "run": str(run),
        "status": status,
        "steps": steps,
        "best_val": next(iter(best_val.values()), None),
        "test_mse": test.get("mse"),
        "test_mae": test.get("mae"),
        "naive_mse": naive.get("mse"),
        "windows_per_s": final.get("train_windows_per_s"),
        "resumes": len(meta.get("resumes", [])),
        "config": config,
    }


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
    """A plain-text table: one line per run, config differences first."""
    head = ["run", *config_keys, "status", "steps", "best_val", "test_mse", "test_mae",
            "naive_mse", "windows_per_s"]  # fmt: skip
    lines = [
        [r["run"], *(_cell(r["config"].get(k)) for k in config_keys), r["status"],
         *(_cell(r[k]) for k in head[len(config_keys) + 2:])]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line) for line in [head, *lines])
