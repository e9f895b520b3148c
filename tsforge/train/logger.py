"""Run logging: `metrics.jsonl`, TensorBoard and the console from one rank, a null logger on
the others.

`make_logger(run_dir, is_main, val_metrics)` is the one place that decides which rank writes;
the loop calls the same methods on every rank.

    RUN_DIR/metrics.jsonl   one JSON object per logged step or evaluation, with `step`
    RUN_DIR/tb/             TensorBoard events (`tensorboard --logdir RUN_DIR/tb`): scalars,
                            forecast images and a custom-scalars layout of one chart per
                            quantity (never two scales on one axis)
    RUN_DIR/tb/test/        the HParams session: the config (session start info) and the
                            test metrics, the only scalars there, so that the HParams tab
                            offers them as its metric columns

The HParams tab's columns: for a run of a sweep, the keys the sweep varies (marked as
differing) and the test metrics, from an experiment summary that every run of the sweep writes
alike (`experiment`). A run of no sweep writes none: TensorBoard builds the table from the
runs in its logdir, marking the keys whose values differ between them, which it shows first.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Charts of the custom-scalars layout, by category: one tag (or one regex) per chart.
TRAIN_CHARTS = {
    "loss": ["train/loss", "val/loss"],
    "optimizer": ["train/lr", "train/grad_norm"],
    "throughput": ["perf/windows_per_s", r"perf/windows_per_s_rank\d+", "perf/step_time_ms",
                   "perf/data_wait_frac", "perf/windows_per_s_per_rank", "perf/mfu"],
    "memory": ["mem/cpu_rss_mb"],
}  # fmt: skip
HPARAMS_RUN = "test"  # the HParams session's folder under tb/


class NullLogger:
    """What non-main ranks get: every call does nothing."""

    def begin(self, step: int, max_steps: int, watch: str, best: float = math.inf,
              best_step: int | None = None) -> None:  # fmt: skip
        pass

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def images(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
        pass

    def hparams(self, config: dict[str, Any], metrics: dict[str, float],
                varied: dict[str, list] | None = None) -> None:  # fmt: skip
        pass

    def close(self) -> None:
        pass


def _plain(value: Any) -> Any:
    value = float(value)
    return value if math.isfinite(value) else None


def duration(seconds: float) -> str:
    """`1:02:03` or `2:03` (h:mm:ss, m:ss)."""
    s = max(0, int(round(seconds)))
    h, m = divmod(s, 3600)
    return f"{h}:{m // 60:02d}:{m % 60:02d}" if h else f"{m // 60}:{m % 60:02d}"


def layout(val_metrics: Iterable[str]) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: each chart holds one quantity, so its axis has one scale."""
    charts = {"loss": TRAIN_CHARTS["loss"],  # then the validation metrics, then the rest
              "validation": [f"val/{m}" for m in val_metrics if m != "loss"], **TRAIN_CHARTS}
    return {
        category: {tag.replace(r"\d+", "<r>"): ["Multiline", [tag]] for tag in tags}
        for category, tags in charts.items()
        if tags
    }


def _flat_value(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def hparam_kind(values: list) -> type:
    """The one type an HParams column of these values takes: bool, float, else str."""
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str
             for v in map(_flat_value, values)}  # fmt: skip
    return kinds.pop() if len(kinds) == 1 else str


