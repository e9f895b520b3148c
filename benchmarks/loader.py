"""Window loader throughput against a per-window Zarr read, in the same run.

    python benchmarks/loader.py                 # 1000 series x 40,000 rows (40M rows)
    python benchmarks/loader.py --quick         # 200 series x 20,000 rows (4M rows)
    python benchmarks/loader.py --json out.json # default: benchmarks/results/loader.json

Builds a univariate store in a temporary folder, then measures, in one process with
`num_workers=0` and one torch thread, univariate windows of L=96, H=96 in global batches of
1024: exhaustive epochs with per-window standard scaling (the headline `windows_per_s`),
without scaling, with one DataLoader worker process (batches cross a process boundary),
and sampled mode; then the naive way, one `store.values[r:r+192]` read per
window, over a few thousand windows. `gb_per_s` counts the window bytes produced
(W * 4 bytes of targets per window). Memory: the loader's resident-set growth after a pass
on a small and a large store (10x the windows in the full run) with a 32 MiB chunk cache,
which must not grow with the number of windows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import result_path, write_json

from tsforge.data.loader import WindowLoader, WindowSpec
from tsforge.data.store import ColumnRoles, Store, StoreWriter

L, H, BATCH = 96, 96, 1024
MEMORY_CACHE_MB = 32  # the memory check's chunk cache: RSS growth = cache + O(n_series) + order


def build_store(path: str, n_series: int, length: int, seed: int = 0) -> Store:
    rng = np.random.default_rng(seed)
    with StoreWriter(path, roles=ColumnRoles(target=["y"]), freq="h", overwrite=True) as w:
        for i in range(n_series):
            walk = np.cumsum(rng.standard_normal(length, dtype=np.float32)) + 100.0
            w.add_series(f"s{i}", 0, walk[:, None])
        return w.commit()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def batches(loader: WindowLoader):
    """Batches without end, epoch after epoch."""
    while True:
        yield from loader


def loader_rate(loader: WindowLoader, seconds: float, warmup: int = 20) -> tuple[float, int]:
    """Windows per second over about `seconds` of iteration (after `warmup` batches)."""
    it = batches(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            batch = next(it)
            n += len(batch["t"])
    return n / (time.perf_counter() - t0), n


def naive_rate(store: Store, n_windows: int, seed: int = 1) -> float:
    """One Zarr read per window, as a per-window Dataset would do."""
    W = L + H
    rng = np.random.default_rng(seed)
    series = rng.integers(0, store.n_series, n_windows)
    starts = store.indptr[series] + rng.integers(0, store.lengths[series] - W + 1)
    t0 = time.perf_counter()
    for r in starts.tolist():
        store.values[r : r + W]
    return n_windows / (time.perf_counter() - t0)


def memory_growth(store: Store, n_batches: int, cache_mb: float) -> float:
    """RSS growth (MiB) of making a loader and iterating `n_batches` batches."""
    before = rss_mb()
    loader = WindowLoader(store, WindowSpec(L, H), global_batch_size=BATCH, seed=3,
                          cache_mb=cache_mb)
    it = batches(loader)
    for _ in range(n_batches):
        next(it)
    grown = rss_mb() - before
    del it, loader
    return grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller store, shorter runs")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the figures (default: benchmarks/results/; "
                             "with --quick, benchmarks/out/)")
    parser.add_argument("--dir", help="where to build the stores (default: a temporary folder)")
    args = parser.parse_args()
    # A --quick run checks the script: it must not replace the committed figures.
    args.json = result_path("loader", args.json, args.quick)
    torch.set_num_threads(1)
    n_series, length = (200, 20_000) if args.quick else (1000, 40_000)
    seconds = 1.5 if args.quick else 4.0
    root = tempfile.mkdtemp(dir=args.dir, prefix="tsforge-bench-")
    try:
        t0 = time.perf_counter()
        store = build_store(os.path.join(root, "big.zarr"), n_series, length)
        # the small store still spans more chunks than one shuffle group reads (16 x 131072
        # rows), so both stores exercise the same steady state with 10x fewer windows
        small = build_store(os.path.join(root, "small.zarr"),
                            max(n_series // 10, -(-2_500_000 // length)), length)
        build_s = time.perf_counter() - t0
        spec = WindowSpec(L, H)
        common = dict(global_batch_size=BATCH, seed=0)
        # 3000 batches cross shuffle groups, so the chunk cache fills up to its cap
        grow_small = memory_growth(small, 3000, MEMORY_CACHE_MB)
        grow_big = memory_growth(store, 3000, MEMORY_CACHE_MB)
        epoch = WindowLoader(store, spec, mode="epoch", **common)
        rate, measured = loader_rate(epoch, seconds)
        rate_none, _ = loader_rate(WindowLoader(store, spec, scaling="none", **common), seconds)
        worker = WindowLoader(store, spec, num_workers=1, **common)
        rate_worker, _ = loader_rate(worker, seconds, warmup=50)
        del worker  # stops its worker process
        sampled = WindowLoader(store, spec, mode="sampled", num_steps=10**6, **common)
        rate_sampled, _ = loader_rate(sampled, seconds, warmup=400)
        naive = naive_rate(store, 1000 if args.quick else 3000)
        bytes_per_window = (L + H) * 4
        out = {
            "store": {"n_series": n_series, "rows": store.n_timesteps,
                      "chunk_rows": store.chunk_rows, "build_s": round(build_s, 2)},
            "windows": {"input_size": L, "horizon": H, "global_batch_size": BATCH,
                        "n_windows": epoch.n_windows},
            "windows_per_s": round(rate),
            "windows_measured": measured,
            "windows_per_s_no_scaling": round(rate_none),
            "sampled_windows_per_s": round(rate_sampled),
            "one_worker_windows_per_s": round(rate_worker),
            "naive_windows_per_s": round(naive),
            "gb_per_s": round(rate * bytes_per_window / 1e9, 3),
            "ratio": round(rate / naive, 1),
            "rss_growth_mb": {"cache_mb": MEMORY_CACHE_MB, "batches": 3000,
                              "small_store_windows": WindowLoader(small, spec).n_windows,
                              "small_store": round(grow_small, 1),
                              "big_store_windows": epoch.n_windows,
                              "big_store": round(grow_big, 1)},
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
