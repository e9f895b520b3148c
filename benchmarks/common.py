"""What the benchmark scripts share: where results go, the machine line, timed children.

Imported by the scripts beside it (`python benchmarks/<name>.py` puts this folder first on
sys.path):

    from common import result_path, write_json, machine, run_timed, run_checked
    records = read_records(run_dir); first, last, between = timed_window(records, warmup)
    cpu_s = tree_cpu_seconds(pid)                          # a process and its descendants
    os.environ.update(child_env())        # children: the repository importable, 1 BLAS thread
    path = result_path("loader", args.json, args.quick)   # --json, else results/ or out/
    write_json(path, figures)
    add_pair_options(parser, "tsforge, bare"); ...; check_pair_options(parser, args)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"  # committed figures
OUT = HERE / "out"  # scratch, ignored by git


def result_path(name: str, given: Path | None, quick: bool = False) -> Path:
    """`--json PATH` if given; else results/<name>.json, or out/ for a --quick check run,
    which must not replace the committed figures."""
    return given or (OUT if quick else RESULTS) / f"{name}.json"


def add_pair_options(parser, sides: str) -> None:
    """--quick, --pairs, --steps, --warmup of a benchmark that runs its sides in turn and
    times each run from its training records (one every 10 steps)."""
    parser.add_argument("--quick", action="store_true", help="1 pair of 40 steps: does it run?")
    parser.add_argument("--pairs", type=int, default=3, help=f"rounds of ({sides})")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run")
    parser.add_argument("--warmup", type=int, default=50, help="steps left out of the timing")


def check_pair_options(parser, args) -> None:
    """--quick's settings, then the warmup check (records come every 10 steps)."""
    if args.quick:
        args.pairs, args.steps, args.warmup = 1, 40, 10
    if args.warmup % 10 or not 0 < args.warmup < args.steps:
        parser.error("--warmup must be a multiple of 10 (the runs log every 10 steps) below "
                     "--steps")


def write_json(path: Path, data, indent: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")
    print(f"wrote {path}")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_avg_1_5_15": list(os.getloadavg())}  # fmt: skip


def child_env() -> dict[str, str]:
    """This environment with the repository on PYTHONPATH and BLAS held to one thread (the
    ranks of a launch each get one core; threaded BLAS in each oversubscribes them)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = "1"
    return env


def run_timed(cmd: list[str], log: Path, cwd: Path = REPO) -> tuple[int, float, float]:
    """Run `cmd` with its output in `log`: (exit code, wall seconds, CPU seconds).

    The CPU time comes from os.wait4, the child's own, which neighbours on a shared machine
    do not inflate (unlike its wall time)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime


def run_checked(cmd: list[str], log: Path) -> tuple[float, float]:
    """`run_timed`, stopping the benchmark with the log's tail when the child fails."""
    code, wall, cpu = run_timed(cmd, log)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return wall, cpu


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its living descendants (Linux /proc)."""
    tick, total, todo, seen = os.sysconf("SC_CLK_TCK"), 0, [pid], False
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            seen = True
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total / tick if seen else None


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def timed_window(records: list[dict], warmup: int) -> tuple[dict, dict, list[dict]]:
    """(record at the first step >= warmup, last train record, the records in between)."""
    train = [r for r in records if "train/loss" in r]
    first = next(r for r in train if r["step"] >= warmup)
    last = train[-1]
    return first, last, [r for r in train if first["step"] < r["step"] <= last["step"]]
