"""`python -m tsforge.launch --help`: what a user chooses from, read from the config folders.

    from tsforge.config.usage import usage
    print(usage())                      # the built-in conf/
    print(usage(["~/my-configs"]))      # with a --config-dir of one's own

The config groups and their options are the YAML files in the sub-folders of `conf/` (and of
the folders given), the default of each is the one `conf/config.yaml` picks; the keys of each
section come from the typed schema (`tsforge.config.schema`). The schema's own entries in
Hydra's ConfigStore (`data/schema`, `model/nhits_schema`, ...) are not options: not listed.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import yaml

from tsforge.config import CONF_DIR
from tsforge.config.schema import Config

WIDTH = 96
GROUP_NOTES = {
    "model": "the network",
    "data": "a built-in dataset and its protocol, or data=store data.path=STORE",
    "launcher": "where it trains: this machine (launcher.nprocs DDP processes) or SLURM",
    "experiment": "a named, committed run (none by default)",
}
EXAMPLES = """\
  python -m tsforge.launch model=dlinear data.horizon=48 trainer.max_steps=2000
  python -m tsforge.launch experiment=etth1_nhits_h96
  python -m tsforge.launch -m model=nhits,dlinear optim.lr=1e-3,3e-4     # a sweep
  python -m tsforge.launch launcher=slurm launcher.nodes=2
  python -m tsforge.launch hydra.run.dir=runs/mine                      # again: resumes
  python -m tsforge.launch --cfg job model=patchtst                     # the config, no run"""
FLAGS = """\
  -m, --multirun       one run per combination of comma-separated values (a sweep)
  --cfg job            print the composed config and exit (no run directory is made)
  --config-dir DIR     configs of your own, found beside the built-in ones
  --info               where Hydra looks for configs
  --hydra-help         Hydra's own flags and keys (hydra.run.dir, hydra.sweep.dir, ...)"""


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _options(folders: list[Path]) -> dict[str, list[str]]:
    """{group: options} from the YAML files in each folder's sub-folders. Deeper folders
    (`experiment/recipe/`) hold the parts that named runs are built from, not choices."""
    groups: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.glob("*/*.yaml"):
            groups.setdefault(path.parent.name, set()).add(path.stem)
    return {g: sorted(groups[g], key=_natural) for g in sorted(groups)}


def _defaults() -> dict[str, str | None]:
    """The option `conf/config.yaml` picks in each group."""
    listed = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    return {k: v for item in listed if isinstance(item, dict) for k, v in item.items()
            if not k.startswith("override ")}  # fmt: skip


def _wrapped(head: str, words: list[str]) -> str:
    return textwrap.fill(", ".join(words), WIDTH, initial_indent=head,
                         subsequent_indent=" " * len(head))  # fmt: skip


def usage(config_dirs: list[str] | None = None) -> str:
    folders = [CONF_DIR, *(Path(d).expanduser() for d in config_dirs or [])]
    defaults = _defaults()
    options = _options(folders)
    pad = max(map(len, options)) + 3
    lines = [
        "usage: python -m tsforge.launch [-m] [--config-dir DIR] [GROUP=OPTION ...] "
        "[KEY=VALUE ...]",
        "",
        "Compose a config from the groups below, override any key, then train and evaluate",
        "(here, in local DDP processes, or as a SLURM job: launcher=). Exit codes: 0 done,",
        "2 bad input (one line), 1 a fault of this machine, 75 stopped by a signal (resume).",
        "",
        "Config groups (GROUP=OPTION; * the default):",
    ]
    for group, names in options.items():
        marked = [f"{n}*" if n == defaults.get(group) else n for n in names]
        note = GROUP_NOTES.get(group)
        if note:
            lines.append(f"  {group + '=':<{pad}}{note}")
            lines.append(_wrapped(" " * (pad + 2), marked))
        else:
            lines.append(_wrapped(f"  {group + '=':<{pad}}", marked))
    lines += ["", "Keys (KEY=VALUE; --cfg job prints them all with their values):"]
    for section in dataclasses.fields(Config):
        if section.name == "model":
            lines.append(f"  {'model.':<{pad}}the chosen model's (--cfg job model=NAME shows them)")
            continue
        keys = [f.name for f in dataclasses.fields(section.default_factory())]
        lines.append(_wrapped(f"  {section.name + '.':<{pad}}", keys))
    lines += ["", "Examples:", EXAMPLES, "", "Flags:", FLAGS]
    return "\n".join(lines)
