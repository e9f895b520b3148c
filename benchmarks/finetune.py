"""Fine-tuning: the small patch decoder pretrained by benchmarks/pretrain.py, fine-tuned on the
ETTh1 and M4 Hourly train splits in a fraction of the steps of tsforge's from-scratch models,
scored beside them, beside its own zero-shot score and beside the same recipe from scratch.

    TSFORGE_DATA_DIR=/path/to/data python benchmarks/finetune.py      # after pretrain.py
    python benchmarks/finetune.py --pretrained RUN_DIR --tasks etth1   # another pretrained run
    python benchmarks/finetune.py --scratch etth1                 # + ETTh1's recipe from scratch
    python benchmarks/finetune.py --report                            # tables from the JSON
    python benchmarks/finetune.py --quick --pretrained RUN_DIR   # 4 steps each: does it run?

- ETTh1 H=96: `experiment=etth1_patch_decoder_small_h96 trainer.init_from=RUN_DIR` (9 quantile
  levels, 256 steps of context as in pretraining, lr 1e-4 cosine, batch 128, 760 steps,
  validation every 190 steps, the best by validation MSE is tested). Against the best H=96 row
  of results/long_horizon.csv (its model, test MSE/MAE and training steps) and against the
  pretrained model's zero-shot ETTh1 figures from pretrain.py's suite (same test windows).
- M4 Hourly: `python benchmarks/m4_hourly.py --experiment m4_hourly_patch_decoder_small
  trainer.init_from=RUN_DIR` (batch 256, 500 steps), scored as M4 does; against
  results/m4_hourly.csv's m4_hourly_nhits seeds (one model each; their recipe's max_steps,
  3,000, is the from-scratch step count).
- `--scratch etth1,m4` also trains those tasks' recipes without `trainer.init_from`: what
  pretraining adds at the same steps.

Steps count optimizer updates; windows per step are reported beside them (batch sizes differ).
Training uses `--nprocs` local ranks of one thread each. Writes results/finetune.json and
results/finetune.md (or beside `--json`); runs go to `--work` (default benchmarks/out/finetune).
A finished run is not trained again: delete its folder to redo it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

from common import OUT, REPO, RESULTS, child_env, machine, run_checked, write_json

HERE = Path(__file__).resolve().parent
TASKS = {
    "etth1": "etth1_patch_decoder_small_h96",
    "m4": "m4_hourly_patch_decoder_small",
}
SCRATCH_M4 = "m4_hourly_nhits"


def experiment_value(name: str, *keys: str):
    """A value of conf/experiment/<name>.yaml (its own keys, not the composed config)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "experiment" / f"{name}.yaml")
    for key in keys:
        node = node[key]
    return node


def launch(experiment: str, run_dir: Path, init_from: Path | None, args) -> dict:
    """Train `experiment` into `run_dir` (unless done); its metrics.json and wall minutes."""
    timing = run_dir.parent / f"{run_dir.name}.timing.json"
    if not ((run_dir / "metrics.json").exists() and timing.exists()):
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tsforge.launch", f"experiment={experiment}",
               "trainer.threads=1", f"launcher.nprocs={args.nprocs}",
               f"trainer.seed={args.seed}", f"hydra.run.dir={run_dir}"]  # fmt: skip
        if init_from is not None:
            cmd.append(f"trainer.init_from={init_from}")
        cmd += args.extra
        print("$", " ".join(cmd[1:]), flush=True)
        wall, _cpu = run_checked(cmd, run_dir.parent / f"{run_dir.name}.log")
        write_json(timing, {"wall_s": wall})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"metrics": metrics, "wall_minutes": json.loads(timing.read_text())["wall_s"] / 60}


def zero_shot(pretrained: Path, dataset: str) -> dict | None:
    """The pretrained run's last suite figures on `dataset` (pretrain.py's suite/ folder)."""
    scores = sorted((pretrained.parent / "suite").glob("step_*.json"))
    if not scores:
        return None
    final = json.loads(scores[-1].read_text())
    for d in final["datasets"]:
        if d["data"] == dataset:
            return {"step": int(scores[-1].stem.split("_")[1]), **d}
    return None


