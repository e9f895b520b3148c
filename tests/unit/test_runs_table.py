"""`tsforge runs list|compare` over run directories (tsforge/runs/table.py).

pytest tests/unit/test_runs_table.py
"""

import json
import subprocess
import sys

import pytest
import yaml

from tsforge.cli.main import main


def _run(path, *, lr, model, test_mse=None, steps=100):
    path.mkdir(parents=True)
    config = {"model": {"name": model}, "optim": {"lr": lr}, "trainer": {"max_steps": steps}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "meta.json").write_text(json.dumps({"resumes": [{"from_step": 50}]}))
    if test_mse is not None:
        final = {"steps": steps, "test": {"mse": test_mse, "mae": 0.5},
                 "baseline": {"seasonal_naive": {"mse": 2.0}}, "best_val": {"mae": 0.4},
                 "train_windows_per_s": 1234.5}  # fmt: skip
        (path / "metrics.json").write_text(json.dumps(final))


@pytest.fixture
def sweep(tmp_path):
    _run(tmp_path / "sweep" / "0", lr=1e-3, model="nhits", test_mse=0.25)
    _run(tmp_path / "sweep" / "1", lr=3e-4, model="nhits", test_mse=0.5)
    _run(tmp_path / "sweep" / "10", lr=1e-3, model="dlinear")  # unfinished
    return tmp_path / "sweep"


def test_compare_shows_only_the_keys_that_differ(sweep, capsys):
    assert main(["runs", "compare", str(sweep), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["differing"] == ["model.name", "optim.lr"]
    assert [r["run"].rsplit("/", 1)[1] for r in out["runs"]] == ["0", "1", "10"]  # natural order
    first, last = out["runs"][0], out["runs"][-1]
    assert first["status"] == "finished" and first["test_mse"] == 0.25 and first["resumes"] == 1
    assert last["status"] == "started" and last["test_mse"] is None
    assert set(first["config"]) == {"model.name", "optim.lr"}


def test_list_prints_a_table(sweep, capsys):
    assert main(["runs", "list", str(sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "steps"]
    assert len(lines) == 4 and "0.25" in lines[1] and "finished" in lines[1]


def test_no_runs_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tsforge", "runs", "list", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no run directory" in proc.stderr


def test_best_val_names_its_metric(tmp_path, capsys):
    _run(tmp_path / "a" / "0", lr=1e-3, model="nhits", test_mse=0.25)
    _run(tmp_path / "a" / "1", lr=3e-4, model="nhits", test_mse=0.5)
    assert main(["runs", "list", str(tmp_path / "a")]) == 0
    head = capsys.readouterr().out.splitlines()[0].split()
    assert "best_val(val/mae)" in head
    final = json.loads((tmp_path / "a" / "1" / "metrics.json").read_text())
    final["best_val"] = {"mse": 0.3}
    (tmp_path / "a" / "1" / "metrics.json").write_text(json.dumps(final))
    assert main(["runs", "list", str(tmp_path / "a")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "best_val" in lines[0].split()
    assert "0.4 val/mae" in lines[1] and "0.3 val/mse" in lines[2]
