"""How a model runs over ranks (`tsforge.train.parallel`) and the sharded checkpoints it writes,
in this one process: the strategy's config checks, activation checkpointing, and FSDP2 with a
process group of one saving and loading DCP step folders.

    pytest tests/unit/test_parallel.py
"""

from __future__ import annotations

import pytest
import torch

from tsforge.config.checks import compose_config
from tsforge.errors import UserError
from tsforge.models import build_model
from tsforge.train.checkpoint import CheckpointManager, load_checkpoint, load_model_weights
from tsforge.train.distributed import DistEnv, cleanup_distributed, init_distributed
from tsforge.train.parallel import blocks_of, is_sharded, parallelize

ONE = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
PATCHTST = dict(input_size=32, horizon=8, d_model=16, n_heads=2, d_ff=32, e_layers=2)


def patchtst(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("patchtst", **{**PATCHTST, "dropout": 0.0, **kwargs})


def step(net: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x_BLC = torch.randn(8, 32, 1, generator=gen)
    loss = net(x_BLC).square().mean()
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("override, key", [
    ("trainer.strategy=zero", "trainer.strategy"),
    ("trainer.strategy=FSDP", "trainer.strategy"),
    ("trainer.activation_checkpointing=maybe", "trainer.activation_checkpointing"),
])  # fmt: skip
def test_bad_strategy_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(UserError, match=key):
        compose_config(["model=nhits", override])


def test_strategy_defaults_to_ddp_and_fsdp_composes():
    assert compose_config(["model=nhits"]).trainer.strategy == "ddp"
    cfg = compose_config(["model=patchtst", "trainer.strategy=fsdp",
                          "trainer.activation_checkpointing=true"])  # fmt: skip
    assert cfg.trainer.strategy == "fsdp" and cfg.trainer.activation_checkpointing is True


def test_activation_checkpointing_without_blocks_is_refused_naming_the_key():
    dlinear = build_model("dlinear", input_size=32, horizon=8)
    assert blocks_of(dlinear) is None
    assert len(blocks_of(build_model("nhits", input_size=32, horizon=8))) == 3
    with pytest.raises(UserError, match="trainer.activation_checkpointing"):
        parallelize(dlinear, ONE, activation_checkpointing=True)
    with pytest.raises(UserError, match="trainer.strategy"):
        parallelize(dlinear, ONE, strategy="zero")


def test_activation_checkpointing_changes_nothing_but_memory():
    """Same loss, gradients, state-dict keys and BatchNorm statistics (updated once a step,
    though the recomputation in backward runs the blocks' forward again)."""
    plain, wrapped = patchtst(), parallelize(patchtst(), ONE, activation_checkpointing=True)
    assert len(blocks_of(wrapped)) == 2
    assert type(blocks_of(wrapped)[0]).__name__ == "CheckpointWrapper"
    assert step(wrapped) == step(plain)
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=name)
    for (name, a), b in zip(plain.state_dict().items(), wrapped.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)  # running stats too


@pytest.fixture
def group_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    env = init_distributed("cpu", 60.0, group_of_one=True)
    try:
        yield env
    finally:
        cleanup_distributed(env)


def test_sharded_steps_save_atomically_and_load_into_a_plain_model(tmp_path, group_of_one):
    env = group_of_one
    assert env.distributed and env.world_size == 1
    net = parallelize(patchtst(), env, strategy="fsdp", activation_checkpointing=True)
    assert is_sharded(net) and all(is_sharded(b) for b in blocks_of(net))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    checkpoints = CheckpointManager(tmp_path, keep_last=1)
    for s in (1, 2, 3):
        step(net, seed=s)
        optimizer.step()
        optimizer.zero_grad()
        checkpoints.save_sharded({"fingerprint": "f", "model_name": "patchtst"}, s, model=net,
                                 optimizer=optimizer, env=env, is_best=s == 1)  # fmt: skip
    folder = tmp_path / "checkpoints"
    # keep_last=1 keeps the newest step, and the best one while it is the best
    assert sorted(p.name for p in folder.iterdir()) == ["best", "latest", "step_00000001",
                                                        "step_00000003"]  # fmt: skip
    assert (folder / "latest").resolve() == folder / "step_00000003"
    assert (folder / "best").resolve() == folder / "step_00000001"
    files = {p.name for p in (folder / "latest").iterdir()}
    assert {".metadata", "__0_0.distcp", "trainer.pt"} <= files
    ckpt = load_checkpoint(folder / "latest", fingerprint="f", model_name="patchtst")
    assert ckpt["step"] == 3 and ckpt["sharded"] and "model" not in ckpt
    with pytest.raises(UserError, match="fingerprint"):
        load_checkpoint(folder / "latest", fingerprint="other")

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True))
    plain = patchtst(seed=7)
    assert load_model_weights(folder / "latest", plain)["step"] == 3
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, full[name], rtol=0, atol=0, msg=name)
    # a run directory means its best step
    assert load_model_weights(tmp_path, patchtst(seed=7))["step"] == 1
    with pytest.raises(UserError, match="does not fit the model: parameter W_pos_PD is"):
        load_model_weights(folder / "latest", patchtst(d_model=8, n_heads=2))


