"""Search spaces for `tsforge tune`: the typed schema of `conf/search/<name>.yaml`, loaded and
checked before anything runs.

    from tsforge.config.search import load_search
    search = load_search("dlinear")              # conf/search/dlinear.yaml, or a --config-dir's
    search.params["optim.lr"].low                # 1e-4

A search names the config keys it varies, each a typed range or a list of choices, with an
optional condition on another parameter (`when`), plus the validation metric it minimises,
the sampler, the pruner and the budget:

    metric: mse                      # val/<metric> of each trial, minimised
    params:
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      data.input_size: {type: choice, choices: [96, 192, 336, 512]}
      model.dropout_prob_theta: {type: float, low: 0.0, high: 0.3, when: {model: nhits}}
    trials: 20                       # budgets: trials, allotted CPU- or GPU-minutes, wall

Every check here raises a `UserError` naming the key and the fix; nothing is sampled from a
space that does not pass them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from tsforge.errors import UserError

KINDS = ("float", "int", "choice")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "asha", "hyperband", "none")
# Validation metrics a search can minimise (what the evaluator reports for every split;
# scaled_crps needs a quantile loss).
METRICS = ("mse", "mae", "rmse", "smape", "mase", "loss", "scaled_crps")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Keys no trial may vary: where trials run is the search's own setting, and the run directory
# is the study's.
_FIXED = ("launcher", "hydra")


@dataclass
class ParamSpec:
    type: str = MISSING  # float | int | choice
    low: float | None = None  # float, int: the range, both ends included
    high: float | None = None
    log: bool = False  # sample on a log scale (low > 0)
    step: float | None = None  # int: the grid's step (default 1); float: a grid, if set
    choices: list[Any] = field(default_factory=list)  # choice: scalars, or lists of them
    # Sampled only when each named parameter (sampled earlier) took this value or one of
    # these values: {model: nhits} or {model: [nhits, nbeats]}.
    when: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchConfig:
    # Overrides of the experiment searched around (the command line adds more after them).
    overrides: list[str] = field(default_factory=list)
    metric: str = "mse"  # the validation metric minimised: val/<metric> of each trial
    params: dict[str, ParamSpec] = field(default_factory=dict)
    # Points tried first, before the sampler's own: e.g. the hand-tuned recipe.
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    sampler: str = "tpe"  # tpe | random
    pruner: str = "median"  # median | asha | hyperband | none
    seed: int = 0
    startup_trials: int = 5  # random trials before TPE models; trials before pruning starts
    warmup_steps: int = 0  # no trial is pruned before this training step
    # Budgets: the search asks for no new trial once one is spent. Running trials finish,
    # except at the wall budget, where they are stopped (and recorded as pruned).
    trials: int = 20
    cpu_minutes: float | None = None  # allotted CPUs x wall time, summed over trials
    gpu_minutes: float | None = None  # allotted GPUs x wall time, summed over trials
    wall_minutes: float | None = None
    parallel: int = 1  # local trials at once (on SLURM: launcher.array_parallelism)
    # null: SQLite in the study folder. A database URL, e.g. on a cluster that the playbook
    # set up: mysql+pymysql:///?read_default_file=/etc/tsforge/study-db.cnf
    storage: str | None = None
    poll_s: float = 2.0  # how often the controller reads the trials' validation curves


def find_search(name: str, folders: list[str] | None = None) -> Path:
    """The file of search `name`: `<folder>/search/<name>.yaml` in the user's config folders
    (`--config-dir`, first), else in tsforge's own `conf/search/`."""
    from tsforge.config import CONF_DIR

    if not _NAME.fullmatch(name):
        raise UserError(f"search {name[:40]!r} is not a search name: give the name of a file in "
                        f"conf/search/ without .yaml (e.g. dlinear)")  # fmt: skip
    for folder in [*(Path(f) for f in folders or []), CONF_DIR]:
        path = folder / "search" / f"{name}.yaml"
        if path.is_file():
            return path
    known = ", ".join(searches(folders)) or "none"
    raise UserError(f"no search named {name!r} (searches: {known}): add search/{name}.yaml to a "
                    f"folder given with --config-dir")  # fmt: skip


