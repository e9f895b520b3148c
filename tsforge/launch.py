"""Compose the Hydra config and train: in this process, in local DDP processes or on SLURM.

    python -m tsforge.launch                                  # NHITS on synthetic data, CPU
    python -m tsforge.launch model=dlinear data.horizon=48 trainer.max_steps=1000
    python -m tsforge.launch launcher.nprocs=2                # 2 DDP processes (gloo on CPU)
    python -m tsforge.launch hydra.run.dir=runs/a             # again: resumes runs/a
    python -m tsforge.launch -m model=nhits,dlinear           # a sweep, one run each
    python -m tsforge.launch launcher=slurm launcher.nodes=2  # a SLURM job (launchers/slurm.py)
    python -m tsforge.launch -m launcher=slurm model=nhits,dlinear  # one job array
    python -m tsforge.launch --config-dir ~/my-configs experiment=mine   # configs of your own

Exit codes: 0 done; 2 bad input (one line on stderr); 1 this machine cannot write the run
directory (one line naming the path: a full disk, a read-only filesystem), or anything else;
75 stopped by a signal (SIGTERM, SIGUSR1, SIGUSR2), at any moment from start-up on, with a run
that resumes (or, if nothing was trained yet, starts cleanly) when launched again.

Before anything is written, the launch checks every config value, that `hydra.run.dir` is a
place for a run (new, empty, or a run directory to resume) that this machine can write, and,
for a run to resume, that the new config changes nothing that the run cannot take
(`tsforge.train.resume`). Bad input found once the run has started (too few windows for the
batch) leaves nothing behind: a run directory this launch made is removed again. One that
held an earlier run is kept as it was.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tsforge.config import CONF_DIR
from tsforge.errors import EXIT_FAILURE, EXIT_REQUEUE, EXIT_USAGE, UserError, environment_fault
from tsforge.train import stop

_STARTED = time.time()
_RUN_DIR_FIX = ", or use another hydra.run.dir"


def _made_by_this_launch(run_dir: Path) -> bool:
    """Empty, and created after this process started: Hydra made it for this launch (asked
    before the launch writes anything)."""
    return not any(run_dir.iterdir()) and run_dir.stat().st_ctime >= _STARTED


def _fail(err: BaseException, where: Path | None = None) -> int | None:
    """One line on stderr and the exit code, for bad input or a machine fault; None otherwise."""
    if isinstance(err, UserError):
        print(f"tsforge: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    line = environment_fault(err, where, also=_RUN_DIR_FIX)
    if line is None:
        return None
    print(f"tsforge: error: {line}", file=sys.stderr)
    return EXIT_FAILURE


def _stopped_before_start() -> int:
    print(f"tsforge: stopped by {stop.name(stop.requested())} before training started; nothing "
          "was trained: launch again to start", file=sys.stderr)
    return EXIT_REQUEUE


def _task(cfg) -> None:
    """Hydra's task: one run, in the run directory Hydra made."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    new = _made_by_this_launch(run_dir)
    said = False  # bad input or a machine fault, said in one line (not a crash to look into)
    try:
        if stop.requested():
            code = _stopped_before_start()
        elif cfg.launcher.name == "slurm":
            from tsforge.launchers.slurm import launch_slurm

            code = launch_slurm(cfg, run_dir)
        else:
            from tsforge.launchers.local import launch_local

            code = launch_local(cfg, run_dir)
    except (UserError, OSError) as err:
        code = _fail(err, run_dir)
        if code is None:
            raise
        said = True
    if (said or code == EXIT_USAGE) and new and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made run is left
    if code:
        sys.exit(code)


def _check_single_run(overrides: list[str], cfg) -> None:
    """The run directory and, for a run to resume, the config changes: before Hydra makes
    or writes anything."""
    from omegaconf import OmegaConf

    from tsforge.config.checks import run_dir_of
    from tsforge.train.checkpoint import init_checkpoint
    from tsforge.train.resume import config_changes
    from tsforge.train.rundir import check_run_dir, read_config

    run_dir = run_dir_of(overrides)
    check_run_dir(run_dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and (run_dir / "checkpoints").is_dir() \
            and any((run_dir / "checkpoints").iterdir()):  # fmt: skip
        new = OmegaConf.to_container(cfg, resolve=True)
        config_changes(OmegaConf.to_container(read_config(saved), resolve=True), new, run_dir)
    elif cfg.trainer.init_from:  # a new run: its weights must be there (a resume ignores them)
        init_checkpoint(cfg.trainer.init_from)


def _hydra_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Hydra's own flags and the overrides, read by Hydra's parser (flags may come anywhere);
    `--config-dir DIR` becomes a `hydra.searchpath` override (see `with_config_dir`)."""
    from hydra._internal.utils import get_args_parser

    from tsforge.config.checks import with_config_dir

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
    stop.install()  # first: a stop signal during the imports below is recorded, not fatal
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from tsforge.config.checks import check_overrides

        args, hydra_argv = _hydra_args(argv)
        overrides = args.overrides
        if args.help:  # the groups and keys a user chooses from (Hydra's lists schema nodes)
            from tsforge.config.usage import usage

            print(usage([args.config_dir] if args.config_dir else None))
            return 0
        if not (args.help or args.hydra_help or args.cfg or args.info or args.shell_completion):
            cfg = check_overrides(overrides)
            if args.multirun:
                from tsforge.launchers.sweep import is_slurm_sweep, submit_sweep

                if is_slurm_sweep(overrides):  # one job array, not Hydra's run after run
                    return _stopped_before_start() if stop.requested() else submit_sweep(overrides)
            else:
                _check_single_run(overrides, cfg)
    except (UserError, OSError) as err:
        code = _fail(err)
        if code is None:
            raise
        return code
    if stop.requested():
        return _stopped_before_start()
    import hydra

    from tsforge.config.schema import register

    register()
    sys.argv = [sys.argv[0], *hydra_argv]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