def etth1(pretrained: Path, work: Path, args, task: str = "etth1") -> dict:
    with open(RESULTS / "long_horizon.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == "ETTh1" and r["horizon"] == "96"]
    best = min(rows, key=lambda r: float(r["mse"]))
    batch = experiment_value(TASKS["etth1"], "data", "batch_size")
    out = {"task": "ETTh1 H=96", "metric": "test MSE (standardised)",
           "from_scratch": {"model": best["model"], "experiment": best["experiment"],
                            "mse": float(best["mse"]), "mae": float(best["mae"]),
                            "seeds": int(best["seeds"]), "steps": int(best["steps"]),
                            "batch": int(experiment_value("recipe/patchtst", "data",
                                                          "batch_size"))}}  # fmt: skip
    zs = zero_shot(pretrained, "ETTh1")
    if zs:
        out["zero_shot"] = {"mse": zs["test"]["mse"], "mae": zs["test"]["mae"],
                            "pretrain_step": zs["step"]}  # fmt: skip
    runs = {"finetuned": pretrained}
    if task in args.scratch:
        runs["scratch_same_recipe"] = None
    for key, init in runs.items():
        r = launch(TASKS["etth1"], work / f"etth1_{key}", init, args)
        test = r["metrics"]["test"]
        out[key] = {"experiment": TASKS["etth1"], "mse": test["mse"], "mae": test["mae"],
                    "steps": r["metrics"]["steps"], "best_val_step": r["metrics"]["best_val_step"],
                    "batch": int(batch), "wall_minutes": r["wall_minutes"],
                    "init_from": str(init) if init else None}  # fmt: skip
    return out


def m4(pretrained: Path, work: Path, args, task: str = "m4") -> dict:
    with open(RESULTS / "m4_hourly.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["experiment"] == SCRATCH_M4 and r["seeds"] == "1"]  # fmt: skip
    steps = int(experiment_value(SCRATCH_M4, "trainer", "max_steps"))
    out = {"task": "M4 Hourly H=48", "metric": "OWA (M4's)",
           "from_scratch": {"model": "NHITS", "experiment": SCRATCH_M4,
                            "owa": [float(r["owa"]) for r in rows],
                            "smape": [float(r["smape"]) for r in rows],
                            "mase": [float(r["mase"]) for r in rows], "steps": steps,
                            "batch": int(experiment_value(SCRATCH_M4, "data", "batch_size"))}}
    zs = zero_shot(pretrained, "M4-Hourly")
    if zs:
        out["zero_shot"] = {"mase_ratio_to_snaive": zs["relative"]["mase"],
                            "pretrain_step": zs["step"]}  # fmt: skip
    batch = int(experiment_value(TASKS["m4"], "data", "batch_size"))
    runs = {"finetuned": pretrained}
    if task in args.scratch:
        runs["scratch_same_recipe"] = None
    for key, init in runs.items():
        root = work / f"m4_{key}"
        result = root / "m4_hourly.json"
        if not result.exists():
            cmd = [sys.executable, str(HERE / "m4_hourly.py"), "--experiment", TASKS["m4"],
                   "--seeds", str(args.seed), "--runs-root", str(root),
                   "--out", str(root / "m4_hourly.csv"), f"launcher.nprocs={args.nprocs}"]
            if init is not None:
                cmd.append(f"trainer.init_from={init}")
            cmd += args.extra
            print("$", " ".join(cmd[1:]), flush=True)
            root.mkdir(parents=True, exist_ok=True)
            run_checked(cmd, work / f"m4_{key}.log")
        rows = json.loads(result.read_text())["rows"]
        ours = next(r for r in rows if r["method"].startswith("tsforge"))
        metrics = json.loads((Path(ours["run_dir"]) / "metrics.json").read_text())
        out[key] = {"experiment": TASKS["m4"], "owa": ours["owa"], "smape": ours["smape"],
                    "mase": ours["mase"], "steps": metrics["steps"],
                    "best_val_step": metrics["best_val_step"], "batch": batch,
                    "wall_minutes": ours["train_minutes"],
                    "init_from": str(init) if init else None}  # fmt: skip
        out["snaive_owa"] = next(r["owa"] for r in rows if r["method"].startswith("sNaive (c"))
    return out


def verdict(task: dict) -> str:
    ft, ref = task["finetuned"], task["from_scratch"]
    key = "mse" if "mse" in ft else "owa"
    scratch = ref[key] if key == "mse" else min(ref[key])
    half = ref["steps"] / 2
    score_ok = ft[key] <= scratch
    steps_ok = ft["steps"] <= half
    gap = "" if score_ok else f", above by {ft[key] - scratch:.4f}"
    return (f"{'met' if score_ok and steps_ok else 'missed'}: {key.upper()} {ft[key]:.4f} vs "
            f"{scratch:.4f}{gap}; {ft['steps']:,} steps vs {ref['steps']:,} "
            f"({ft['steps'] / ref['steps']:.0%})")


def table(result: dict) -> str:
    lines = ["| task | model | init | steps × batch | test | wall min |",
             "|---|---|---|---|---|---|"]
    for t in result["tasks"].values():
        ref = t["from_scratch"]
        if "mse" in ref:
            fig = lambda r: f"MSE {r['mse']:.4f} / MAE {r['mae']:.4f}"  # noqa: E731
            lines.append(f"| {t['task']} | {ref['model']} (`{ref['experiment']}`, "
                         f"{ref['seeds']} seeds) | scratch | {ref['steps']:,} × {ref['batch']} "
                         f"| {fig(ref)} | |")  # fmt: skip
        else:
            fig = lambda r: f"OWA {r['owa']:.4f} (sMAPE {r['smape']:.3f}, MASE {r['mase']:.3f})"  # noqa: E731
            owas = ", ".join(f"{x:.4f}" for x in ref["owa"])
            lines.append(f"| {t['task']} | {ref['model']} (`{ref['experiment']}`) | scratch "
                         f"| ≤ {ref['steps']:,} × {ref['batch']} | OWA {owas} (seeds) | |")
        if "zero_shot" in t:
            z = t["zero_shot"]
            shown = (f"MSE {z['mse']:.4f} / MAE {z['mae']:.4f}" if "mse" in z
                     else f"MASE ratio to sNaive {z['mase_ratio_to_snaive']:.3f}")  # fmt: skip
            lines.append(f"| {t['task']} | patch_decoder_small | zero-shot | 0 | {shown} | |")
        for key, label in (("finetuned", "pretrained"), ("scratch_same_recipe", "scratch")):
            if key in t:
                r = t[key]
                lines.append(f"| {t['task']} | patch_decoder_small (`{r['experiment']}`) | "
                             f"{label} | {r['steps']:,} × {r['batch']} | {fig(r)} | "
                             f"{r['wall_minutes']:.1f} |")  # fmt: skip
    lines.append("")
    for t in result["tasks"].values():
        lines.append(f"- {t['task']}: fine-tuned at or below the from-scratch figure in at most "
                     f"half its steps: {verdict(t)}")
    lines.append("")
    lines.append(f"Command: `{result['command']}`")
    return "\n".join(lines)


def report(result: dict, json_path: Path) -> None:
    md = table(result)
    json_path.with_suffix(".md").write_text(md + "\n")
    print(md)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", type=Path, default=OUT / "pretrain" / "small" / "run",
                        help="the pretrained run folder (pretrain.py's small model)")
    parser.add_argument("--tasks", default="etth1,m4", help="comma-separated: etth1, m4")
    parser.add_argument("--scratch", default="",
                        help="comma-separated tasks whose recipe is also trained from scratch")
    parser.add_argument("--nprocs", type=int, default=1, help="local DDP ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=OUT / "finetune", help="runs go here")
    parser.add_argument("--json", type=Path, default=None, help="default results/finetune.json")
    parser.add_argument("--report", action="store_true", help="tables from the JSON")
    parser.add_argument("--quick", action="store_true",
                        help="4 steps a run, into out/: does it run?")
    args = parser.parse_args()
    args.extra = ["trainer.max_steps=4", "trainer.val_every_steps=2"] if args.quick else []
    json_path = args.json or (OUT if args.quick else RESULTS) / "finetune.json"
    if args.quick:
        args.work = args.work / "quick"
    if args.report:
        report(json.loads(json_path.read_text()), json_path)
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.scratch = [t.strip() for t in args.scratch.split(",") if t.strip()]
    unknown = [t for t in tasks + args.scratch if t not in TASKS]
    if unknown or not tasks or args.nprocs < 1:
        parser.error(f"--tasks from {', '.join(TASKS)}; --nprocs >= 1")
    if not os.environ.get("TSFORGE_DATA_DIR"):
        print("set TSFORGE_DATA_DIR to the folder holding ETTh1.csv and m4/", file=sys.stderr)
        return 2
    pretrained = args.pretrained.resolve()
    if not (pretrained / "checkpoints").is_dir():
        print(f"--pretrained {pretrained}: no checkpoints/ (run benchmarks/pretrain.py first)",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ.update(child_env())
    work = args.work.resolve()
    run_tasks = {"etth1": etth1, "m4": m4}
    results = {t: run_tasks[t](pretrained, work, args) for t in tasks}
    flags = [f"--scratch {','.join(args.scratch)}"] if args.scratch else []
    flags += ["--quick"] if args.quick else []
    command = " ".join(["TSFORGE_DATA_DIR=... python benchmarks/finetune.py",
                        f"--tasks {','.join(tasks)} --nprocs {args.nprocs}", *flags])
    result = {"command": command, "machine": machine(), "pretrained": str(pretrained),
              "tasks": results}  # fmt: skip
    write_json(json_path, result)
    report(result, json_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