def load_search(name: str, folders: list[str] | None = None) -> SearchConfig:
    """Search `name` (see `find_search`), typed and checked."""
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    path = find_search(name, folders)
    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, YAMLError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not a readable YAML file ({type(err).__name__}): fix the "
                        f"file") from None
    if not isinstance(node, DictConfig):
        raise UserError(f"{path}: a search is a mapping of keys (metric, params, trials, ...)")
    return as_search(node, str(path))


def as_search(node: DictConfig | dict, where: str) -> SearchConfig:
    """A search read from a file or a study's record, over the schema and checked."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(SearchConfig), node)
        search: SearchConfig = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise UserError(f"{where}: {' '.join(str(err).split())}") from None
    check_search(search, where)
    return search


def check_search(search: SearchConfig, where: str) -> None:
    def bad(message: str) -> UserError:
        return UserError(f"{where}: {message}")

    if not search.params:
        raise bad("no params: name at least one config key to search (params: {optim.lr: "
                  "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}})")
    if search.metric not in METRICS:
        raise bad(f"metric={search.metric}: use one of {', '.join(METRICS)}")
    for key, choices in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if getattr(search, key) not in choices:
            raise bad(f"{key}={getattr(search, key)}: use one of {', '.join(choices)}")
    for key in ("trials", "parallel"):
        if getattr(search, key) < 1:
            raise bad(f"{key}={getattr(search, key)}: must be at least 1")
    for key in ("startup_trials", "warmup_steps"):
        if getattr(search, key) < 0:
            raise bad(f"{key}={getattr(search, key)}: must be 0 or more")
    for key in ("cpu_minutes", "gpu_minutes", "wall_minutes", "poll_s"):
        value = getattr(search, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise bad(f"{key}={value}: must be a positive number (or null: no such budget)")
    for override in search.overrides:
        if not isinstance(override, str) or override.startswith("-") or "=" not in override:
            raise bad(f"overrides: {str(override)[:40]!r} is not a key=value override")
    seen: list[str] = []
    for key, spec in search.params.items():
        _check_param(key, spec, seen, bad)
        seen.append(key)
    for i, point in enumerate(search.enqueue):
        unknown = sorted(set(point) - set(search.params))
        if unknown:
            raise bad(f"enqueue[{i}]: {unknown[0]} is not one of the params")


def _check_param(key: str, spec: ParamSpec, earlier: list[str], bad) -> None:
    if not _KEY.fullmatch(key):
        raise bad(f"params: {key!r} is not a config key (group.key, e.g. optim.lr)")
    if key.split(".")[0] in _FIXED:
        raise bad(f"params: {key} cannot vary between trials (every trial of a study runs "
                  f"with the same launcher and in the study's folder)")
    if spec.type not in KINDS:
        raise bad(f"params.{key}.type={spec.type}: use one of {', '.join(KINDS)}")
    if spec.type == "choice":
        if not spec.choices:
            raise bad(f"params.{key}: a choice needs choices: [a, b, ...]")
        if not all(_plain(value) for value in spec.choices):
            raise bad(f"params.{key}: choices are numbers, strings or (nested) lists of them")
    else:
        if spec.low is None or spec.high is None or not spec.low <= spec.high:
            raise bad(f"params.{key}: a {spec.type} range needs low <= high")
        if not (math.isfinite(spec.low) and math.isfinite(spec.high)):
            raise bad(f"params.{key}: low and high must be finite")
        if spec.log and spec.low <= 0:
            raise bad(f"params.{key}: a log scale needs low > 0")
        if spec.step is not None and (spec.step <= 0 or spec.log):
            raise bad(f"params.{key}: step must be positive, and cannot go with log: true")
        if spec.type == "int" and not (float(spec.low).is_integer()
                                       and float(spec.high).is_integer()):  # fmt: skip
            raise bad(f"params.{key}: an int range needs whole low and high")
    for other in spec.when:
        if other not in earlier:
            raise bad(f"params.{key}.when: {other} must be a param listed before {key}")


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def searches(folders: list[str] | None = None) -> list[str]:
    """The names of the searches in conf/search/ and the user's folders, for messages."""
    from tsforge.config import CONF_DIR

    places = [Path(f) / "search" for f in folders or []] + [CONF_DIR / "search"]
    return sorted({p.stem for f in places if f.is_dir() for p in f.glob("*.yaml")})
