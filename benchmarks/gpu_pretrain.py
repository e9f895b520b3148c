"""Pretraining throughput on one GPU: the patch decoder in bf16 with FSDP2, windows/s and MFU
against the card's dense bf16 peak, the card recorded. The script to run when a GPU machine
is at hand (one command, about 10 minutes for small and base with the defaults).

    python benchmarks/gpu_pretrain.py                        # small and base, bf16, FSDP2
    python benchmarks/gpu_pretrain.py --sizes base --steps 300 --json /tmp/gpu.json
    python benchmarks/gpu_pretrain.py --quick --device cpu   # 6 tiny steps: does it run?
    python benchmarks/gpu_pretrain.py --report               # the table again, from the JSON

Each size is one fresh `python -m tsforge.launch model=patch_decoder_<size>` on the built-in
synthetic data (`data.split=holdout:24`, no validation, no test split, so nothing but
training is timed), `trainer.strategy=fsdp` on one rank (`fully_shard` per block and the root,
as a multi-GPU run shards them), `trainer.precision=bf16`, `trainer.compile` unless
`--no-compile`, `loss.name=quantile` (9 levels), input 512, horizon 128. The model's FLOPs per
window come from the run (`tsforge.train.flops`: FlopCounterMode on a meta-device copy, 3x the
forward for training); the peak is the card's dense bf16 figure from the run's table
(`peak_flops_source` says which), or `--peak-tflops`. Measured per size:
- windows/s between the train records at step `--warmup` and the last step (start-up,
  compilation and the first steps left out), and MFU = FLOPs per window x windows/s / peak;
- the run's own `mfu` (its step time), the fraction of step time spent waiting for data
  (`perf/data_wait_frac`, the mean over the timed records: near 0 means the loader keeps up),
  and the largest GPU memory allocated at a log record (`mem/gpu_allocated_mb`).
The card: `torch.cuda.get_device_name`, its memory, the driver and CUDA versions
(`nvidia-smi --query-gpu`). Writes results/gpu_pretrain.json (or `--json`) and prints a
table; the target is MFU >= 35% for the base model in bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, REPO, RESULTS, machine, read_records, run_timed, timed_window, write_json

MODELS = {"tiny": "patch_decoder", "small": "patch_decoder_small", "base": "patch_decoder_base",
          "large": "patch_decoder_large"}  # fmt: skip
BATCH = {"tiny": 1024, "small": 512, "base": 256, "large": 64}  # global batch by default
QUANTILES = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]"
TARGET_MFU_BASE = 0.35


def card() -> dict:
    """The GPU as torch and nvidia-smi see it (empty without one)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    out = {"name": torch.cuda.get_device_name(0), "memory_gb": props.total_memory / 2**30,
           "cuda": torch.version.cuda, "count": torch.cuda.device_count()}  # fmt: skip
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
        found = subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)  # fmt: skip
        out["nvidia_smi"] = found.stdout.strip()
    return out


def measure(size: str, args, workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{size}_", dir=workdir))
    cmd = [sys.executable, "-m", "tsforge.launch", f"model={MODELS[size]}",
           "trainer.strategy=fsdp", "launcher.nprocs=1", f"trainer.device={args.device}",
           f"trainer.precision={args.precision}", f"trainer.compile={args.compile}",
           "loss.name=quantile", f"loss.quantiles={QUANTILES}",
           f"data.input_size={args.input_size}", "data.horizon=128", "data.split=holdout:24",
           f"data.batch_size={args.batch[size]}", f"data.num_workers={args.workers}",
           f"trainer.max_steps={args.steps}", f"trainer.log_every_steps={args.log_every}",
           "trainer.val_every_steps=0", "trainer.checkpoint_every_steps=1000000",
           "trainer.checkpoint_every_min=100000", f"hydra.run.dir={run_dir}"]  # fmt: skip
    if args.peak_tflops:
        cmd.append(f"trainer.peak_tflops={args.peak_tflops}")
    log = run_dir.with_suffix(".log")
    print("$", " ".join(cmd[1:]), flush=True)
    code, wall, _ = run_timed(cmd, log)
    if code:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    first, last, between = timed_window(read_records(run_dir), args.warmup)
    final = json.loads((run_dir / "metrics.json").read_text())
    seconds = last["time"] - first["time"]
    rate = (last["step"] - first["step"]) * args.batch[size] / seconds
    per_window, peak = final.get("model_flops_per_window"), final.get("peak_flops")
    waits = [r["perf/data_wait_frac"] for r in between if "perf/data_wait_frac" in r]
    memory = [r["mem/gpu_allocated_mb"] for r in between if "mem/gpu_allocated_mb" in r]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "size": size, "model": MODELS[size], "batch": args.batch[size], "steps": args.steps,
        "run_wall_s": wall, "timed_s": seconds, "windows_per_s": rate,
        "model_flops_per_window": per_window, "peak_flops": peak,
        "peak_flops_source": final.get("peak_flops_source"),
        "mfu": per_window * rate / peak if per_window and peak else None,
        "mfu_run": final.get("mfu"),
        "data_wait_frac": sum(waits) / len(waits) if waits else None,
        "gpu_allocated_gb": max(memory) / 1024 if memory else None,
    }  # fmt: skip


