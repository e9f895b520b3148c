"""A sweep's overrides as Hydra reads them: one override list per run, in the order of Hydra's
basic sweeper (the last override varies fastest).

    from tsforge.config.sweeps import expand
    expand(["model=nhits,dlinear", "optim.lr=1e-3,3e-3"])   # 4 lists of 2 overrides
    with hydra_set_aside():                                 # compose inside a running app
        cfg = compose_config(expand(overrides)[0])
"""

from __future__ import annotations

import contextlib

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


def expand(overrides: list[str]) -> list[list[str]]:
    """One override list per run, in Hydra's order (the basic sweeper's own expansion)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


@contextlib.contextmanager
def hydra_set_aside():
    """Compose inside a running Hydra app (a job of a local multirun): Hydra's global state
    is set aside and put back after, as `hydra.initialize` itself does on leaving."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        restore_gh_from_backup(backup)
