"""What TensorBoard's HParams tab shows of a run: its config as flat scalars, and, for a run of
a sweep, the keys the sweep varies (the tab's default columns).

    from tsforge.train.hparams import flat_hparams, varied
    flat_hparams(cfg)       # {"optim.lr": 0.001, "model.name": "nhits", ...}
    varied(run_dir)         # {"optim.lr": [0.0003, 0.001, 0.003]} for an element of a sweep

The keys a sweep varies come from `sweep.json` (a SLURM sweep records them at submission)
or, for a local sweep, from Hydra's `multirun.yaml`, expanded and composed once and kept in
`SWEEP_DIR/varied.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tsforge.config.checks import compose_config
from tsforge.config.flat import flat
from tsforge.config.sweeps import expand, hydra_set_aside
from tsforge.errors import UserError
from tsforge.train.rundir import read_json, write_atomic


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config as flat `group.key` scalars, for TensorBoard's HParams tab."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flat(OmegaConf.to_container(cfg, resolve=True)).items()
            if value is not None and value != {}}  # fmt: skip


def varied_keys(configs) -> dict[str, list]:
    """{key: distinct values} of the flat config keys, present in every config, whose values
    are not all the same."""
    flats = [flat_hparams(cfg) for cfg in configs]
    out: dict[str, list] = {}
    for key in flats[0]:
        if all(key in f for f in flats):
            values = list({json.dumps(f[key]): f[key] for f in flats}.values())
            if len(values) > 1:
                out[key] = values
    return out


def varied(run_dir: Path) -> dict[str, list]:
    """The config keys that the sweep of `run_dir` varies, with their values; {} for a run
    that is no element of a sweep, or whose sweep no longer composes."""
    folder = Path(run_dir).resolve().parent
    try:
        recorded = read_json(folder / "sweep.json").get("varied")  # a SLURM sweep
        if isinstance(recorded, dict):
            return _checked(recorded)
        cached = read_json(folder / "varied.json")
        if cached or not (folder / "multirun.yaml").is_file():
            return _checked(cached)
        given = OmegaConf.load(folder / "multirun.yaml").hydra.overrides
        search = [o for o in given.hydra if o.startswith("hydra.searchpath=")]  # --config-dir
        with hydra_set_aside():
            found = varied_keys([compose_config(search + run) for run in expand(list(given.task))])
        write_atomic(folder / "varied.json", json.dumps(found, indent=2) + "\n")
        return found
    except (UserError, OSError, ValueError, KeyError, AttributeError):
        return {}


def _checked(varied: dict) -> dict[str, list]:
    """The entries of a file's `varied` that are what `varied_keys` writes (a key, and two or
    more scalar values of one kind), so that an edited file cannot break the run's end."""
    def kind(v: Any) -> type:
        return bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str

    return {key: values for key, values in varied.items()
            if isinstance(key, str) and isinstance(values, list) and len(values) > 1
            and all(isinstance(v, (int, float, str, bool)) for v in values)
            and len({kind(v) for v in values}) == 1}  # fmt: skip
