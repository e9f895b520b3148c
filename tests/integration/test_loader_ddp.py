"""The window loader under a real 2-process torch.distributed (gloo) run.

Each rank iterates its loader; the ranks all_gather their window ids and check that they got
the same number of batches, disjoint windows, and together exactly the global batches of a
1-process run, for training epochs (across an epoch boundary) and for an evaluation pass.

    python -m pytest -m integration tests/integration/test_loader_ddp.py
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tsforge.data.loader import WindowLoader, WindowSpec
from tsforge.data.store import ColumnRoles, StoreWriter

pytestmark = pytest.mark.integration

WORLD = 2
SPEC = WindowSpec(input_size=16, horizon=8)
LENGTHS = [30, 500, 77, 0, 260, 41, 390]
TRAIN = dict(global_batch_size=32, seed=3)
EVAL = dict(split="val", global_batch_size=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def window_ids(loader: WindowLoader, n_batches: int) -> np.ndarray:
    """[n_batches, B] window ids (-1 for pads), crossing epochs as a training loop does."""
    out = []
    while len(out) < n_batches:
        for batch in loader:
            ids = loader.index.window_id(batch["series"], batch["channel"], batch["t"])
            out.append(np.where(batch["valid"].numpy(), ids, -1))
            if len(out) == n_batches:
                break
    return np.stack(out)


def gather(ids: np.ndarray) -> list[np.ndarray]:
    """Every rank's ids, after checking that every rank has as many batches."""
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(WORLD)]
    dist.all_gather(counts, torch.tensor([len(ids)]))
    assert len({int(c) for c in counts}) == 1, f"ranks differ in batch counts: {counts}"
    parts = [torch.zeros(ids.shape, dtype=torch.int64) for _ in range(WORLD)]
    dist.all_gather(parts, torch.from_numpy(ids))
    return [p.numpy() for p in parts]


def run_rank(rank: int, port: int, store_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        train = WindowLoader(store_path, SPEC, rank=rank, world_size=WORLD, num_workers=1,
                             **TRAIN)
        n_train = len(train) + 3  # into the second epoch
        parts = gather(window_ids(train, n_train))
        single = window_ids(WindowLoader(store_path, SPEC, **TRAIN), n_train)
        assert np.array_equal(np.concatenate(parts, axis=1), single)
        first_epoch = np.concatenate([p[: len(train)].ravel() for p in parts])
        assert len(np.unique(first_epoch)) == len(first_epoch)  # disjoint, no repeats

        val = WindowLoader(store_path, SPEC, rank=rank, world_size=WORLD, **EVAL)
        parts = gather(window_ids(val, len(val)))
        single = window_ids(WindowLoader(store_path, SPEC, **EVAL), len(val))
        assert np.array_equal(np.concatenate(parts, axis=1), single)
        seen = np.concatenate([p.ravel() for p in parts])
        seen = seen[seen >= 0]
        assert np.array_equal(np.sort(seen), np.arange(val.n_windows))  # each window once
    finally:
        dist.destroy_process_group()


def test_ranks_split_the_global_batches(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.zarr"
    with StoreWriter(path, roles=ColumnRoles(target=["y"]), freq="h", chunk_rows=128) as w:
        for i, n in enumerate(LENGTHS):
            w.add_series(f"s{i}", 0, rng.standard_normal((n, 1)).astype(np.float32))
        w.commit(splits={"kind": "ratio", "train": 0.7, "test": 0.15})
    mp.spawn(run_rank, args=(free_port(), str(path)), nprocs=WORLD, join=True)
