"""Compose the Hydra config and train: in this process, in local DDP processes or on SLURM.

    python -m tsforge.launch                                  # NHITS on synthetic data, CPU
    python -m tsforge.launch model=dlinear data.horizon=48 trainer.max_steps=1000
    python -m tsforge.launch launcher.nprocs=2                # 2 DDP processes (gloo on CPU)
    python -m tsforge.launch hydra.run.dir=runs/a             # again: resumes runs/a
    python -m tsforge.launch -m model=nhits,dlinear           # a sweep, one run each
    python -m tsforge.launch launcher=slurm launcher.nodes=2  # a SLURM job (tsforge/train/slurm.py)
    python -m tsforge.launch -m launcher=slurm model=nhits,dlinear  # one job array (train/sweep.py)
    python -m tsforge.launch --config-dir ~/my-configs experiment=mine   # configs of your own

Exit codes: 0 done; 2 bad input (one line on stderr); 75 stopped by a signal after writing a
checkpoint (launch again with the same run directory to resume); 1 anything else.

Bad input found once the run has started (a store that does not exist, too few windows for
the batch) leaves nothing behind: a run directory this launch made is removed again. One that
held an earlier run is kept as it was.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tsforge.config import CONF_DIR
from tsforge.config.checks import check_overrides, with_config_dir
from tsforge.config.schema import register
from tsforge.errors import EXIT_USAGE, UserError

_STARTED = time.time()


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _made_by_this_launch(run_dir: Path) -> bool:
    """Empty, and created after this process started: Hydra made it for this launch."""
    return not any(run_dir.iterdir()) and run_dir.stat().st_ctime >= _STARTED


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from tsforge.train.local import launch_local

    run_dir = _run_dir()
    new = _made_by_this_launch(run_dir)
    try:
        if cfg.launcher.name == "slurm":
            from tsforge.train.slurm import launch_slurm

            code = launch_slurm(cfg, run_dir)
        else:
            code = launch_local(cfg, run_dir)
    except UserError as err:
        print(f"tsforge: error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    if code == EXIT_USAGE and new:
        shutil.rmtree(run_dir, ignore_errors=True)  # bad input: no half-made run is left
    if code:
        sys.exit(code)


def _hydra_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Hydra's own flags and the overrides, read by Hydra's parser (flags may come anywhere);
    `--config-dir DIR` becomes a `hydra.searchpath` override (see `with_config_dir`)."""
    parser = get_args_parser()

    def refuse(message: str):
        raise UserError(f"{message} (see 'python -m tsforge.launch --help')")

    parser.error = refuse  # one line and exit 2, like every other bad input
    args = parser.parse_intermixed_args(argv)
    overrides = with_config_dir(list(args.overrides), args.config_dir)
    flags, rest, value_of_config_dir = [], list(args.overrides), False
    for token in argv:
        if value_of_config_dir:
            value_of_config_dir = False
        elif rest and token == rest[0]:
            rest.pop(0)
        elif token in ("--config-dir", "-cd"):
            value_of_config_dir = True
        elif not token.startswith("--config-dir="):
            flags.append(token)
    args.overrides = overrides
    return args, flags + overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, hydra_argv = _hydra_args(argv)
        asks_hydra = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
        if not asks_hydra:
            check_overrides(args.overrides)
        if args.multirun and not asks_hydra:
            from tsforge.train.sweep import is_slurm_sweep, submit_sweep

            if is_slurm_sweep(args.overrides):  # one job array, not Hydra's run after run
                return submit_sweep(args.overrides)
    except UserError as err:
        print(f"tsforge: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    register()
    sys.argv = [sys.argv[0], *hydra_argv]
    _hydra_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
