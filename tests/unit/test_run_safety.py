"""What keeps a run safe, part by part: resume rules, the run lock, safe checkpoint loading,
fallback and rotation, the optimizer's settings on resume, stop signals held for workers.

    python -m pytest tests/unit/test_run_safety.py

The hostile-input suite (tests/hostile) runs the same promises end to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tsforge.errors import UserError, environment_fault
from tsforge.launchers.slurm import check_not_in_use
from tsforge.train.checkpoint import CheckpointManager, load_checkpoint
from tsforge.train.lock import RunLock, holder
from tsforge.train.loop import load_optimizer
from tsforge.train.resume import config_changes, may_change
from tsforge.train.rundir import check_run_dir
from tsforge.train.schedule import build_scheduler


# -- resume rules ----------------------------------------------------------------------------
def test_changes_that_a_resume_takes_are_returned_with_old_and_new():
    old = {"optim": {"lr": 1e-3}, "trainer": {"max_steps": 4}, "launcher": {"nprocs": 1}}
    new = {"optim": {"lr": 0.01}, "trainer": {"max_steps": 8}, "launcher": {"nprocs": 2}}
    assert config_changes(old, new, "r") == {
        "optim.lr": [1e-3, 0.01], "trainer.max_steps": [4, 8], "launcher.nprocs": [1, 2],
    }  # fmt: skip
    assert config_changes(old, old, "r") == {}


def test_a_resume_may_name_another_init_from_which_it_ignores():
    """The weights come from the run's own checkpoint: where its first start took them from
    is history (meta.json), not a setting of the resumed run."""
    old, new = {"trainer": {"init_from": "runs/a"}}, {"trainer": {"init_from": None}}
    assert config_changes(old, new, "r") == {"trainer.init_from": ["runs/a", None]}

@pytest.mark.parametrize("key", ["data.horizon", "data.input_size", "data.batch_size",
                                 "model.mlp_units", "loss.name", "trainer.seed"])  # fmt: skip
def test_changes_of_shapes_data_or_model_are_refused(key):
    assert not may_change(key)
    group, name = key.split(".")
    with pytest.raises(UserError, match=rf"{key} was 1 in run r and is 2 now.*hydra\.run\.dir"):
        config_changes({group: {name: 1}}, {group: {name: 2}}, "r")


# -- the run lock ------------------------------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys, time
    from tsforge.train.lock import RunLock
    with RunLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_held_lock_names_its_holder_and_a_dead_one_does_not_block(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(tmp_path) == f"{proc.pid}@{os.uname().nodename}"
        with pytest.raises(UserError, match=rf"in use by pid {proc.pid}@"):
            RunLock(tmp_path).acquire()
        with pytest.raises(UserError, match=rf"in use by pid {proc.pid}@"):
            check_not_in_use(tmp_path)  # launcher=slurm does not submit into it either
    finally:
        proc.kill()  # SIGKILL: the lock file stays behind, its lock does not
        proc.wait()
    assert (tmp_path / ".lock").exists() and holder(tmp_path) is None
    with RunLock(tmp_path):
        assert holder(tmp_path) == f"{os.getpid()}@{os.uname().nodename}"
    assert not (tmp_path / ".lock").exists()


# -- run directory -----------------------------------------------------------------------------
def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other files in it and no tsforge run"):
        check_run_dir(tmp_path)
    with pytest.raises(UserError, match="is a file"):
        check_run_dir(tmp_path / "notes.txt")
    check_run_dir(tmp_path / "new" / "run")  # a new folder under a writable one is fine


def test_a_full_disk_is_named_as_a_machine_fault():
    err = OSError(28, "No space left on device", "/runs/a/meta.json")
    assert environment_fault(err) == "cannot write /runs/a/meta.json: No space left on " \
                                     "device: free some space there"
    assert environment_fault(ValueError("x")) is None


# -- checkpoints -------------------------------------------------------------------------------
class _Payload:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_crafted_checkpoint_is_refused_without_running_it(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format_version": 2, "step": 1, "x": _Payload(tmp_path / "PWNED")}, path)
    with pytest.raises(UserError, match=r"is refused: it would call .*open"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def _save(mgr, step):
    return mgr.save({"fingerprint": "f", "model_name": "m", "w": torch.tensor([step])}, step)


def test_resume_point_skips_a_damaged_latest_and_says_so(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (2, 4, 6):
        _save(mgr, step)
    for name in ("latest.pt", "step_00000006.pt"):
        path = mgr.dir / name
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data[: len(data) // 2])
    ckpt, note = mgr.resume_point(fingerprint="f", model_name="m")
    assert ckpt["step"] == 4
    assert "skipped latest.pt (truncated" in note and "step_00000006.pt" in note
    assert note.endswith("resuming from step_00000004.pt")


def test_rotation_keeps_the_new_step_and_never_a_later_file_for_it(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (2, 4, 6):
        _save(mgr, step)
    _save(mgr, 5)  # a resume from an earlier step: step 6 is left for the run to replace
    names = [p.name for p in mgr.step_files()]
    assert names == ["step_00000004.pt", "step_00000005.pt", "step_00000006.pt"]
    assert load_checkpoint(mgr.latest())["step"] == 5
    (mgr.dir / ".step_00000007.pt.tmp-1").write_bytes(b"half")
    mgr.remove_temporaries()
    assert not list(mgr.dir.glob(".*"))


# -- optimizer settings on resume --------------------------------------------------------------
def _optimizer(lr, schedule):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.1)
    return net, opt, build_scheduler(opt, total_steps=10, schedule=schedule)


def test_a_resumed_optimizer_keeps_its_moments_and_takes_the_new_lr():
    net, opt, sched = _optimizer(1e-3, "cosine")
    for _ in range(3):
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    net2, opt2, sched2 = _optimizer(0.01, "constant")
    net2.load_state_dict(net.state_dict())
    load_optimizer(opt2, sched2, saved_opt, saved_sched)
    assert [g["lr"] for g in opt2.param_groups] == [0.01] and sched2.get_last_lr() == [0.01]
    assert sched2.last_epoch == 3
    moments = opt2.state[opt2.param_groups[0]["params"][0]]["exp_avg"]
    assert torch.equal(moments, opt.state[opt.param_groups[0]["params"][0]]["exp_avg"])
    net2(torch.ones(1, 2)).sum().backward()
    opt2.step()
    sched2.step()
    assert sched2.get_last_lr() == [0.01]


# -- stop signals held back for workers that are still starting -------------------------------
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from tsforge.train import stop
    print("started", flush=True)
    while signal.SIGTERM not in signal.sigpending():  # sent while it has no handler: it waits
        time.sleep(0.01)
    stop.install()
    stop.release()
    print("stopped by", stop.requested(), flush=True)
""")


def test_a_signal_to_a_starting_worker_waits_for_its_handler():
    from tsforge.train import stop

    with stop.held():
        proc = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == f"stopped by {int(signal.SIGTERM)}"
