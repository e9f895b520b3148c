"""A study: its Optuna objects (storage, sampler, pruner) and its folder's record.

    record = new_record(study_dir, "dlinear", search, overrides, folders)   # or read_record
    study = open_study(record, search, max_steps=800, val_every=50)

    STUDY_DIR/study.json   what the study searches: the search, the overrides, where it is kept
    STUDY_DIR/study.db     the study itself (SQLite), unless `storage` names a database
    STUDY_DIR/trials/<n>/  trial n's run directory          STUDY_DIR/logs/<n>.log (local)

The study lives in the database: trials, their parameters, validation curves and states.
A controller that is killed loses nothing; `tsforge tune --study STUDY_DIR` carries on from
the database. `study.json` is read back as untrusted input: every override is checked as an
override, the search as a search.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tsforge.config.search import SearchConfig, as_search
from tsforge.errors import UserError
from tsforge.train.rundir import read_json, write_json

RECORD = "study.json"


def new_record(study_dir: Path, name: str, search: SearchConfig, overrides: list[str],
               folders: list[str]) -> dict[str, Any]:  # fmt: skip
    return {
        "search": name,
        "study_name": f"{study_dir.name}-{uuid.uuid4().hex[:8]}",
        "storage": search.storage,
        "overrides": overrides,
        "config_dirs": folders,
        "created": time.time(),
        "space": _space(search),
        "search_config": asdict(search),
    }


def _space(search: SearchConfig) -> dict[str, Any]:
    """What must not change while a study runs: its params, metric and objective."""
    plain = asdict(search)
    return {k: plain[k] for k in ("params", "metric", "overrides")}


def write_record(study_dir: Path, record: dict[str, Any]) -> None:
    write_json(study_dir / RECORD, record)


def read_record(study_dir: Path) -> dict[str, Any]:
    """`study.json`, checked: a UserError naming the file when it is not what tune wrote."""
    path = study_dir / RECORD
    record = read_json(path)

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}: restore the file, or start a new study with "
                         f"another --study folder")  # fmt: skip

    for key, kind in (("search", str), ("study_name", str), ("overrides", list),
                      ("config_dirs", list), ("space", dict),
                      ("search_config", dict)):  # fmt: skip
        if not isinstance(record.get(key), kind):
            raise bad(f"'{key}' is missing or not a {kind.__name__}")
    if not all(isinstance(o, str) and "=" in o and not o.startswith("-")
               for o in record["overrides"]):  # fmt: skip
        raise bad("'overrides' holds something that is not a key=value override")
    if not all(isinstance(d, str) for d in record["config_dirs"]):
        raise bad("'config_dirs' holds something that is not a folder")
    if record.get("storage") is not None and not isinstance(record["storage"], str):
        raise bad("'storage' is not a database URL")
    return record


def same_space(record: dict[str, Any], search: SearchConfig, study_dir: Path) -> None:
    """Refuse to carry on a study with another space: its trials would not compare."""
    now = json.loads(json.dumps(_space(search)))
    for key in ("params", "metric", "overrides"):
        if record["space"].get(key) != now[key]:
            raise UserError(f"the study in {study_dir} was started with other {key} than "
                            f"search {record['search']} gives now: carry it on with the same "
                            f"search, or start a new study with another --study folder")


def storage_url(record: dict[str, Any], study_dir: Path) -> str:
    url = record.get("storage") or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    check_url(url)
    return url


def check_url(url: str) -> None:
    """A database URL tune accepts: SQLAlchemy's, with no password in it (it would be
    recorded in study.json): a password goes in an option file or the database's own
    configuration, as the cluster's playbook writes one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"storage {url[:60]!r} is not a database URL (e.g. sqlite:///study.db, "
                        "mysql+pymysql:///?read_default_file=FILE)") from None
    if parsed.password:
        raise UserError("storage: a database URL with a password in it would be recorded in "
                        "study.json; keep the password in an option file (mysql+pymysql://"
                        "/?read_default_file=FILE, as the cluster's playbook writes one)")
    if parsed.get_backend_name() not in ("sqlite", "mysql", "postgresql"):
        raise UserError(f"storage: {parsed.get_backend_name()} is not a database tune keeps "
                        f"studies in: use sqlite, mysql (MariaDB) or postgresql")


def _sampler(search: SearchConfig):
    import warnings

    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    # multivariate + group: TPE models parameters together and handles conditional spaces;
    # constant_liar: trials running in parallel are not sampled on top of each other.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=search.seed, n_startup_trials=search.startup_trials, multivariate=True,
            group=True, constant_liar=True,
        )  # fmt: skip


def _pruner(search: SearchConfig, max_steps: int, val_every: int):
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials,
                                           n_warmup_steps=search.warmup_steps)  # fmt: skip
    if search.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(val_every, 1))
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(val_every, 1),
                                              max_resource=max(max_steps, val_every, 1))
    return optuna.pruners.NopPruner()


def open_study(record: dict[str, Any], search: SearchConfig, study_dir: Path, *,
               max_steps: int, val_every: int):  # fmt: skip
    """The study in its database (created on first use), with this search's sampler and
    pruner; a ConnectionError in one line when the database cannot be reached."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(record, study_dir)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        return optuna.create_study(
            study_name=record["study_name"], storage=storage, sampler=_sampler(search),
            pruner=_pruner(search, max_steps, val_every), direction="minimize",
            load_if_exists=True,
        )  # fmt: skip
    except (SQLAlchemyError, ImportError) as err:
        first = " ".join(str(err).split())[:200]
        # the database, not the input: an environment fault (exit 1)
        raise ConnectionError(f"cannot open the study's database {_shown(url)}: {first}") \
            from None  # fmt: skip


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def search_of(record: dict[str, Any], where: Path) -> SearchConfig:
    """The search recorded in study.json (for a study carried on without naming it)."""
    from omegaconf.errors import OmegaConfBaseException

    config = dict(record["search_config"])
    params = config.get("params")
    order = record.get("param_order")
    if isinstance(params, dict) and isinstance(order, list) and set(order) == set(params):
        # study.json is written with sorted keys: a `when` reads the params listed before it
        config["params"] = {key: params[key] for key in order}
    try:
        node = OmegaConf.create(config)
    except (OmegaConfBaseException, ValueError) as err:
        raise UserError(f"{where / RECORD}: 'search_config' does not read ({err})") from None
    return as_search(node, str(where / RECORD))
