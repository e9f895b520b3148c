"""How a failed trial's one line is read from its log.

    python -m pytest tests/unit/test_tune_trials.py
"""

from __future__ import annotations

from tsforge.tune.trials import _last_line


def test_a_one_line_error_is_the_failure(tmp_path):
    log = tmp_path / "0.log"
    log.write_text("step 10/100 loss 0.5\ntsforge: error: store s.zarr does not exist\n\n")
    assert _last_line(log) == "tsforge: error: store s.zarr does not exist"


def test_after_a_traceback_the_error_is_named_not_hydras_hint(tmp_path):
    log = tmp_path / "0.log"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "NotADirectoryError: [Errno 20] Not a directory: '/c/stores'\n\n"
                   "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack "
                   "trace.\n")  # fmt: skip
    assert _last_line(log) == "NotADirectoryError: [Errno 20] Not a directory: '/c/stores'"


def test_a_missing_or_empty_log_gives_no_line(tmp_path):
    assert _last_line(tmp_path / "none.log") == ""
    (tmp_path / "empty.log").write_text("\n\n")
    assert _last_line(tmp_path / "empty.log") == ""


def test_a_local_trial_holds_a_gpu_per_process_only_when_it_trains_on_cuda(tmp_path):
    from omegaconf import OmegaConf

    from tsforge.tune.trials import LocalRunner

    runner = LocalRunner(tmp_path, parallel=1)

    def cfg(device, nprocs):
        return OmegaConf.create({"trainer": {"device": device, "threads": 1},
                                 "launcher": {"nprocs": nprocs}})  # fmt: skip

    assert runner.gpus(cfg("cuda", 2)) == 2 and runner.gpus(cfg("cuda:1", 1)) == 1
    assert runner.gpus(cfg("cpu", 2)) == 0
    assert runner.gpus(cfg("auto", 2)) == 0  # this machine has no CUDA device


def test_an_array_element_holds_the_gpus_its_launcher_asks_for(tmp_path):
    from omegaconf import OmegaConf

    from tsforge.tune.trials import SlurmRunner

    launcher = OmegaConf.create({"nodes": 2, "tasks_per_node": 4, "cpus_per_task": 8,
                                 "gpus_per_node": 4, "array_parallelism": 2})  # fmt: skip
    runner = SlurmRunner(tmp_path, launcher, job_name="t")
    assert (runner.cpus(), runner.gpus(), runner.width) == (64, 8, 2)
