"""Check command-line overrides before anything starts.

Hydra reports a bad override with a multi-line message and exit code 1; tsforge promises one
line naming the key and exit code 2. `check_overrides` composes the config once per sweep
value (Hydra's own compose API, so the rules are Hydra's) and turns the first error into a
`UserError`. Past the schema's types, `check_values` bounds the numbers (no negative lr, no
zero horizon, no NaN anywhere), checks the names (schedule, precision, device: `cuda` needs a
GPU) and the data (`data.chosen.check_data`), so that nothing starts on a value that would fail
later or silently train on nonsense.
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
from tsforge.config.schema import PRECISIONS, SCHEDULES, STRATEGIES, register
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
        names = [o for o in options[1:] if o and not o.endswith("schema") and "=" not in o]
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


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _mmap_threshold(v) -> bool:
    return 0 <= v <= 32 * 1024  # tsforge.train.allocator.MAX_KIB: glibc refuses more


def _fraction(v) -> bool:
    return 0 <= v <= 1


_POSITIVE, _NON_NEGATIVE = "must be > 0", "must be >= 0"
# Numbers the schema types but does not bound: (key, test, what it must be).
_BOUNDS = (
    ("data.input_size", _positive, _POSITIVE), ("data.horizon", _positive, _POSITIVE),
    ("data.batch_size", _positive, _POSITIVE), ("data.eval_batch_size", _positive, _POSITIVE),
    ("data.stride", _positive, _POSITIVE), ("data.season", _positive, _POSITIVE),
    ("data.cache_mb", _positive, _POSITIVE), ("data.shuffle_group_blocks", _positive, _POSITIVE),
    ("data.num_workers", _non_negative, _NON_NEGATIVE),
    ("data.legacy_test_drop_last", _non_negative, _NON_NEGATIVE),
    ("optim.lr", _non_negative, _NON_NEGATIVE),
    ("optim.weight_decay", _non_negative, _NON_NEGATIVE),
    ("optim.warmup_steps", _non_negative, _NON_NEGATIVE),
    ("optim.grad_clip", _non_negative, _NON_NEGATIVE + " (0: no clipping)"),
    ("optim.min_lr_ratio", _fraction, "must be between 0 and 1"),
    ("trainer.max_steps", _non_negative, _NON_NEGATIVE),
    ("trainer.val_every_steps", _non_negative, _NON_NEGATIVE + " (0: no validation)"),
    ("trainer.log_every_steps", _positive, _POSITIVE),
    ("trainer.accumulate_steps", _positive, _POSITIVE),
    ("trainer.checkpoint_every_steps", _positive, _POSITIVE),
    ("trainer.checkpoint_every_min", _positive, _POSITIVE),
    ("trainer.keep_last", _positive, "must be 1 or more (step checkpoints kept on disk; "
     "latest.pt and best.pt are links to them)"),
    ("trainer.early_stop_patience", _non_negative, _NON_NEGATIVE + " (0: off)"),
    ("trainer.threads", _non_negative, _NON_NEGATIVE + " (0: cores / processes)"),
    ("trainer.malloc_mmap_threshold_kb", _mmap_threshold,
     "must be between 0 and 32768 KiB (0: glibc's default; null: automatic)"),
    ("trainer.dist_timeout_s", _positive, _POSITIVE),
    ("trainer.plot_series", _non_negative, _NON_NEGATIVE),
    ("trainer.peak_tflops", _positive, _POSITIVE + " (null: automatic)"),
    ("launcher.nprocs", _positive, _POSITIVE),
)  # fmt: skip
# Where infinity means "never": the time-based checkpoints.
_INFINITY_ALLOWED = ("trainer.checkpoint_every_min",)


def _choices() -> dict[str, tuple[str, ...]]:
    """Names the code accepts, from the modules that use them (one list each)."""
    from tsforge.data.loader import MODES
    from tsforge.data.scaling import METHODS, SCALE_BY
    from tsforge.losses import LOSSES

    return {
        "optim.schedule": SCHEDULES, "trainer.precision": PRECISIONS,
        "trainer.strategy": STRATEGIES, "loss.name": tuple(LOSSES),
        "data.scaling": METHODS, "data.scale_by": SCALE_BY,
        "data.sampling": tuple(m for m in MODES if m != "eval"),
        "data.sample_by": ("window", "series"), "data.metrics_on": ("original", "scaled"),
        "launcher.name": ("local", "slurm"),
    }  # fmt: skip


def _floats(node, prefix: str = ""):
    """(dotted key, value) of every float in a resolved config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _floats(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _floats(value, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


def check_values(cfg: DictConfig) -> None:
    """Bounds, names and the device of a composed config; UserError naming the first bad key."""
    import math

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, value in _floats(plain):
        if math.isnan(value) or (math.isinf(value) and key not in _INFINITY_ALLOWED):
            raise UserError(f"{key}={value}: must be a finite number")
    for key, test, rule in _BOUNDS:
        value = OmegaConf.select(cfg, key)
        if value is not None and not test(value):
            raise UserError(f"{key}={value}: {rule}")
    for i, beta in enumerate(cfg.optim.betas):
        if not 0 <= beta < 1:
            raise UserError(f"optim.betas[{i}]={beta}: must be in [0, 1)")
    m = cfg.data.min_input_size
    if m is not None and not 1 <= m <= cfg.data.input_size:
        raise UserError(f"data.min_input_size={m}: must be between 1 and data.input_size="
                        f"{cfg.data.input_size} (or null)")
    for key, names in _choices().items():
        value = OmegaConf.select(cfg, key)
        if value not in names:
            raise UserError(f"{key}={value}: use one of {', '.join(names)}")
    if cfg.data.split:
        from tsforge.data.splits import parse

        parse(cfg.data.split, "data.split")
    if cfg.data.name == "mixture":
        _check_sources(cfg.data)
    _check_device(str(cfg.trainer.device))


def _check_sources(data: DictConfig) -> None:
    """data=mixture: each source names one registry dataset, generator or store path, with a
    positive weight, all weighted or none; the windows are univariate, scaled per window."""
    import math
    from pathlib import Path

    from tsforge.data.mixture import GENERATORS, source_label
    from tsforge.data.registry import DATASETS, get

    if not data.sources:
        raise UserError("data.sources is empty: list sources as "
                        "'data.sources=[{name: synthetic, weight: 1}, {path: my.zarr, weight: 1}]'")
    names = ", ".join([*DATASETS, *GENERATORS])
    labels: dict[str, int] = {}
    for i, src in enumerate(data.sources):
        key = f"data.sources[{i}]"
        if src.name and src.path:
            raise UserError(f"{key} has both name={src.name} and path={src.path}: give one "
                            "(a registry name or generator, or the path of a store)")
        if not src.name and not src.path:
            raise UserError(f"{key} has neither name nor path: give name=<{names}> or "
                            "path=<a store made by 'tsforge data ingest'>")
        if src.name and src.name not in GENERATORS:
            try:
                get(src.name)
            except UserError:
                raise UserError(f"{key}.name={src.name} is no dataset or generator: use one "
                                f"of {names}, or path=<store>") from None
        if src.path and not Path(src.path).expanduser().exists():
            raise UserError(f"{key}.path={src.path}: no such store: give the path of a store "
                            "made by 'tsforge data ingest'")
        if src.weight is not None and not (src.weight > 0 and math.isfinite(src.weight)):
            raise UserError(f"{key}.weight={src.weight}: must be a finite number > 0 (drop "
                            "the source to leave it out)")
        if src.windows is not None and (src.windows < 1 or src.name not in GENERATORS):
            raise UserError(f"{key}.windows={src.windows}: a generated source's size, >= 1 "
                            f"(a store's is its windows): drop it or use a generator "
                            f"({', '.join(GENERATORS)})")
        label = source_label(src.name, src.path)
        if label in labels:
            raise UserError(f"{key} repeats source '{label}' (data.sources[{labels[label]}]): "
                            "list each source once and give it the summed weight")
        labels[label] = i
    weighted = [src.weight is not None for src in data.sources]
    if any(weighted) and not all(weighted):
        i = weighted.index(False)
        raise UserError(f"data.sources[{i}] has no weight while others have one: give every "
                        "source a weight, or none (weights from sizes and data.temperature)")
    if data.temperature is not None and not data.temperature > 0:
        raise UserError(f"data.temperature={data.temperature}: must be > 0 (or null: 1)")
    if data.sampling != "sampled":
        raise UserError(f"data.sampling={data.sampling} with data=mixture: a mixture is drawn "
                        "with replacement; use data.sampling=sampled")
    if data.multivariate:
        raise UserError("data.multivariate=true with data=mixture: a mixture's windows are "
                        "univariate; set data.multivariate=false")
    if data.scale_by != "window":
        raise UserError(f"data.scale_by={data.scale_by} with data=mixture: generated sources "
                        "have no series statistics; use data.scale_by=window")


def _check_device(device: str) -> None:
    import re

    import torch

    if device in ("auto", "cpu"):
        return
    found = re.fullmatch(r"cuda(?::(\d+))?", device)
    if found is None:
        raise UserError(f"trainer.device={device}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"trainer.device={device} but this machine has no CUDA device (or torch "
                        "was built without CUDA): use trainer.device=auto or cpu")
    if found.group(1) and int(found.group(1)) >= torch.cuda.device_count():
        raise UserError(f"trainer.device={device} but this machine has "
                        f"{torch.cuda.device_count()} CUDA device(s)")


def run_dir_of(overrides: list[str]) -> Path:
    """`hydra.run.dir` for these overrides, as Hydra will make it (a `${now:}` in it is
    resolved a moment earlier than Hydra does: the same folder or a new one beside it)."""
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        return Path(str(cfg.hydra.run.dir))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(f"bad override: {_one_line(err)}") from None


def check_saved(cfg: DictConfig, path: Path) -> None:
    """A run's config.yaml read back (over the schema): the checks of a launch, each message
    naming the file. The file may have been edited; nothing in it is trusted."""
    from tsforge.models import MODELS

    try:
        model = None if OmegaConf.is_missing(cfg, "model") else cfg.model
        if not isinstance(model, DictConfig) or model.get("name") not in MODELS:
            name = model.get("name") if isinstance(model, DictConfig) else model
            raise UserError(f"model.name {name!r} is not one of {', '.join(MODELS)}")
        _check_keys(cfg)
        check_values(cfg)
    except (UserError, OmegaConfBaseException) as err:
        raise UserError(f"{path}: {err}: restore the file, or train a new run") from None


def compose_config(overrides: list[str]) -> DictConfig:
    """The resolved config for these overrides (no sweeps), or a UserError naming the key."""
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        _check_keys(cfg)
        check_values(cfg)
        from tsforge.data.chosen import check_data

        check_data(cfg.data)
        OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(f"bad override: {_one_line(err)}") from None


def _check_group_choice(o) -> None:
    """`data=schema` and `model=nhits_schema` name typed schemas, which Hydra lets one pick
    like options: they are no dataset or model of their own."""
    if o.key_or_group.lstrip("+~") in ("model", "data", "launcher", "experiment"):
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if str(value).endswith("schema"):
                raise UserError(f"{o.key_or_group}={value} is the schema of the group, not an "
                                f"option of it: pick a file of conf/{o.key_or_group}/")


def config_folder(config_dir: str) -> Path:
    """`--config-dir DIR` as an absolute folder, or a UserError when there is none."""
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"--config-dir {config_dir}: no such folder; give a folder of your own "
                        f"configs (e.g. one holding experiment/<name>.yaml)")
    return folder


def with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """Hydra's `--config-dir DIR` as a `hydra.searchpath` override, merged with one the user
    gave, so that the checks here, sweeps and Hydra itself search the same folders."""
    if config_dir is None:
        return overrides
    folder = config_folder(config_dir)
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


def check_overrides(overrides: list[str]) -> DictConfig:
    """Compose the config for every value of every sweep override; raise on the first error.
    Returns the config of the first combination (the only one, without sweeps)."""
    parsed = _parse(overrides)
    base, sweeps = [], []
    for o in parsed:
        hydra_key = o.key_or_group.startswith("hydra.") or o.key_or_group == "hydra"
        if hydra_key and o.key_or_group != "hydra.searchpath":  # user configs stay findable
            continue
        _check_group_choice(o)
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            base.append(f"{o.input_line.split('=', 1)[0]}={values[0]}")
            sweeps.append((o.input_line.split("=", 1)[0], values[1:]))
        else:
            base.append(o.input_line)
    first = compose_config(base)
    for prefix, values in sweeps:
        for value in values:
            key = prefix.lstrip("+~")
            rest = [b for b in base if b.split("=", 1)[0].lstrip("+~") != key]
            compose_config(rest + [f"{prefix}={value}"])
    return first
