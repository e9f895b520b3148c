"""What the benchmark scripts share: where results go, the machine line, timed children.

Imported by the scripts beside it (`python benchmarks/<name>.py` puts this folder first on
sys.path):

    from common import result_path, write_json, machine, run_timed
    path = result_path("loader", args.json, args.quick)   # --json, else results/ or out/
    write_json(path, figures)
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
