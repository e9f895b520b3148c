"""PNG plots of the benchmark result files, for benchmarks/README.md.

    python benchmarks/plots.py            # reads benchmarks/results/*.json, writes *.png there

- `long_horizon_curves.png` from long_horizon.json: validation MSE against training step of
  every cell's runs (seed 0), one panel per dataset, a line per model and horizon;
- `long_horizon_vs_published.png` from long_horizon.json and, with TSFORGE_DATA_DIR set,
  published_long_horizon.csv: each cell's test MSE against the best published MSE;
- `train_throughput.png` from train_throughput.json: windows/s of tsforge, neuralforecast and
  the bare step;
- `ddp_scaling.png` from ddp_scaling.json: windows/s of 1 and 2 ranks.

A result file that is not there is skipped with a message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_horizon  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STYLES = {"DLinear": ":", "NHITS": "--", "PatchTST": "-"}


def _load(name: str):
    path = RESULTS / name
    if not path.exists():
        print(f"skipped: {path} is not there (run its benchmark first)")
        return None
    return json.loads(path.read_text())


def learning_curves(rows: list[dict]) -> Path:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        cells = [r for r in rows if r["dataset"] == dataset]
        horizons = sorted({r["horizon"] for r in cells})
        for r in cells:  # colour: the horizon; line style: the model
            curve = r["runs"][0]["val_curve"]
            if curve:
                steps, mse = zip(*curve)
                ax.plot(steps, mse, label=f"{r['model']} H={r['horizon']}", lw=1,
                        color=f"C{horizons.index(r['horizon'])}",
                        linestyle=STYLES.get(r["model"], "-"))  # fmt: skip
        ax.set_title(dataset)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation MSE (standardized)")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    out = RESULTS / "long_horizon_curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def against_published(rows: list[dict]) -> Path | None:
    data_dir = os.environ.get("TSFORGE_DATA_DIR")
    pub = long_horizon.published(Path(data_dir) if data_dir else None)
    pairs = []
    for r in rows:
        best = min((v[0] for v in pub.get((r["dataset"], r["horizon"]), {}).values()), default=None)
        if best is not None:
            pairs.append((f"{r['dataset']} {r['horizon']} {r['model']}", r["mse"], best))
    if not pairs:
        print("skipped: no published figures (set TSFORGE_DATA_DIR)")
        return None
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(pairs) + 1))
    y = range(len(pairs))
    ax.barh([i + 0.2 for i in y], [p[1] for p in pairs], height=0.4, label="tsforge")
    ax.barh([i - 0.2 for i in y], [p[2] for p in pairs], height=0.4, label="best published")
    ax.set_yticks(list(y), [p[0] for p in pairs], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("test MSE (standardized)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = RESULTS / "long_horizon_vs_published.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def bars(title: str, labels: list[str], values: list[float], ylabel: str, name: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(labels, values, color=["C0", "C1", "C2", "C3"][: len(values)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    out = RESULTS / name
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _median_of(record: dict, side: str) -> float | None:
    """A side's median windows/s, from the layouts the speed benchmarks write."""
    medians = record.get("median_windows_per_s")
    if isinstance(medians, dict) and isinstance(medians.get(side), (int, float)):
        return float(medians[side])
    for key in (f"{side}_windows_per_s", side):
        value = record.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict):
            for k in ("median_windows_per_s", "windows_per_s", "median"):
                if isinstance(value.get(k), (int, float)):
                    return float(value[k])
    return None


def speed_bars(name: str, sides: tuple[str, ...], title: str) -> Path | None:
    """Bars of the median windows/s per side of a speed benchmark's result file."""
    record = _load(f"{name}.json")
    if not record:
        return None
    found = [s for s in sides if _median_of(record, s)]
    if not found:
        print(f"skipped: {name}.json holds no median windows/s per side")
        return None
    return bars(title, found, [_median_of(record, s) for s in found], "windows/s",
                f"{name}.png")  # fmt: skip


def main() -> int:
    made = []
    rows = _load("long_horizon.json")
    if rows:
        made.append(learning_curves(rows))
        made.append(against_published(rows))
    for name, sides, title in (
        ("train_throughput", ("tsforge", "neuralforecast", "bare"),
         "NHITS training on ETTh1 (median)"),
        ("ddp_scaling", ("1_rank", "2_ranks"), "DDP scaling, gloo, 1 thread per rank"),
    ):  # fmt: skip
        made.append(speed_bars(name, sides, title))
    for path in made:
        if path:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
