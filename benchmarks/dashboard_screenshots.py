"""Screenshots of the real TensorBoard over a small sweep: what a person sees at a glance.

    python benchmarks/dashboard_screenshots.py                 # sweep, serve, screenshot
    python benchmarks/dashboard_screenshots.py --sweep-dir D   # screenshot an existing sweep
    python benchmarks/dashboard_screenshots.py --sweep-dir STUDY_DIR --out results/dashboard_tune

Runs a 3-run sweep on the built-in synthetic data (`python -m tsforge.launch -m
optim.lr=3e-4,1e-3,3e-3`, a few dozen steps each), starts `tensorboard --logdir SWEEP_DIR`
on 127.0.0.1 only, and takes headless Chromium screenshots (Debian: `apt-get install
chromium`) of its Scalars, Custom Scalars, Images and HParams tabs into
`benchmarks/results/dashboard/<tab>.png` (`--out DIR` to change), with
`benchmarks/results/dashboard/screenshots.json` listing them beside the sweep's overrides and
the TensorBoard version. The sweep itself goes to benchmarks/out/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, RESULTS, write_json  # noqa: E402

SWEEP = ["optim.lr=3e-4,1e-3,3e-3"]
SMALL = [
    "model.mlp_units=[[64,64],[64,64],[64,64]]", "data.batch_size=64",
    "data.eval_batch_size=512", "trainer.threads=1", "trainer.log_every_steps=5",
]  # fmt: skip
# tab -> the address's fragment (TensorBoard's own routes)
TABS = {
    "scalars": "#scalars",
    "custom_scalars": "#custom_scalars",
    "images": "#images",
    "hparams": "#hparams",
}


def run_sweep(folder: Path, steps: int) -> None:
    cmd = [sys.executable, "-m", "tsforge.launch", "-m", *SWEEP, *SMALL,
           f"trainer.max_steps={steps}", f"trainer.val_every_steps={steps // 3}",
           f"hydra.sweep.dir={folder}"]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path, port: int) -> subprocess.Popen:
    """TensorBoard on 127.0.0.1:port, once it lists every run's scalars and hparams."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
         "127.0.0.1", "--port", str(port), "--load_fast", "false", "--reload_interval", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # a sweep: <num>/config.yaml; a study: trials/<n>/config.yaml
    runs = sum("checkpoints" not in p.parts for p in logdir.rglob("config.yaml"))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
            with urllib.request.urlopen(url, timeout=5) as resp:
                tags = json.load(resp)
            if sum(run.endswith("tb/test") for run in tags) == runs:
                return server
        except OSError:
            pass
        time.sleep(1)
    server.terminate()
    raise SystemExit("tensorboard did not list the sweep's runs within 120 s")


def screenshot(chromium: str, url: str, png: Path, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1600,1000",
             f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", url],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180,
        )  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep-dir", type=Path, help="an existing sweep to show (no new runs)")
    p.add_argument("--steps", type=int, default=60, help="training steps per run")
    p.add_argument("--out", type=Path, default=RESULTS / "dashboard")
    p.add_argument("--budget-ms", type=int, default=20000, help="page time before each shot")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 1
    folder = args.sweep_dir
    if folder is None:
        folder = OUT / "dashboard_sweep"
        shutil.rmtree(folder, ignore_errors=True)
        run_sweep(folder, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = serve(folder.resolve(), port)
    shots = {}
    try:
        for tab, fragment in TABS.items():
            png = args.out / f"{tab}.png"
            screenshot(chromium, f"http://127.0.0.1:{port}/{fragment}", png, args.budget_ms)
            shots[tab] = str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png)
            print(f"{tab}: {shots[tab]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    import tensorboard

    write_json(args.out / "screenshots.json", {
        "sweep": SWEEP, "settings": SMALL, "steps": args.steps, "screenshots": shots,
        "tensorboard": tensorboard.__version__, "window": "1600x1000",
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
