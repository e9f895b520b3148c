"""Configuration: typed schemas (`schema`) and early checks of command-line overrides (`checks`).

The Hydra configs ship inside the package as `tsforge/conf` (in the repository a link to the
top-level `conf/`), so an installed wheel and a checkout find them alike. Users add folders of
their own with `--config-dir DIR` or `hydra.searchpath=[file://DIR]` (README, "Your own
configs").
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
