"""Configuration: typed schemas (`schema`) and early checks of command-line overrides (`checks`)."""

from pathlib import Path

# conf/ sits beside the package in the repository (installed with `pip install -e .`).
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
