"""`python -m tsforge.launch --help` and `--cfg job`: what a user reads before a run.

pytest tests/unit/test_launch_help.py
"""

import subprocess
import sys

import yaml

from tsforge.config import CONF_DIR


def _launch(cwd, *args):
    return subprocess.run([sys.executable, "-m", "tsforge.launch", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_help_lists_the_groups_and_their_options_not_schema_entries(tmp_path):
    proc = _launch(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "schema" not in out
    lines = out.splitlines()
    for group in ("model", "data", "launcher", "experiment"):
        head = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{group}="))
        block = [lines[head]]
        for line in lines[head + 1 :]:
            if not line.startswith("   "):  # the next group (2 spaces) or the section's end
                break
            block.append(line)
        shown = " ".join(block).replace(",", " ").split()
        for option in (p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            assert option in shown or f"{option}*" in shown, (group, option)
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    model = next(d["model"] for d in defaults if isinstance(d, dict) and "model" in d)
    assert f"{model}*" in out  # the default is marked
    for key in ("trainer.", "max_steps", "optim.", "launcher.", "nprocs"):
        assert key in out
    assert not list(tmp_path.iterdir())  # no run directory


def test_help_includes_a_config_dir_of_ones_own(tmp_path):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "sales_weekly.yaml").write_text("# @package _global_\n")
    proc = _launch(tmp_path, "--config-dir", str(tmp_path / "mine"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "sales_weekly" in proc.stdout


def test_cfg_job_prints_the_config_and_makes_no_run_directory(tmp_path):
    proc = _launch(tmp_path, "--cfg", "job", "model=dlinear", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["name"] == "dlinear" and cfg["trainer"]["max_steps"] > 0
    assert not list(tmp_path.iterdir())