def experiment(varied: dict[str, list], metrics: list[str]):
    """The HParams experiment summary of a sweep: its columns are the keys the sweep varies
    (marked as differing, their values as the domain) and the test metrics, in this order.

    Without one TensorBoard builds it from the runs it finds, every config key a column, and
    shows five of them at first, alphabetically after those that differ."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams.summary_v2 import Discrete

    infos = []
    for key, values in varied.items():
        kind = hparam_kind(values)
        info = api_pb2.HParamInfo(name=key, differs=True)
        Discrete(list(dict.fromkeys(kind(_flat_value(v)) for v in values))).update_hparam_info(info)
        infos.append(info)
    names = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics]
    data = plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=names)
    )
    meta = metadata.create_summary_metadata(data)
    return Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=meta)])


class RunLogger(NullLogger):
    """Writes every record to `metrics.jsonl`, to TensorBoard under `tb/`, and one console
    line per training log or evaluation."""

    def __init__(self, run_dir: str | Path, val_metrics: Iterable[str] = ()):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        self.tb.add_custom_scalars(layout(val_metrics))
        self.begin(0, 0, "loss")

    def begin(self, step: int, max_steps: int, watch: str, best: float = math.inf,
              best_step: int | None = None) -> None:  # fmt: skip
        """Where this start of the run begins: for the progress, ETA and best-so-far lines."""
        self.t0, self.step0, self.max_steps = time.monotonic(), step, max_steps
        self.watch, self.best, self.best_step = f"val/{watch}", best, best_step

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._print(step, values)
        record = {"step": int(step), "time": time.time()}
        record.update({k: _plain(v) for k, v in values.items()})
        self.jsonl.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if math.isfinite(float(value)):
                self.tb.add_scalar(key, float(value), int(step))

    def _progress(self, step: int) -> str:
        """`step 40/200  elapsed 0:12  ETA 0:48` (ETA from this start's pace)."""
        width = len(str(self.max_steps))
        elapsed = time.monotonic() - self.t0
        done, left = step - self.step0, self.max_steps - step
        eta = duration(elapsed / done * left) if done > 0 else "?"
        return f"step {step:>{width}}/{self.max_steps}  elapsed {duration(elapsed)}  ETA {eta}"

    def _print(self, step: int, values: dict[str, float]) -> None:
        if "train/loss" in values:
            print(
                f"{self._progress(step)}  loss {values['train/loss']:.4f}  "
                f"lr {values['train/lr']:.2e}  {values['perf/windows_per_s']:,.0f} windows/s  "
                f"data wait {100 * values['perf/data_wait_frac']:.0f}%",
                flush=True,
            )
        elif any(k.startswith("val/") for k in values):
            shown = []
            if self.watch in values:  # the early-stopping metric first, with the best so far
                value = values[self.watch]
                if value < self.best:
                    self.best, self.best_step = value, step
                at = f" at step {self.best_step}" if self.best_step is not None else ""
                best = "new best" if self.best_step == step else f"best {self.best:.4f}{at}"
                shown.append(f"{self.watch} {value:.4f} ({best})")
            shown += [f"{k} {values[k]:.4f}" for k in ("val/mse", "val/mae", "val/loss")
                      if k in values and k != self.watch]  # fmt: skip
            width = len(str(self.max_steps))
            print(f"step {step:>{width}}/{self.max_steps}  validation  {'  '.join(shown)}",
                  flush=True)  # fmt: skip

    def images(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
        self.tb.add_image(tag, image_HWC, int(step), dataformats="HWC")

    def hparams(self, config: dict[str, Any], metrics: dict[str, float],
                varied: dict[str, list] | None = None) -> None:  # fmt: skip
        """The config as the HParams session of this run, with `metrics` (the test metrics)
        as its only scalars: the HParams tab's metric columns. `varied`: the keys the run's
        sweep varies, with their values, the tab's columns (see `experiment`)."""
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        flat = {k: _flat_value(v) for k, v in config.items()}
        for key, values in (varied or {}).items():  # one type per column, the domain's
            if key in flat:
                try:
                    flat[key] = hparam_kind(values)(flat[key])
                except (TypeError, ValueError):
                    varied = {}  # values that are not this run's kind: no summary at all
                    break
        finite = {k: float(v) for k, v in metrics.items() if _plain(v) is not None}
        _, start, end = hparams(flat, finite)
        with SummaryWriter(log_dir=str(self.run_dir / "tb" / HPARAMS_RUN)) as writer:
            if varied:
                writer.file_writer.add_summary(experiment(varied, list(finite)))
            writer.file_writer.add_summary(start)
            writer.file_writer.add_summary(end)
            for key, value in finite.items():
                writer.add_scalar(key, value)

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
        self.jsonl.close()


def make_logger(run_dir: str | Path, is_main: bool, val_metrics: Iterable[str] = ()) -> NullLogger:
    """`val_metrics`: the names the evaluator reports (`mae`, `mse`, ...), one chart each."""
    return RunLogger(run_dir, val_metrics) if is_main else NullLogger()
