"""What a study leaves for people: the best trial as a named experiment, Optuna's plots, and
TensorBoard's view of the study.

    write_experiment(path, run_dir, header)    # conf/experiment/<name>.yaml of the best trial
    write_plots(study, STUDY_DIR / "plots")    # history.png, importances.png, curves.png
    write_dashboard(study, search, STUDY_DIR / "tb")   # the HParams columns, best value so far

The experiment file holds the best trial's whole config (everything but the launcher, which
stays the user's choice), so `python -m tsforge.launch --config-dir STUDY_DIR/conf
experiment=<name>` trains exactly what the trial trained, whatever the defaults become later.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from tsforge.config.search import SearchConfig
from tsforge.train.rundir import read_config, write_atomic


def write_experiment(path: Path, run_dir: Path, header: list[str]) -> None:
    config = OmegaConf.to_container(read_config(run_dir / "config.yaml"), resolve=True)
    config.pop("launcher", None)
    body = {"defaults": [{"override /model": config["model"]["name"]}, "_self_"], **config}
    lines = ["# @package _global_", *(f"# {line}" if line else "#" for line in header)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body)))


def write_plots(study, folder: Path) -> list[Path]:
    """Optuna's own plots as PNG: the optimisation history, the parameters' importances
    (fANOVA; from two completed trials on) and the trials' validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    wanted = []
    if completed:
        wanted += [("history", plots.plot_optimization_history),
                   ("curves", plots.plot_intermediate_values)]  # fmt: skip
    if len(completed) >= 2 and any(len({str(t.params.get(k)) for t in completed}) > 1
                                   for t in completed for k in t.params):  # fmt: skip
        wanted.append(("importances", plots.plot_param_importances))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few distinct trials for this plot yet
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        plt.close(figure)
        written.append(folder / f"{name}.png")
    return written


def write_dashboard(study, search: SearchConfig, folder: Path) -> None:
    """TensorBoard: the HParams tab's columns (the searched keys, with their ranges, then the
    selection metric and the test metrics) and the study's value and best value per trial."""
    from optuna.trial import TrialState
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams.summary_v2 import Discrete, IntInterval, RealInterval
    from torch.utils.tensorboard import SummaryWriter

    infos = []
    for key, spec in search.params.items():
        info = api_pb2.HParamInfo(name=key, differs=True)
        if spec.type == "float":
            RealInterval(float(spec.low), float(spec.high)).update_hparam_info(info)
        elif spec.type == "int":
            IntInterval(int(spec.low), int(spec.high)).update_hparam_info(info)
        else:
            kinds = {type(c) for c in spec.choices}
            values = spec.choices if kinds <= {int, float} or kinds == {bool} else \
                [str(c) for c in spec.choices]  # fmt: skip
            with contextlib.suppress(ValueError, TypeError):
                Discrete(list(dict.fromkeys(values))).update_hparam_info(info)
        infos.append(info)
    metrics = [f"best_val/{search.metric}", "test/mse", "test/mae"]
    names = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics]
    data = plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=names))
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG,
                                           metadata=metadata.create_summary_metadata(data))])
    for old in folder.glob("events.out.tfevents.*") if folder.is_dir() else []:
        old.unlink()  # one current summary: TensorBoard reads every event file it finds
    best = None
    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.file_writer.add_summary(summary)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = trial.value if best is None else min(best, trial.value)
            writer.add_scalar(f"study/val_{search.metric}", trial.value, trial.number)
            writer.add_scalar(f"study/best_val_{search.metric}", best, trial.number)
