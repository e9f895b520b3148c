"""Ingest throughput and peak memory against input size.

    python benchmarks/ingest.py                      # a >= 1 GiB long CSV and one a quarter of it
    python benchmarks/ingest.py --gb 2 --json out.json  # default: results/ingest.json
    python benchmarks/ingest.py --quick              # a few MB, to check that it runs

Generates long-format CSVs (`unique_id, ds, y`; 20k hourly series by default) a piece at a
time, with the pieces (a block of series x a stretch of time) in shuffled order so that ingest
must regroup and sort them. Then runs `python -m tsforge data ingest` on each in a child
process and reads that child's peak resident memory from `os.wait4` (ru_maxrss). Prints and
writes JSON: input size, rows, seconds, rows/s, MiB/s and peak RSS per size (MiB = 2**20
bytes; --gb counts GiB). The streaming design holds when peak RSS stays flat while the input
grows four-fold. Also runs the quarter size with the rows already grouped by series (the
fast path without regrouping).

Generated files live in a temporary folder (--workdir) and are deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from common import result_path, write_json

REPO = Path(__file__).resolve().parents[1]
START = np.datetime64("2020-01-01T00:00:00", "s")
SCHEMA = pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("s")), ("y", pa.float32())])


def _piece(rng, series: np.ndarray, t0: int, steps: int) -> pa.Table:
    """Rows of `series` over hours [t0, t0 + steps): a random walk per series."""
    n = len(series)
    ids = np.repeat(np.char.add("s", np.char.zfill(series.astype(str), 6)), steps)
    ds = np.tile(np.arange(t0, t0 + steps, dtype=np.int64) * 3600, n)
    ds = ds + START.astype(np.int64)
    y = (rng.standard_normal((n, steps)).cumsum(1) + series[:, None] % 97).astype(np.float32)
    return pa.Table.from_arrays(
        [pa.array(ids), pa.array(ds, pa.int64()).cast(pa.timestamp("s")), pa.array(y.ravel())],
        schema=SCHEMA,
    )


def generate(path: Path, target_bytes: int, n_series: int, *, shuffled: bool, seed: int = 0):
    """A long CSV of about `target_bytes` (at least that much); returns (rows, bytes)."""
    rng = np.random.default_rng(seed)
    block_series = max(1, min(n_series, 500))
    # Estimate the row width from a sample, then pick the series length to reach the size.
    sample = io.BytesIO()
    pacsv.write_csv(_piece(rng, np.arange(block_series), 0, 64), sample)
    row_bytes = len(sample.getvalue()) / (block_series * 64)
    # A 6% margin: rows further into the series are a little wider than the sample's.
    length = max(8, int(np.ceil(target_bytes / row_bytes / n_series * 1.06)))
    segments = max(1, min(8, length // 64))
    seg_len = -(-length // segments)
    pieces = [
        (s0, t0) for s0 in range(0, n_series, block_series) for t0 in range(0, length, seg_len)
    ]
    if shuffled:
        rng.shuffle(pieces)
    rows = 0
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as fh, pacsv.CSVWriter(fh, SCHEMA, write_options=options) as writer:
        fh.write(b"unique_id,ds,y\n")
        for s0, t0 in pieces:
            series = np.arange(s0, min(n_series, s0 + block_series))
            steps = min(seg_len, length - t0)
            writer.write_table(_piece(rng, series, t0, steps))
            rows += len(series) * steps
    return rows, path.stat().st_size


def run_ingest(src: Path, out: Path) -> dict:
    """`tsforge data ingest` in a child process; its wall time, summary and peak RSS."""
    cmd = [sys.executable, "-m", "tsforge", "data", "ingest", str(src), "--out", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
    stdout_r, stderr_r = proc.stdout, proc.stderr
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = stdout_r.read().decode(), stderr_r.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}): {stderr.strip()}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "summary": json.loads(stdout),
    }


def measure(workdir: Path, name: str, target_bytes: int, n_series: int, shuffled: bool) -> dict:
    src, out = workdir / f"{name}.csv", workdir / f"{name}.zarr"
    t0 = time.perf_counter()
    rows, size = generate(src, target_bytes, n_series, shuffled=shuffled)
    gen_s = time.perf_counter() - t0
    res = run_ingest(src, out)
    store_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    src.unlink()
    shutil.rmtree(out)
    mb = size / 2**20
    row = {
        "name": name,
        "input_bytes": size,
        "input_mib": round(mb, 1),
        "rows": rows,
        "series": n_series,
        "shuffled": shuffled,
        "seconds": res["seconds"],
        "rows_per_s": round(rows / res["seconds"]),
        "mib_per_s": round(mb / res["seconds"], 1),
        "peak_rss_mib": res["peak_rss_mib"],
        "store_mib": round(store_mib, 1),
        "generate_s": round(gen_s, 1),
        "ingest_reported_s": res["summary"]["seconds"],
    }
    print(
        f"{name:>16}: {row['input_mib']:8.1f} MiB  {rows:>11,d} rows  {row['seconds']:7.1f} s  "
        f"{row['rows_per_s']:>10,d} rows/s  {row['mib_per_s']:6.1f} MiB/s  "
        f"peak RSS {row['peak_rss_mib']:7.1f} MiB",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="size of the large input in GiB")
    ap.add_argument("--series", type=int, default=20_000, help="number of series")
    ap.add_argument("--quick", action="store_true", help="a few MB only, to check the script")
    ap.add_argument("--json", type=Path, default=None,
                    help="where to write the results (default: benchmarks/results/; "
                         "with --quick, benchmarks/out/)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to put generated files")
    args = ap.parse_args(argv)
    # A --quick run checks the script: it must not replace the committed figures.
    args.json = result_path("ingest", args.json, args.quick)
    gib = 0.02 if args.quick else args.gb
    n_series = min(args.series, 2_000) if args.quick else args.series
    full = int(gib * 2**30)
    workdir = Path(tempfile.mkdtemp(prefix="tsforge-ingest-bench-", dir=args.workdir))
    try:
        rows = [
            measure(workdir, "quarter", full // 4, n_series, shuffled=True),
            measure(workdir, "full", full, n_series, shuffled=True),
            measure(workdir, "quarter-grouped", full // 4, n_series, shuffled=False),
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    q, f = rows[0], rows[1]
    result = {
        "benchmark": "ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": rows,
        "rss_growth_full_over_quarter": round(f["peak_rss_mib"] / q["peak_rss_mib"], 2),
        "input_growth_full_over_quarter": round(f["input_mib"] / q["input_mib"], 2),
    }
    print(
        f"peak RSS x{result['rss_growth_full_over_quarter']} for input "
        f"x{result['input_growth_full_over_quarter']}"
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