def report(data: dict) -> None:
    c = data.get("card") or {}
    print(f"card: {c.get('name', 'none')} {c.get('nvidia_smi', '')}; {data['settings']}")
    print(f"{'model':<22} {'batch':>6} {'windows/s':>10} {'MFU':>7} {'MFU (run)':>9} "
          f"{'data wait':>9}")  # fmt: skip
    for r in data["runs"]:
        pct = lambda v: f"{100 * v:.1f}%" if v is not None else "–"  # noqa: E731
        print(f"{r['model']:<22} {r['batch']:>6} {r['windows_per_s']:>10,.0f} {pct(r['mfu']):>7} "
              f"{pct(r['mfu_run']):>9} {pct(r['data_wait_frac']):>9}")  # fmt: skip
    base = next((r for r in data["runs"] if r["size"] == "base"), None)
    if base and base["mfu"] is not None:
        verdict = "met" if base["mfu"] >= TARGET_MFU_BASE else \
            f"missed by {100 * (TARGET_MFU_BASE - base['mfu']):.1f} points"  # fmt: skip
        print(f"target: base MFU >= {TARGET_MFU_BASE:.0%} in bf16: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,base",
                        help=f"comma-separated: {', '.join(MODELS)}")  # fmt: skip
    parser.add_argument("--batch", default=None,
                        help="global batch: one value or one per size, in order (default: "
                        + ", ".join(f"{k} {v}" for k, v in BATCH.items()) + ")")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100, help="steps left out of the timing")
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=8, help="data.num_workers")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny, 6 steps: does it run?")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    path = args.json or (OUT if args.quick else RESULTS) / "gpu_pretrain.json"
    if args.report:
        report(json.loads(path.read_text()))
        return 0
    if args.quick:
        args.sizes, args.batch, args.steps, args.warmup, args.workers = "tiny", "8", 6, 2, 0
        args.input_size, args.compile = 256, False
    args.log_every = 1 if args.quick else 10
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    batches = ([int(b) for b in args.batch.split(",")] if args.batch
               else [BATCH.get(s, 0) for s in sizes])  # fmt: skip
    if any(s not in MODELS for s in sizes) or len(batches) not in (1, len(sizes)):
        parser.error(f"--sizes from {', '.join(MODELS)}; --batch: one value or one per size")
    if not 0 < args.warmup < args.steps or args.warmup % args.log_every:
        parser.error(f"--warmup: a multiple of {args.log_every} steps (the log records) below "
                     "--steps")
    args.batch = dict(zip(sizes, batches * len(sizes) if len(batches) == 1 else batches))
    found = card()
    if args.device == "cuda" and not found:
        print("no CUDA device: run on a GPU machine, or --device cpu for a dry run",
              file=sys.stderr)  # fmt: skip
        return 1
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                             os.environ.get("PYTHONPATH")]))
    workdir = Path(tempfile.mkdtemp(prefix="gpu_pretrain_"))
    settings = (f"{args.precision}, FSDP2 on 1 rank, compile={args.compile}, input "
                f"{args.input_size}, horizon 128, 9 quantiles, {args.steps} steps "
                f"({args.warmup} warm-up)")  # fmt: skip
    try:
        runs = [measure(size, args, workdir) for size in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data = {"machine": machine(), "card": found, "settings": settings, "runs": runs,
            "command": "python benchmarks/gpu_pretrain.py " + " ".join(argv or sys.argv[1:])}
    write_json(path, data)
    report(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
