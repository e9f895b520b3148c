"""Check command-line overrides before anything starts.

Hydra reports a bad override with a multi-line message and exit code 1; tsforge promises one
line naming the key and exit code 2. `check_overrides` composes the config once per sweep
value (Hydra's own compose API, so the rules are Hydra's) and turns the first error into a
`UserError`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tsforge.config import CONF_DIR
from tsforge.config.schema import register
from tsforge.errors import UserError


def _one_line(err: Exception) -> str:
    """Hydra's message, with the cause (which key, which type) that it keeps in __cause__."""
    first = lambda e: next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")  # noqa: E731
    text = first(err) or type(err).__name__
    cause = err.__cause__
    if cause is not None and first(cause):
        text = f"{text.rstrip('.')}: {first(cause)}"
    if "Could not find" in text and "Available options" in str(err):
        options = [ln.strip() for ln in str(err).split("Available options", 1)[1].splitlines()]
        names = [o for o in options[1:] if o and not o.endswith("_schema") and "=" not in o]
        if "Config search path:" in names:
            names = names[: names.index("Config search path:")]
        text = f"{text}: use one of {', '.join(names)}"
    return text


def _check_keys(cfg: DictConfig) -> None:
    """Keys added with '+' that no schema knows, and required values left as '???'."""
    from tsforge.config.models import model_schema
    from tsforge.config.schema import Config

    known = {"": {f.name for f in fields(Config)}}
    for group in ("data", "optim", "loss", "trainer", "launcher"):
        known[group] = {f.name for f in fields(type(getattr(Config(), group)))}
    known["model"] = {f.name for f in fields(model_schema(cfg.model.name))}
    for key in cfg:
        if key not in known[""]:
            raise UserError(f"unknown config key '{key}': the groups are {sorted(known[''])}")
    for group, names in known.items():
        if group:
            for key in cfg[group]:
                if key not in names:
                    takes = ", ".join(sorted(names))
                    raise UserError(f"unknown config key '{group}.{key}': {group} takes {takes}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]} has no value: pass {missing[0]}=<value> on the command line")


def check_saved(cfg: DictConfig, path: Path) -> None:
    """A run's config.yaml read back (over the schema): the key checks of a launch, each
    message naming the file. The file may have been edited; nothing in it is trusted."""
    from tsforge.models import MODELS

    try:
        model = None if OmegaConf.is_missing(cfg, "model") else cfg.model
        if not isinstance(model, DictConfig) or model.get("name") not in MODELS:
            name = model.get("name") if isinstance(model, DictConfig) else model
            raise UserError(f"model.name {name!r} is not one of {', '.join(MODELS)}")
        _check_keys(cfg)
    except (UserError, OmegaConfBaseException) as err:
        raise UserError(f"{path}: {err}: restore the file, or train a new run") from None


def compose_config(overrides: list[str]) -> DictConfig:
    """The resolved config for these overrides (no sweeps), or a UserError naming the key."""
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        _check_keys(cfg)
        from tsforge.train.builders import check_data

        check_data(cfg.data)
        OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(f"bad override: {_one_line(err)}") from None


def with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """Hydra's `--config-dir DIR` as a `hydra.searchpath` override, merged with one the user
    gave, so that the checks here, sweeps and Hydra itself search the same folders."""
    if config_dir is None:
        return overrides
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"--config-dir {config_dir}: no such folder; give a folder of your own "
                        f"configs (e.g. one holding experiment/<name>.yaml)")
    parsed = _parse(overrides)
    given = [o for o in parsed if o.key_or_group == "hydra.searchpath"]
    paths = [f"file://{folder}", *(given[-1].value() if given else [])]
    rest = [o.input_line for o in parsed if o.key_or_group != "hydra.searchpath"]
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return [f"hydra.searchpath=[{quoted}]", *rest]


def _parse(overrides: list[str]) -> list:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(f"cannot parse overrides: {_one_line(err)}") from None


def check_overrides(overrides: list[str]) -> None:
    """Compose the config for every value of every sweep override; raise on the first error."""
    parsed = _parse(overrides)
    base, sweeps = [], []
    for o in parsed:
        hydra_key = o.key_or_group.startswith("hydra.") or o.key_or_group == "hydra"
        if hydra_key and o.key_or_group != "hydra.searchpath":  # user configs stay findable
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            base.append(f"{o.input_line.split('=', 1)[0]}={values[0]}")
            sweeps.append((o.input_line.split("=", 1)[0], values[1:]))
        else:
            base.append(o.input_line)
    compose_config(base)
    for prefix, values in sweeps:
        for value in values:
            key = prefix.lstrip("+~")
            rest = [b for b in base if b.split("=", 1)[0].lstrip("+~") != key]
            compose_config(rest + [f"{prefix}={value}"])
