"""The window loader on a store of a million series: throughput, memory, first-batch latency.

    python benchmarks/loader_scale.py                  # 1,000,000 and 100,000 series x 300 rows
    python benchmarks/loader_scale.py --quick          # 100,000 and 10,000 series: does it run?
    python benchmarks/loader_scale.py --series 2000000 --dir /big/tmp --keep
    python benchmarks/loader_scale.py --json out.json  # default: results/loader_scale.json

Builds two univariate stores with `StoreWriter` (random walks, `--length` rows per series,
float32, the default chunking and Blosc lz4 codec): the big one (`--series`) and one of a tenth
of the series. Each build runs in a child process; reported: seconds, rows/s, peak RSS of the
builder, and the store's size on disk (allocated blocks) against its raw float32 size. The
stores go in a temporary folder under `--dir` (default: the system's temporary folder) and are
deleted at the end unless `--keep`; an existing store there with the same shape is reused
(`--keep` then a second run skips the builds).

Then, for each store and for `num_workers` 0, 1 and 2, a fresh child process reads univariate
windows L=96 + H=96 in global batches of 1,024, epoch mode (exhaustive, shuffled in groups of
16 chunks), per-window standard scaling, one torch thread, a 16 MiB chunk cache per process
(`cache_mb=16`: it is full after about 2 shuffle groups, ~1,500 batches, so that the memory
figures after N and 10 N batches compare the same steady state):

- first-batch latency: wall time from `Store(path)` and `WindowLoader(...)` to the first batch
  in hand (worker start-up included), and its parts;
- windows/s: from batch N to batch 10 N (default N = 2,000, so 18,000 batches, 18.4 M windows);
- memory: resident set (VmRSS) of the main process and of each worker process after N and after
  10 N batches, their peak (VmHWM), and each worker's private memory (Private_Clean +
  Private_Dirty from /proc/PID/smaps_rollup: what the worker holds beyond the pages it shares
  with the main process it was forked from). Memory must not grow from N to 10 N batches nor
  with the number of windows beyond the loader's O(n_series) arrays (`o_n_series_mb`: the
  store's `indptr` and the window index's per-series arrays), which grow 10x from the small
  store to the big one, as their series do.

On a machine shared with other work, windows/s (and most of all the worker runs) move with
the neighbours' load; the load average is recorded before and after each measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, result_path, write_json

L, H, BATCH = 96, 96, 1024
CACHE_MB = 16
WORKERS = (0, 1, 2)


def endless(loader):
    """Batches without end, epoch after epoch."""
    while True:
        yield from loader


# -- children ---------------------------------------------------------------------------
def build(path: Path, n_series: int, length: int, seed: int = 0) -> dict:
    """Write the store (in this child); the parent reads its peak RSS from os.wait4."""
    from tsforge.data.store import ColumnRoles, StoreWriter

    rng = np.random.default_rng(seed)
    block = 1000  # series drawn per numpy call; the writer still takes them one by one
    t0 = time.perf_counter()
    with StoreWriter(path, roles=ColumnRoles(target=["y"]), freq="h", overwrite=True) as w:
        for b in range(0, n_series, block):
            k = min(block, n_series - b)
            walks = np.cumsum(rng.standard_normal((k, length), dtype=np.float32), axis=1)
            walks += 100.0
            for i in range(k):
                w.add_series(f"s{b + i}", 0, walks[i])
        added = time.perf_counter()
        store = w.commit()
    done = time.perf_counter()
    return {"build_s": done - t0, "commit_s": done - added, "rows": store.n_timesteps,
            "chunk_rows": store.chunk_rows, "fingerprint": store.fingerprint}  # fmt: skip


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def private_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith(("Private_Clean:", "Private_Dirty:")))  # fmt: skip


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return sorted(out)


def memory() -> dict:
    """RSS of this process and of its worker processes (MiB)."""
    mb = 1 / 1024
    me = os.getpid()
    workers = children(me)
    return {
        "main_rss_mb": status_kb(me, "VmRSS") * mb,
        "main_private_mb": (private_kb(me) or 0) * mb,
        "worker_rss_mb": [(status_kb(p, "VmRSS") or 0) * mb for p in workers],
        "worker_private_mb": [(private_kb(p) or 0) * mb for p in workers],
        "worker_peak_rss_mb": [(status_kb(p, "VmHWM") or 0) * mb for p in workers],
    }


def measure(path: Path, workers: int, n_batches: int) -> dict:
    """First batch, windows/s from batch N to 10 N, memory at N and 10 N (in this child)."""
    import torch

    from tsforge.data.loader import WindowLoader, WindowSpec
    from tsforge.data.store import Store

    torch.set_num_threads(1)
    rss_start = status_kb(os.getpid(), "VmRSS") / 1024
    t0 = time.perf_counter()
    store = Store(path)
    t_open = time.perf_counter()
    loader = WindowLoader(store, WindowSpec(L, H), global_batch_size=BATCH, seed=0,
                          num_workers=workers, cache_mb=CACHE_MB)  # fmt: skip
    t_made = time.perf_counter()

    it = endless(loader)
    next(it)
    t_first = time.perf_counter()
    o_n = store.indptr.nbytes + sum(
        a.nbytes for a in (loader.index.t_first, loader.index.counts, loader.index.offsets))
    for _ in range(n_batches - 1):
        next(it)
    at_n = memory()
    windows, ta = 0, time.perf_counter()
    for _ in range(9 * n_batches):
        windows += len(next(it)["t"])
    tb = time.perf_counter()
    at_10n = memory()
    out = {
        "workers": workers,
        "n_series": store.n_series,
        "n_windows": loader.n_windows,
        "first_batch_s": t_first - t0,
        "store_open_s": t_open - t0,
        "loader_init_s": t_made - t_open,
        "first_batch_after_init_s": t_first - t_made,
        "windows_per_s": windows / (tb - ta),
        "windows_timed": windows,
        "batches_at": [n_batches, 10 * n_batches],
        "o_n_series_mb": o_n / 2**20,
        "rss_before_store_mb": rss_start,
        "memory_at_n": at_n,
        "memory_at_10n": at_10n,
        "main_peak_rss_mb": status_kb(os.getpid(), "VmHWM") / 1024,
    }
    del it, loader  # stops the workers
    return out


# -- the parent -------------------------------------------------------------------------
def run_child(args: list[str]) -> tuple[dict, float]:
    """(the child's JSON, its peak RSS in MiB from os.wait4)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"child {' '.join(args)} failed")
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated bytes on disk, apparent bytes) of a folder."""
    used = apparent = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            used += st.st_blocks * 512
            apparent += st.st_size
    return used, apparent


def get_store(root: Path, n_series: int, length: int) -> dict:
    path = root / f"series{n_series}_len{length}.zarr"
    info: dict = {"path": str(path), "n_series": n_series, "length": length}
    if path.exists():
        info["reused"] = True
    else:
        print(f"building {n_series:,} series x {length} rows ...", flush=True)
        load = os.getloadavg()[0]
        built, peak = run_child(["--child", "build", str(path), str(n_series), str(length)])
        info.update(built, builder_peak_rss_mb=peak, load_avg_1min_before=load,
                    rows_per_s=built["rows"] / built["build_s"])
    used, apparent = disk_bytes(path)
    info.update(disk_mb=used / 2**20, apparent_mb=apparent / 2**20,
                raw_float32_mb=n_series * length * 4 / 2**20)
    return info


def fmt_mem(m: dict) -> str:
    workers = ", ".join(f"{r:.0f}" for r in m["worker_rss_mb"]) or "-"
    private = ", ".join(f"{r:.0f}" for r in m["worker_private_mb"]) or "-"
    return f"main {m['main_rss_mb']:.0f}, workers {workers} (private {private})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100,000 series, fewer batches")
    p.add_argument("--series", type=int, default=1_000_000, help="series of the big store")
    p.add_argument("--length", type=int, default=300, help="rows of every series")
    p.add_argument("--batches", type=int, default=2000, help="N: memory at N and 10 N batches")
    p.add_argument("--dir", type=Path, help="where to build the stores (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the stores (and reuse them)")
    p.add_argument("--json", type=Path,
                   help="where to write the figures "
                   "(default: benchmarks/results/loader_scale.json)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, path, *rest = args.child
        if kind == "build":
            print(json.dumps(build(Path(path), int(rest[0]), int(rest[1]))))
        else:
            print(json.dumps(measure(Path(path), int(rest[0]), int(rest[1]))))
        return 0
    if args.quick:
        args.series, args.batches = 100_000, 300
    if args.length < L + H:
        p.error(f"--length must be at least L + H = {L + H}")

    before = machine()
    print(f"{before['cpu']}, {before['cores']} cores, torch {before['torch']}, "
          f"load average {before['load_avg_1_5_15']}", flush=True)
    if args.keep:
        root = Path(args.dir or tempfile.gettempdir()) / "tsforge-loader-scale"
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(dir=args.dir, prefix="tsforge-loader-scale-"))
    loads = [before["load_avg_1_5_15"][0]]
    try:
        stores = [get_store(root, args.series, args.length),
                  get_store(root, args.series // 10, args.length)]
        for s in stores:
            if "build_s" in s:
                print(f"  {s['n_series']:>9,} series: built in {s['build_s']:.1f} s "
                      f"({s['rows_per_s'] / 1e6:.1f} M rows/s, builder peak RSS "
                      f"{s['builder_peak_rss_mb']:.0f} MiB), {s['disk_mb']:.0f} MiB on disk "
                      f"(raw float32 {s['raw_float32_mb']:.0f} MiB)", flush=True)
        runs = []
        for s in stores:
            for workers in WORKERS:
                result, peak = run_child(["--child", "measure", s["path"], str(workers),
                                          str(args.batches)])  # fmt: skip
                loads.append(os.getloadavg()[0])
                runs.append({**result, "main_peak_rss_wait4_mb": peak,
                             "load_avg_1min_after": loads[-1]})
                a, b = result["memory_at_n"], result["memory_at_10n"]
                print(f"{s['n_series']:>9,} series, {workers} workers: "
                      f"{result['windows_per_s']:>11,.0f} windows/s, first batch "
                      f"{result['first_batch_s'] * 1000:.0f} ms; RSS MiB at N: {fmt_mem(a)}; "
                      f"at 10 N: {fmt_mem(b)}; load {loads[-1]:.1f}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    out = {
        "benchmark": "loader_scale",
        "command": " ".join(["python", "benchmarks/loader_scale.py", *(argv or sys.argv[1:])]),
        "settings": {"input_size": L, "horizon": H, "global_batch_size": BATCH,
                     "mode": "epoch", "scaling": "standard (per window)", "cache_mb": CACHE_MB,
                     "torch_threads": 1, "batches_n": args.batches},
        "machine": before,
        "load_avg_1min": {"min": min(loads), "max": max(loads), "samples": loads},
        "load_avg_after": list(os.getloadavg()),
        "stores": stores,
        "runs": runs,
    }
    print(f"\n{'series':>10}{'workers':>8}{'windows/s':>12}{'1st batch':>11}"
          f"{'main RSS N→10N':>18}{'worker RSS N→10N (peak)':>32}")
    for r in runs:
        a, b = r["memory_at_n"], r["memory_at_10n"]
        wk = "; ".join(f"{x:.0f}→{y:.0f} ({z:.0f})" for x, y, z in
                       zip(a["worker_rss_mb"], b["worker_rss_mb"], b["worker_peak_rss_mb"]))
        print(f"{r['n_series']:>10,}{r['workers']:>8}{r['windows_per_s']:>12,.0f}"
              f"{r['first_batch_s'] * 1000:>9.0f}ms"
              f"{a['main_rss_mb']:>9.0f}→{b['main_rss_mb']:<8.0f}{wk:>32}")
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
    write_json(result_path("loader_scale", args.json, args.quick), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