def test_a_model_without_blocks_is_sharded_at_the_root(group_of_one):
    net = parallelize(build_model("dlinear", input_size=32, horizon=8), group_of_one,
                      strategy="fsdp")  # fmt: skip
    assert is_sharded(net)
    assert step(net) > 0 and all(p.grad is not None for p in net.parameters())


def test_a_sharded_model_takes_a_plain_checkpoint_file(tmp_path, group_of_one):
    source = patchtst(seed=3)
    CheckpointManager(tmp_path).save({"model": source.state_dict()}, 5)
    net = parallelize(patchtst(seed=4), group_of_one, strategy="fsdp")
    assert load_model_weights(tmp_path / "checkpoints" / "latest.pt", net)["step"] == 5
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True))
    for name, value in source.state_dict().items():
        torch.testing.assert_close(full[name], value, rtol=0, atol=0, msg=name)


def test_an_asynchronous_save_holds_the_state_of_its_step(tmp_path, group_of_one):
    """The parameters change while the thread writes: the folder has them as they were, and
    it is in place only once `wait` has run."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    net = parallelize(patchtst(), group_of_one, strategy="fsdp")
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.1)
    step(net)
    optimizer.step()
    full = StateDictOptions(full_state_dict=True)
    saved = {k: v.clone() for k, v in get_model_state_dict(net, options=full).items()}
    checkpoints = CheckpointManager(tmp_path, async_save=True)
    checkpoints.save_sharded({}, 1, model=net, optimizer=optimizer, env=group_of_one)
    optimizer.zero_grad()
    step(net, seed=2)
    optimizer.step()  # in place, while the save may still be writing
    assert checkpoints.named("latest") is None
    checkpoints.wait(group_of_one)
    assert checkpoints.named("latest").resolve().name == "step_00000001"
    assert not list((tmp_path / "checkpoints").glob(".*"))
    plain = patchtst(seed=9)
    load_model_weights(checkpoints.named("latest"), plain)
    changed = get_model_state_dict(net, options=full)
    assert any(not torch.equal(changed[k], saved[k]) for k in saved)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)


def test_resume_skips_a_damaged_sharded_step_for_the_previous_one(tmp_path, group_of_one):
    net = parallelize(patchtst(), group_of_one, strategy="fsdp")
    optimizer = torch.optim.AdamW(net.parameters())
    checkpoints = CheckpointManager(tmp_path, keep_last=2)
    for s in (1, 2):
        checkpoints.save_sharded({"model_name": "patchtst"}, s, model=net, optimizer=optimizer,
                                 env=group_of_one)  # fmt: skip
    state = tmp_path / "checkpoints" / "step_00000002" / "trainer.pt"
    state.write_bytes(state.read_bytes()[:100])  # cut short
    checkpoints.remove_temporaries()
    ckpt, note = checkpoints.resume_point(model_name="patchtst")
    assert ckpt["step"] == 1 and ckpt["path"].name == "step_00000001"
    assert "skipped latest" in note and "step_00000001" in note
