"""Run logging: `metrics.jsonl` and TensorBoard from one rank, a null logger on the others.

`make_logger(run_dir, is_main)` is the one place that decides which rank writes; the loop
calls the same methods on every rank.

    RUN_DIR/metrics.jsonl   one JSON object per logged step or evaluation, with `step`
    RUN_DIR/tb/             TensorBoard events (`tensorboard --logdir RUN_DIR/tb`)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np


class NullLogger:
    """What non-main ranks get: every call does nothing."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def images(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
        pass

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _plain(value: Any) -> Any:
    value = float(value)
    return value if math.isfinite(value) else None


class RunLogger(NullLogger):
    """Writes every record to `metrics.jsonl` and to TensorBoard under `tb/`."""

    def __init__(self, run_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        self._layout()

    def _layout(self) -> None:
        # The dashboard opens with the loss curves together and the throughput together.
        self.tb.add_custom_scalars(
            {
                "tsforge": {
                    "loss": ["Multiline", ["train/loss", "val/loss"]],
                    "validation": ["Multiline", ["val/mae", "val/mse"]],
                    "throughput": [
                        "Multiline", ["perf/windows_per_s", r"perf/windows_per_s_rank\d+"]
                    ],
                    "data wait": ["Multiline", ["perf/data_wait_frac"]],
                }
            }
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._print(step, values)
        record = {"step": int(step), "time": time.time()}
        record.update({k: _plain(v) for k, v in values.items()})
        self.jsonl.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if math.isfinite(float(value)):
                self.tb.add_scalar(key, float(value), int(step))

    def _print(self, step: int, values: dict[str, float]) -> None:
        """One console line per training log or evaluation, so a run shows its progress."""
        if "train/loss" in values:
            print(
                f"step {step:>6}  loss {values['train/loss']:.4f}  lr {values['train/lr']:.2e}  "
                f"{values['perf/windows_per_s']:,.0f} windows/s  "
                f"data wait {100 * values['perf/data_wait_frac']:.0f}%",
                flush=True,
            )
        elif any(k.startswith("val/") for k in values):
            shown = "  ".join(
                f"{k} {v:.4f}" for k, v in values.items() if k in ("val/loss", "val/mae", "val/mse")
            )
            print(f"step {step:>6}  {shown}", flush=True)

    def images(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
        self.tb.add_image(tag, image_HWC, int(step), dataformats="HWC")

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()
        }
        finite = {f"hparam/{k}": float(v) for k, v in metrics.items() if _plain(v) is not None}
        self.tb.add_hparams(flat, finite, run_name=".")

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
        self.jsonl.close()


def make_logger(run_dir: str | Path, is_main: bool) -> NullLogger:
    return RunLogger(run_dir) if is_main else NullLogger()
