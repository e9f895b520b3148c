"""Sharded training on CPU: DDP against FSDP2 at 2 ranks, over PatchDecoder sizes.

    python benchmarks/sharding.py                          # tiny, small, base; 1 round each
    python benchmarks/sharding.py --sizes tiny,small,base,large --pairs 2
    python benchmarks/sharding.py --sizes base --batch 32 --steps 30 --warmup 10
    python benchmarks/sharding.py --quick --sizes tiny     # a few steps: does it run?
    python benchmarks/sharding.py --kinds ddp2 --keep      # redo one kind, keep the others
    python benchmarks/sharding.py --sizes tiny --batch 4096 --steps 40 --warmup 5 --kinds ddp1,ddp2
    python benchmarks/sharding.py --report                 # the table again, from the JSON

For each model size (`model=patch_decoder`, `_small`, `_base`, `_large`: ~1M, 10M, 100M, 1B
parameters) four runs (`--kinds`), each a fresh `python -m tsforge.launch` on the built-in
synthetic dataset (input_size `--input-size`, horizon 24, `data.split=holdout:24`: the last
24 steps of each series held out and no test split, so no test evaluation at the end;
validation off, `trainer.threads=1`) at the same global batch: `ddp1`, 1 rank (one plain
process: the baseline); `ddp2`, 2 ranks with `trainer.strategy=ddp`; `fsdp2`, 2 ranks with
`trainer.strategy=fsdp` (which on CPU fixes glibc's mmap threshold at 4 MiB, so freed
memory goes back: tsforge.train.allocator); `fsdp-heap2`, the same with glibc's default
(`trainer.malloc_mmap_threshold_kb=0`). Local processes over gloo, each taking half of every
global batch; their order rotates from round to round so that other load on the machine
falls on all alike. `--batch`, `--steps` and `--warmup` take
one value or one per size (comma-separated, in `--sizes` order); the defaults are sized so
that a base run takes about two minutes on this machine.

Measured per run:
- windows/s: steps x global batch over the wall-clock time between the `time` stamps of the
  train records in RUN_DIR/metrics.jsonl at step `--warmup` and at the last step (start-up,
  the first steps, the test evaluation and the final checkpoint are left out), and per rank;
- MFU: the run's own `mfu` from metrics.json (the training loop's step time against the
  measured fp32 matmul peak of one thread), and the same FLOPs over the wall-clock windows/s;
- peak RSS per rank: the rank processes' VmHWM (/proc/PID/status), read every `--sample-s`
  (1 s) while the run lives (the launcher itself for 1 rank; its spawned children for 2), the
  largest over the ranks; also the whole run's `ru_maxrss` from os.wait4 (the largest process);
- CPU seconds of the process tree over the timed steps, and the load average after each run;
  the sampling's own CPU share (`sampler_cpu_frac`): with both cores busy it comes out of
  the 2-rank runs' time, not the baseline's (about 0.1% of a core at 1 s).

A run is not started when its estimated memory (`estimate_gb`: fp32 weights, gradients and
AdamW's two moments, DDP's gradient buckets, FSDP2's shards and one gathered block, 0.6 GB of
torch per process) is above `--mem-limit-gb` or above what the machine has available less
3 GB for its other users; it is recorded as skipped with that arithmetic. The 1-rank baseline
of a size runs only when one of its 2-rank runs fits (alone it compares with nothing). A run
that lasts longer than `--max-run-s` is stopped (SIGKILL to its process group) and recorded
as skipped.

Summary per size: 2-rank speed-up (2-rank windows/s / 1-rank windows/s, median of rounds)
for each kind, the FSDP2/DDP ratio of peak RSS per rank (and fsdp-heap's). Targets (ISSUE
13): speed-up >= 1.8 with the better strategy; FSDP2's peak RSS per rank <= 60% of DDP's at
the largest size both run. JSON into benchmarks/results/sharding.json (`--json`), plot
sharding.png beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import machine, read_records, result_path, timed_window, tree_cpu_seconds, write_json

REPO = Path(__file__).resolve().parents[1]
MODELS = {"tiny": "patch_decoder", "small": "patch_decoder_small",
          "base": "patch_decoder_base", "large": "patch_decoder_large"}  # fmt: skip
# global batch, steps, warmup steps per size: a base run ~2 min on 1 thread a rank
BUDGET = {"tiny": (1024, 110, 10), "small": (128, 45, 5), "base": (32, 25, 5),
          "large": (4, 8, 3)}  # fmt: skip
# (kind, ranks); a kind is a strategy and its settings: fsdp-heap is FSDP2 under glibc's
# default allocator, which keeps freed memory (trainer.malloc_mmap_threshold_kb=0)
RUNS = (("ddp", 1), ("ddp", 2), ("fsdp", 2), ("fsdp-heap", 2))
KIND_OVERRIDES = {"ddp": ["trainer.strategy=ddp"], "fsdp": ["trainer.strategy=fsdp"],
                  "fsdp-heap": ["trainer.strategy=fsdp", "trainer.malloc_mmap_threshold_kb=0"]}
KIND_NAMES = tuple(f"{k}{r}" for k, r in RUNS)  # as --kinds and the JSON's summary name them
LABELS = {"ddp1": "1 rank", "ddp2": "DDP, 2 ranks", "fsdp2": "FSDP2, 2 ranks",
          "fsdp-heap2": "FSDP2, glibc default heap"}  # fmt: skip
TARGET_SPEEDUP = 1.8
TARGET_RSS_RATIO = 0.60
GB = 1e9


def model_params(size: str) -> tuple[int, int]:
    """(parameters of the transformer blocks, of the largest block) from the size's config:
    per layer 4 d^2 (attention) + 2 d d_ff (MLP); embeddings and head are small beside them."""
    cfg = yaml.safe_load((REPO / "conf" / "model" / f"{MODELS[size]}.yaml").read_text())
    d, layers, ff = cfg["d_model"], cfg["n_layers"], cfg["d_ff"]
    block = 4 * d * d + 2 * d * ff
    return layers * block, block


def estimate_gb(size: str, strategy: str, ranks: int) -> dict:
    """Estimated peak memory of a run over all its processes, with the arithmetic."""
    params, block = model_params(size)
    state = 16 * params  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq: 4 x 4 bytes
    torch_gb = 0.6  # a process with torch, the loader and the run's bookkeeping
    if strategy.startswith("fsdp") and ranks > 1:
        # state split over the ranks; each rank gathers one block's weights and gradients
        total = state + ranks * 2 * 4 * block
        how = (f"16 B x {params / 1e6:,.0f}M params split over {ranks} ranks + a gathered "
               f"block's weights and gradients per rank + {torch_gb} GB per process")  # fmt: skip
    else:
        # a full replica per rank; DDP keeps its gradient buckets besides the gradients
        total = ranks * (state + (4 * params if ranks > 1 else 0))
        how = (f"{ranks} x ({'20' if ranks > 1 else '16'} B x {params / 1e6:,.0f}M params: "
               f"weights, grads, Adam's 2 moments{', DDP buckets' if ranks > 1 else ''}) + "
               f"{torch_gb} GB per process")  # fmt: skip
    return {"gb": round(total / GB + ranks * torch_gb, 1), "how": how}


def mem_available_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return None


def rank_pids(launcher: int, ranks: int) -> list[int]:
    """The processes that train: the launcher itself for 1 rank, else its spawned children
    (torch.multiprocessing's spawn; not the resource tracker)."""
    if ranks == 1:
        return [launcher]
    pids = []
    try:
        for task in Path(f"/proc/{launcher}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def vm_hwm_mb(pid: int) -> float | None:
    """A process's peak resident set (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure(size: str, strategy: str, ranks: int, batch: int, steps: int, warmup: int,
            input_size: int, max_run_s: float, workdir: Path, sample_s: float) -> dict:  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix=f"{size}_{strategy}{ranks}_", dir=workdir))
    cmd = [sys.executable, "-m", "tsforge.launch", f"model={MODELS[size]}",
           *KIND_OVERRIDES[strategy], f"launcher.nprocs={ranks}", "trainer.threads=1",
           f"trainer.max_steps={steps}", f"data.batch_size={batch}",
           f"data.input_size={input_size}", "data.split=holdout:24", "trainer.log_every_steps=1",
           "trainer.val_every_steps=0", "trainer.checkpoint_every_steps=1000000",
           "trainer.checkpoint_every_min=100000", f"hydra.run.dir={run_dir}"]  # fmt: skip
    log = run_dir.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    samples, hwm = [], {}  # (wall time, tree CPU seconds); peak RSS per rank pid
    start = time.time()
    own_cpu = time.process_time()  # the sampling's own cost: on 2 cores it takes from a rank
    killed = False
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for rank_pid in rank_pids(proc.pid, ranks):
                mb = vm_hwm_mb(rank_pid)
                if mb is not None:
                    hwm[rank_pid] = max(mb, hwm.get(rank_pid, 0.0))
            cpu = tree_cpu_seconds(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            if not killed and time.time() - start > max_run_s:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's session: its ranks too
                killed = True
            time.sleep(sample_s)
    wall = time.time() - start
    own_cpu = time.process_time() - own_cpu
    base = {"size": size, "strategy": strategy, "ranks": ranks, "global_batch": batch,
            "run_wall_s": wall, "run_dir_log": str(log),
            "sampler_cpu_frac": own_cpu / wall}  # fmt: skip
    if killed:
        return {**base, "skipped": f"stopped after {max_run_s:.0f} s (--max-run-s)"}
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    first, last, _ = timed_window(read_records(run_dir), warmup)
    final = json.loads((run_dir / "metrics.json").read_text())
    steps_timed = last["step"] - first["step"]
    seconds = last["time"] - first["time"]
    rate = steps_timed * batch / seconds
    found = re.search(r"model: ([\d,]+) parameters", log.read_text())
    per_window, peak = final.get("model_flops_per_window"), final.get("peak_flops")
    result = {
        **base,
        "params": int(found.group(1).replace(",", "")) if found else None,
        "windows_per_s": rate,
        "windows_per_s_per_rank": rate / ranks,
        "steps_timed": steps_timed,
        "timed_s": seconds,
        "mfu": final.get("mfu"),
        "mfu_wall": per_window * rate / ranks / peak if per_window and peak else None,
        "loop_windows_per_s": final.get("train_windows_per_s"),
        "model_flops_per_window": per_window,
        "peak_flops_per_rank": peak,
        "peak_rss_mb_per_rank": sorted(hwm.values()),
        "peak_rss_mb": max(hwm.values()) if len(hwm) == ranks else None,
        "run_maxrss_mb": usage.ru_maxrss / 1024,  # the largest process of the run (Linux: KiB)
        "run_cpu_s": usage.ru_utime + usage.ru_stime,
    }
    if len(samples) > 2:
        import numpy as np

        t_W, c_W = np.array(samples).T
        cpu_s = float(np.interp(last["time"], t_W, c_W) - np.interp(first["time"], t_W, c_W))
        result["timed_cpu_s"] = cpu_s
        result["cores_busy"] = cpu_s / seconds
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of the big models are GBs
    return result


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], sizes: list[str]) -> dict:
    """Per size: medians per run kind, the 2-rank speed-ups and the FSDP2/DDP RSS ratio."""
    out = {}
    for size in sizes:
        kinds = {}
        for strategy, ranks in RUNS:
            mine = [r for r in runs if r["size"] == size and r["strategy"] == strategy
                    and r["ranks"] == ranks and "windows_per_s" in r]  # fmt: skip
            if mine:
                kinds[f"{strategy}{ranks}"] = {
                    k: _median(mine, k) for k in ("windows_per_s", "windows_per_s_per_rank",
                                                 "mfu", "mfu_wall", "peak_rss_mb", "params")
                }  # fmt: skip
        one = kinds.get("ddp1", {}).get("windows_per_s")
        row = {"runs": kinds}
        for kind in ("ddp2", "fsdp2", "fsdp-heap2"):
            if one and kind in kinds:
                row[f"speedup_{kind}"] = kinds[kind]["windows_per_s"] / one
        if "ddp2" in kinds and "fsdp2" in kinds:
            ddp, fsdp = kinds["ddp2"]["peak_rss_mb"], kinds["fsdp2"]["peak_rss_mb"]
            if ddp and fsdp:
                row["rss_ratio_fsdp_ddp"] = fsdp / ddp
            heap = kinds.get("fsdp-heap2", {}).get("peak_rss_mb")
            if ddp and heap:
                row["rss_ratio_fsdp_heap_ddp"] = heap / ddp
        out[size] = row
    return out


def targets(summary: dict, sizes: list[str]) -> dict:
    speedups = [(v, size, k[len("speedup_"):]) for size in sizes
                for k, v in summary.get(size, {}).items() if k.startswith("speedup_")]  # fmt: skip
    both = [s for s in sizes if "rss_ratio_fsdp_ddp" in summary.get(s, {})]
    out = {"speedup_target": TARGET_SPEEDUP, "rss_ratio_target": TARGET_RSS_RATIO}
    if speedups:
        best, size, strategy = max(speedups)
        out |= {"best_speedup": best, "best_speedup_at": f"{size}, {strategy}",
                "speedup_met": best >= TARGET_SPEEDUP}
    if both:
        ratio = summary[both[-1]]["rss_ratio_fsdp_ddp"]
        out |= {"rss_ratio_at_largest": ratio, "largest_size_both_ran": both[-1],
                "rss_ratio_met": ratio <= TARGET_RSS_RATIO}
    return out


def report(data: dict) -> None:
    print(f"\n{'size':<7}{'params':>8}{'run':>12}{'win/s':>9}{'/rank':>9}{'MFU':>7}"
          f"{'MFU wall':>9}{'RSS/rank MB':>12}{'x 1 rank':>9}")  # fmt: skip
    for size, row in data["summary"].items():
        for kind, k in row["runs"].items():
            sp = row.get(f"speedup_{kind}")
            mfu, mfu_wall = k.get("mfu"), k.get("mfu_wall")
            print(f"{size:<7}{(k['params'] or 0) / 1e6:>7.1f}M{kind:>12}{k['windows_per_s']:>9,.1f}"
                  f"{k['windows_per_s_per_rank']:>9,.1f}"
                  f"{100 * mfu if mfu else float('nan'):>6.1f}%"
                  f"{100 * mfu_wall if mfu_wall else float('nan'):>8.1f}%"
                  f"{k['peak_rss_mb'] or float('nan'):>12,.0f}"
                  + (f"{sp:>9.2f}" if sp else ""))  # fmt: skip
        if "rss_ratio_fsdp_ddp" in row:
            print(f"{size:<7}FSDP2 / DDP peak RSS per rank: {row['rss_ratio_fsdp_ddp']:.0%}"
                  + (f" (glibc default heap: {row['rss_ratio_fsdp_heap_ddp']:.0%})"
                     if "rss_ratio_fsdp_heap_ddp" in row else ""))  # fmt: skip
    for skip in data.get("skipped", []):
        print(f"skipped: {skip['size']} {skip['strategy']} x{skip['ranks']}: {skip['why']}")
    t = data["targets"]
    if "best_speedup" in t:
        print(f"best 2-rank speed-up {t['best_speedup']:.2f}x ({t['best_speedup_at']}); target "
              f">= {TARGET_SPEEDUP}x: {'met' if t['speedup_met'] else 'NOT met'}")  # fmt: skip
    if "rss_ratio_at_largest" in t:
        print(f"FSDP2/DDP peak RSS per rank at {t['largest_size_both_ran']}: "
              f"{t['rss_ratio_at_largest']:.0%}; target <= {TARGET_RSS_RATIO:.0%}: "
              f"{'met' if t['rss_ratio_met'] else 'NOT met'}")  # fmt: skip
    load = data["load_avg_1min"]
    print(f"load average (1 min) before/after the runs: {load['min']:.1f}-{load['max']:.1f}")


def plot(data: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s, row in data["summary"].items() if row["runs"]]  # skipped sizes: a note
    kinds = KIND_NAMES
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(sizes))]
        runs = [data["summary"][s]["runs"].get(kind, {}) for s in sizes]
        for ax, key in zip(axes, ("windows_per_s", "peak_rss_mb"), strict=True):
            ax.bar(xs, [r.get(key) or 0 for r in runs], width, label=LABELS[kind])
    for ax, title in zip(axes, ("windows/s (log scale)", "peak RSS per rank, MB (log scale)"),
                         strict=True):  # fmt: skip
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("PatchDecoder on CPU, gloo, 1 thread per rank (median of rounds)")
    unrun = sorted({x["size"] for x in data.get("skipped", [])} - set(sizes))
    if unrun:
        fig.text(0.01, 0.01, f"not run: {', '.join(unrun)} (see the JSON's skipped)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def per_size(parser, text: str, sizes: list[str], index: int) -> dict[str, int]:
    """One value for every size, or one per size; the default from BUDGET."""
    if text is None:
        return {s: BUDGET[s][index] for s in sizes}
    values = [int(x) for x in text.split(",")]
    if len(values) == 1:
        values *= len(sizes)
    if len(values) != len(sizes):
        parser.error(f"give one value or one per size ({len(sizes)}): {text}")
    return dict(zip(sizes, values, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="tiny,small,base", help="of " + ",".join(MODELS))
    p.add_argument("--batch", help="global batch: one, or one per size")
    p.add_argument("--steps", help="training steps of each run: one, or one per size")
    p.add_argument("--warmup", help="steps left out of the timing: one, or one per size")
    p.add_argument("--pairs", type=int, default=1, help="rounds of all the kinds")
    p.add_argument("--kinds", default=",".join(KIND_NAMES),
                   help="which runs, of " + ",".join(KIND_NAMES))
    p.add_argument("--keep", action="store_true",
                   help="keep the JSON's runs of the other kinds (their commands recorded)")
    p.add_argument("--input-size", type=int, default=256, help="look-back (8 patches of 32)")
    p.add_argument("--mem-limit-gb", type=float, default=18.0,
                   help="runs estimated above this are skipped")  # fmt: skip
    p.add_argument("--sample-s", type=float, default=1.0,
                   help="seconds between readings of the ranks' VmHWM and CPU time")
    p.add_argument("--max-run-s", type=float, default=300.0, help="a run past this is stopped")
    p.add_argument("--quick", action="store_true", help="1 round of 6 steps: does it run?")
    p.add_argument("--json", type=Path, help="default: benchmarks/results/sharding.json")
    p.add_argument("--report", action="store_true", help="print the table of the JSON and plot")
    args = p.parse_args(argv)
    json_path = result_path("sharding", args.json, args.quick)
    if args.report:
        data = json.loads(json_path.read_text())
        report(data)
        plot(data, json_path.with_suffix(".png"))
        return 0
    sizes = args.sizes.split(",")
    if bad := [s for s in sizes if s not in MODELS]:
        p.error(f"--sizes: unknown {','.join(bad)} (of {','.join(MODELS)})")
    batch = per_size(p, args.batch, sizes, 0)
    steps = per_size(p, args.steps, sizes, 1)
    warmup = per_size(p, args.warmup, sizes, 2)
    if args.quick:
        args.pairs = 1
        steps, warmup = dict.fromkeys(sizes, 6), dict.fromkeys(sizes, 2)
    wanted = args.kinds.split(",")
    if unknown := set(wanted) - set(KIND_NAMES):
        p.error(f"--kinds: unknown {','.join(sorted(unknown))}")
    kinds = [run for run, name in zip(RUNS, KIND_NAMES, strict=True) if name in wanted]
    for s in sizes:
        if batch[s] % 2 or not 0 < warmup[s] < steps[s]:
            p.error(f"{s}: the batch must be even (2 ranks) and 0 < warmup < steps")

    before = machine()
    print(f"{before['cpu']}, {before['cores']} cores, torch {before['torch']}, "
          f"load average {before['load_avg_1_5_15']}", flush=True)  # fmt: skip
    runs: list[dict] = []
    skipped: list[dict] = []
    loads = [before["load_avg_1_5_15"][0]]
    with tempfile.TemporaryDirectory(prefix="sharding_") as tmp:
        for pair in range(args.pairs):
            for size in sizes:
                order = kinds[pair % len(kinds):] + kinds[:pair % len(kinds)]
                for strategy, ranks in order:
                    est = estimate_gb(size, strategy, ranks)
                    free = mem_available_gb()
                    room = min(args.mem_limit_gb, free - 3 if free else args.mem_limit_gb)
                    two = min(estimate_gb(size, k, r)["gb"] for k, r in RUNS if r > 1)
                    if ranks == 1 and two > room and est["gb"] <= room:
                        if pair == 0:
                            why = (f"no 2-rank run of {size} fits (the smaller estimated at "
                                   f"{two} GB > {room:.1f} GB): nothing to compare with")
                            skipped.append({"size": size, "strategy": strategy, "ranks": ranks,
                                            "estimate_gb": est["gb"], "why": why})  # fmt: skip
                            print(f"skipped {size} {strategy} x{ranks}: {why}", flush=True)
                        continue
                    if est["gb"] > room:
                        why = (f"estimated {est['gb']} GB ({est['how']}) > {room:.1f} GB "
                               f"(--mem-limit-gb {args.mem_limit_gb}, available "
                               f"{free or float('nan'):.1f} GB less 3)")  # fmt: skip
                        if pair == 0:
                            skipped.append({"size": size, "strategy": strategy, "ranks": ranks,
                                            "estimate_gb": est["gb"], "why": why})  # fmt: skip
                            print(f"skipped {size} {strategy} x{ranks}: {why}", flush=True)
                        continue
                    load_before = os.getloadavg()[0]
                    r = measure(size, strategy, ranks, batch[size], steps[size], warmup[size],
                                args.input_size, args.max_run_s, Path(tmp),
                                args.sample_s)  # fmt: skip
                    loads += [load_before, os.getloadavg()[0]]
                    r |= {"pair": pair, "estimate_gb": est["gb"], "load_avg_1min_before":
                          load_before, "load_avg_1min_after": loads[-1]}  # fmt: skip
                    if "skipped" in r:
                        skipped.append({**r, "why": r["skipped"]})
                        print(f"skipped {size} {strategy} x{ranks}: {r['skipped']}", flush=True)
                        continue
                    runs.append(r)
                    mfu = r["mfu"]
                    print(f"round {pair} {size:<6}{strategy} x{ranks} {r['windows_per_s']:>9,.1f} "
                          f"windows/s  MFU {100 * mfu if mfu else float('nan'):.1f}%  peak RSS "
                          f"per rank {r['peak_rss_mb'] or float('nan'):,.0f} MB  load "
                          f"{load_before:.1f} -> {loads[-1]:.1f}", flush=True)  # fmt: skip
    command = " ".join(["python", "benchmarks/sharding.py", *(argv or sys.argv[1:])])
    commands = [command]
    if args.keep and json_path.exists():  # the other kinds' runs of an earlier command
        old = json.loads(json_path.read_text())
        ran = {f"{k}{r}" for k, r in kinds}
        runs += [r for r in old["runs"] if f"{r['strategy']}{r['ranks']}" not in ran
                 and r["size"] in sizes]  # fmt: skip
        skipped += [x for x in old.get("skipped", []) if f"{x['strategy']}{x['ranks']}"
                    not in ran and x["size"] in sizes]  # fmt: skip
        commands = [*old.get("commands", [old["command"]]), command]
    summary = summarize(runs, sizes)
    data = {
        "benchmark": "sharding",
        "command": command,
        "commands": commands,
        "settings": {"data": "synthetic (built in)", "input_size": args.input_size,
                     "horizon": 24, "threads_per_rank": 1, "backend": "gloo",
                     "batch": batch, "steps": steps, "warmup_steps": warmup,
                     "pairs": args.pairs, "models": {s: MODELS[s] for s in sizes},
                     "estimates_gb": {f"{s} {k}{r}": estimate_gb(s, k, r)["gb"]
                                      for s in sizes for k, r in RUNS}},  # fmt: skip
        "machine": before,
        "load_avg_1min": {"min": min(loads), "max": max(loads), "samples": loads},
        "load_avg_after": list(os.getloadavg()),
        "runs": runs,
        "skipped": skipped,
        "summary": summary,
        "targets": targets(summary, sizes),
    }
    report(data)
    write_json(json_path, data)
    plot(data, json_path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
