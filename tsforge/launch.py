"""Compose the Hydra config and train: in this process, in local DDP processes or on SLURM.

    python -m tsforge.launch                                  # NHITS on synthetic data, CPU
    python -m tsforge.launch model=dlinear data.horizon=48 trainer.max_steps=1000
    python -m tsforge.launch launcher.nprocs=2                # 2 DDP processes (gloo on CPU)
    python -m tsforge.launch hydra.run.dir=runs/a             # again: resumes runs/a
    python -m tsforge.launch -m model=nhits,dlinear           # a sweep, one run each
    python -m tsforge.launch launcher=slurm launcher.nodes=2  # a SLURM job (tsforge/train/slurm.py)
    python -m tsforge.launch -m launcher=slurm model=nhits,dlinear  # one job array (train/sweep.py)

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
            from tsforge.train.slurm import launch_slurm

            code = launch_slurm(cfg, run_dir)
        else:
            from tsforge.train.local import launch_local

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
    from tsforge.train.resume import config_changes
    from tsforge.train.rundir import check_run_dir, read_config

    run_dir = run_dir_of(overrides)
    check_run_dir(run_dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and (run_dir / "checkpoints").is_dir() \
            and any((run_dir / "checkpoints").iterdir()):  # fmt: skip
        new = OmegaConf.to_container(cfg, resolve=True)
        config_changes(OmegaConf.to_container(read_config(saved), resolve=True), new, run_dir)


def main(argv: list[str] | None = None) -> int:
    stop.install()  # first: a stop signal during the imports below is recorded, not fatal
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if not a.startswith("-")]
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        from tsforge.config.checks import check_overrides

        cfg = check_overrides(overrides)
        if multirun:
            from tsforge.train.sweep import is_slurm_sweep, submit_sweep

            if is_slurm_sweep(overrides):  # one job array, instead of Hydra's run after run
                return _stopped_before_start() if stop.requested() else submit_sweep(overrides)
        elif not {"--help", "-h", "--cfg", "-c", "--info", "-i"} & set(argv):
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
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
