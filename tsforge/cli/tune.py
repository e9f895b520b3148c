"""`tsforge tune`: a hyper-parameter search (Optuna) whose trials are ordinary runs.

tsforge tune dlinear experiment=etth1_dlinear_h336                 # conf/search/dlinear.yaml
tsforge tune dlinear experiment=etth1_dlinear_h336 --parallel 2 --cpu-minutes 30
tsforge tune nhits experiment=etth1_nhits_h720 launcher=slurm launcher.array_parallelism=2 \
    --storage 'mysql+pymysql:///?read_default_file=/etc/tsforge/study-db.cnf'
tsforge tune --study runs/tune_dlinear_2026-11-30_10-00-00         # carry on a study
tsforge tune --study runs/tune_dlinear_2026-11-30_10-00-00 --retry-failed  # and its failures

The search (space, metric, sampler, pruner, budgets) is `conf/search/<SEARCH>.yaml` or
`search/<SEARCH>.yaml` in a `--config-dir` folder; the overrides after it choose the
experiment searched around, exactly as `python -m tsforge.launch` takes them. The flags
override the search's budgets. Everything is checked before anything is written.

Why a command and not a Hydra sweeper: trials run through tsforge's own launchers (local
processes, SLURM job arrays that return at once) while the controller keeps asking and
telling; Hydra's sweepers hand batches to a launcher and wait for each batch to end.

Exit codes: 0 done (a best trial found); 1 no trial completed, or the database or this
machine failed; 2 bad input (one line); 75 stopped by a signal: carry on with
`tsforge tune --study DIR`.
"""

from __future__ import annotations

import time
from pathlib import Path

from tsforge.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="hyper-parameter search: Optuna, pruning, local or SLURM")
    p.add_argument("search", nargs="?", help="a search in conf/search/ (not needed with "
                   "--study of an existing study)")
    p.add_argument("overrides", nargs="*", help="overrides of the experiment searched")
    p.add_argument("--study", metavar="DIR", help="the study's folder: new, or one to carry "
                   "on (default runs/tune_<search>_<time>)")
    p.add_argument("--config-dir", metavar="DIR", help="a folder of your own configs "
                   "(search/, experiment/, ...), searched before tsforge's")
    p.add_argument("--trials", type=int, help="at most this many trials")
    p.add_argument("--parallel", type=int, help="local trials at once")
    p.add_argument("--cpu-minutes", type=float, help="budget: allotted CPU-minutes")
    p.add_argument("--gpu-minutes", type=float, help="budget: allotted GPU-minutes")
    p.add_argument("--wall-minutes", type=float, help="budget: wall time of the search")
    p.add_argument("--retry-failed", action="store_true", help="carrying on a study: run its "
                   "failed trials' points again, each resuming the failed run's checkpoint")
    p.add_argument("--storage", metavar="URL", help="the study's database (default SQLite "
                   "in the study folder)")
    p.set_defaults(handler=_handler)


def _budgets(search, args) -> None:
    for key in ("trials", "parallel", "cpu_minutes", "gpu_minutes", "wall_minutes"):
        value = getattr(args, key)
        if value is not None:
            setattr(search, key, value)


def _folders(config_dir: str | None) -> list[str]:
    from tsforge.config.checks import config_folder

    return [] if config_dir is None else [str(config_folder(config_dir))]


def _plan(args):
    """(study folder, record, search, is_new) from the arguments and any existing study."""
    from tsforge.config.search import check_search, load_search
    from tsforge.tune.study import check_url, new_record, read_record, same_space, search_of

    study_dir = Path(args.study).expanduser().resolve() if args.study else None
    existing = study_dir is not None and (study_dir / "study.json").exists()
    if existing:
        record = read_record(study_dir)
        search = search_of(record, study_dir)
        if args.search and args.search != record["search"]:
            raise UserError(f"the study in {study_dir} runs search {record['search']}, not "
                            f"{args.search}: leave the search out to carry it on")
        if args.search:
            same_space(record, load_search(args.search, record["config_dirs"]), study_dir)
        if args.overrides and args.overrides != record["overrides"]:
            raise UserError(f"the study in {study_dir} was started with other overrides "
                            f"({' '.join(record['overrides']) or 'none'}): leave them out to "
                            f"carry it on")
        if args.storage and args.storage != record.get("storage"):
            raise UserError(f"the study in {study_dir} is kept in "
                            f"{record.get('storage') or 'its study.db'}; --storage cannot move it")
    else:
        if args.retry_failed:
            raise UserError("--retry-failed carries on a study: give --study DIR of a study "
                            "that has failed trials")
        if not args.search:
            where = f"{study_dir} holds no study.json" if study_dir else "no --study given"
            raise UserError(f"name a search (tsforge tune SEARCH [overrides]): {where}")
        folders = _folders(args.config_dir)
        search = load_search(args.search, folders)
        if args.storage:
            search.storage = args.storage
        if study_dir is None:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
            study_dir = (Path("runs") / f"tune_{args.search}_{stamp}").resolve()
        if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
            raise UserError(f"--study {study_dir} is not an empty folder and holds no study: "
                            f"give a new folder")
        record = new_record(study_dir, args.search, search, list(args.overrides), folders)
    _budgets(search, args)
    check_search(search, "the search with these flags")
    if search.storage:
        check_url(search.storage)
    return study_dir, record, search, not existing


def _handler(args) -> int:
    import shutil
    from dataclasses import asdict

    from tsforge.cli import interrupt
    from tsforge.config.checks import check_overrides, with_config_dir
    from tsforge.train.lock import RunLock, holder
    from tsforge.tune.controller import Controller, Settings
    from tsforge.tune.study import open_study, write_record

    study_dir, record, search, new = _plan(args)
    base = list(search.overrides) + list(record["overrides"])
    for folder in reversed(record["config_dirs"]):
        base = with_config_dir(base, folder)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:  # before check_overrides, which would compose every value of a sweep
        sweep = any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(base))
    except HydraException:
        sweep = False  # check_overrides names what does not parse
    if sweep:
        raise UserError("a study searches around one experiment: give single values (the "
                        "search's params say what varies)")
    cfg = check_overrides(base)
    extra = [f"trainer.early_stop_metric={search.metric}"]
    if cfg.launcher.name == "slurm":
        from tsforge.launchers.slurm import check_request
        from tsforge.tune.trials import SlurmRunner

        check_request(cfg.launcher)
        runner = SlurmRunner(study_dir, cfg.launcher, job_name=f"tsforge-tune-{study_dir.name}")
    else:
        import os

        from tsforge.tune.trials import LocalRunner

        if not cfg.trainer.threads:  # share this machine's cores between the trials at once
            share = (os.cpu_count() or 1) // (search.parallel * int(cfg.launcher.nprocs))
            extra.append(f"trainer.threads={max(1, share)}")
        runner = LocalRunner(study_dir, search.parallel)
    if search.gpu_minutes is not None and not runner.gpus(cfg):
        raise UserError(f"--gpu-minutes / gpu_minutes={search.gpu_minutes:g}: the trials hold no "
                        f"GPU ({runner.no_gpu_reason}): give a CPU-minutes or wall budget, "
                        f"or run the trials on GPUs")  # fmt: skip
    who = holder(study_dir) if study_dir.is_dir() else None
    if who:
        raise UserError(f"the study in {study_dir} is in use by pid {who}: another tsforge "
                        f"tune runs it; wait for it, or stop it (kill -TERM {who.split('@')[0]})")
    made = not study_dir.exists()
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        # A stop signal before the controller takes over raises KeyboardInterrupt (exit 130),
        # so that a study stopped before it is recorded leaves no folder behind.
        with interrupt.stop_on_signals(), RunLock(study_dir):
            study = open_study(record, search, study_dir, max_steps=int(cfg.trainer.max_steps),
                               val_every=int(cfg.trainer.val_every_steps))  # fmt: skip
            if new:
                from tsforge.tune.space import as_labels

                for point in search.enqueue:
                    study.enqueue_trial(as_labels(point), skip_if_exists=True)
            # the budgets as given now: carrying on without flags keeps them
            record["search_config"], record["storage"] = asdict(search), search.storage
            record["param_order"] = list(search.params)
            write_record(study_dir, record)
            print(f"study {record['study_name']} ({'new' if new else 'carried on'}): search "
                  f"{record['search']}, {search.trials} trials, {runner.width} at once, "
                  f"pruner {search.pruner} -> {study_dir}", flush=True)
            controller = Controller(study_dir, search, study, runner,
                                    Settings(record["search"], base, extra))  # fmt: skip
            if args.retry_failed:
                controller.retry_failed()
            return controller.run()
    except (UserError, OSError, KeyboardInterrupt):
        if new and not (study_dir / "study.json").exists():  # nothing of a study was made
            if made:
                shutil.rmtree(study_dir, ignore_errors=True)
            else:  # the empty folder given was the user's: only what went into it goes
                (study_dir / "study.db").unlink(missing_ok=True)
        raise
