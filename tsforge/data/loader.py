"""The streaming window loader: this rank's batches of windows from a store.

    store = Store("data.zarr")
    spec = WindowSpec(input_size=96, horizon=96)
    train = WindowLoader(store, spec, global_batch_size=1024, rank=rank, world_size=world,
                         seed=0, num_workers=2)
    for batch in train:            # one epoch; the next `for` continues with the next epoch
        ...
    state = train.state_dict()     # a handful of integers, saved with the checkpoint
    val = WindowLoader(store, spec, split="val", global_batch_size=1024, rank=rank,
                       world_size=world)  # ordered, every window once across ranks

API (typed arguments, no config objects):

    WindowSpec(input_size, horizon, stride=1, min_input_size=None, multivariate=False)
    WindowLoader(store, spec, *, split="train", split_spec=None, mode=None,
                 global_batch_size=1024, rank=0, world_size=1, seed=0, num_steps=None,
                 sample_by="window", series_weights=None, shuffle_group_blocks=16,
                 scaling="standard", scale_by="window", series_stats=None, num_workers=0,
                 cache_mb=256, pin_memory=False)
      iter(loader) -> batches (dicts of tensors); len(loader) = batches per epoch
      .n_windows  .batches_per_epoch  .epoch  .index (windows.WindowIndex)
      .state_dict() -> dict   .load_state_dict(state)
    train_series_stats(store, split_spec, scaling) -> (loc, scale) [n_series, Cy] of the
      train rows of each series, the statistics of scale_by="series"
    scaling.inverse(y, loc, scale) -> y in the data's units
    BatchStream: the iteration (workers, slabs, epoch and place) that WindowLoader shares
      with the mixture's loader (tsforge.data.mixture.MixtureLoader)

Legend: `B` windows in this rank's part of a batch, `L` input_size, `H` horizon,
`W = L + H`, `Cy` target channels of a window (1 univariate), `Ch` historical covariates,
`Cf` future-known covariates, `S` static covariates, `R` rows of a Zarr chunk.

A batch is a dict of tensors:

    insample_y [B, L, Cy] float32    outsample_y [B, H, Cy] float32   (scaled targets)
    insample_mask [B, L, Cy] float32 outsample_mask [B, H, Cy] float32 (0: pad or missing)
    hist_exog [B, L, Ch]  futr_exog [B, W, Cf]  stat_exog [B, S]       (float32, NaN -> 0)
    loc, scale [B, 1, Cy] float32    (y = scaling.inverse(y_scaled, loc, scale))
    series, channel, t [B] int64     (channel -1 for multivariate; t = forecast start row)
    valid [B] bool                   (False for the pads of an evaluation's last batch)
    source [B] int64                 (data=mixture only: the source of each window)

Modes (`mode=`):
- "epoch" (default for split="train"): exhaustive epochs without replacement, shuffled
  with bounded locality (order.EpochOrder); the last partial global batch is dropped.
- "sampled": `num_steps` batches per epoch drawn with replacement, uniform over windows
  (`sample_by="window"`), over series (`"series"`), or by `series_weights`.
- "eval" (default for val/test): windows in order, each exactly once across ranks; the last
  global batch is padded with masked pads (`valid=False`).

Every rank gets `len(loader)` batches. Global batch k is positions [k*G, (k+1)*G) of an order
that depends only on (seed, epoch, store fingerprint, settings); rank r takes the r-th of
`world_size` equal parts. So batches do not depend on the world size (at the same global
batch size) nor on `num_workers`: a worker builds whole batches (a map-style dataset indexed
by (epoch, batch) with `batch_size=None`), each a pure function of its index.

State: `state_dict()` is {epoch, batches_consumed, seed, fingerprint, settings_hash};
`load_state_dict()` continues with exactly the batches an uninterrupted run would have seen
(with any num_workers / world size), refusing a state of another store or other settings.

Reading: each process keeps an arena of decoded chunk "slots" (at most `cache_mb` per
process, LRU). Slot j holds chunk k's R rows plus the next W-1 rows, so every window whose
reads start in chunk k lies inside one slot, and a batch is cut from the arena with one
strided gather per array (numpy fancy indexing of a sliding-window view), never one Zarr
read per window. In epoch mode a shuffle block is exactly the windows that start in one
chunk, so a group's many batches share `shuffle_group_blocks` slots: `cache_mb` should hold
at least that many chunks (otherwise batches are split by chunk, correct but slower).
Workers hand whole batches to the main process through a ring of shared-memory slabs made
once (`tsforge.data.transport`), not a fresh shared segment per tensor. The arena is
`tsforge.data.arena`, the batch assembly `tsforge.data.batches`.
Windows of series shorter than L (`min_input_size`) read from the series' first row and
are shifted right; their leading pads are masked. Memory: the arena, one group's
permutation and O(n_series), never O(n_windows).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch

from tsforge.data import scaling as scaling_mod
from tsforge.data import splits as splits_mod
from tsforge.data.batches import WindowBatches
from tsforge.data.order import EpochOrder, EvalOrder, SampledOrder
from tsforge.data.store import Store
from tsforge.data.transport import PREFETCH, BatchNumbers, as_is, unpack
from tsforge.data.windows import WindowIndex, WindowSpec
from tsforge.errors import UserError

__all__ = ["WindowLoader", "WindowSpec", "train_series_stats"]

MODES = ("epoch", "sampled", "eval")
STATE_KEYS = ("epoch", "batches_consumed", "seed", "fingerprint", "settings_hash")


class BatchStream:
    """Iteration over a map-style dataset of whole batches, item (epoch, batch): in this
    process or in `num_workers` DataLoader workers through shared slabs, from where the
    stream stands (`_epoch`, `_consumed`) to the end of the epoch. A subclass sets `mode`,
    `batches_per_epoch`, `num_workers`, `pin_memory`, `_batches` (with `build(epoch, k)`,
    `batch_nbytes()` and a `slabs` attribute), `_dataloader = None`, `_epoch`, `_consumed`
    and `_cursor = [epoch, first batch, batches per epoch]`. WindowLoader and the mixture's
    loader (`tsforge.data.mixture`) are the two."""

    def __len__(self) -> int:
        return self.batches_per_epoch

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches from the current state to the end of the epoch; the epoch
        then advances. In eval mode every iteration is one complete ordered pass."""
        if self.mode != "eval":
            self._normalize()
        epoch, start = self._epoch, 0 if self.mode == "eval" else self._consumed
        self._cursor[:] = [epoch, start, self.batches_per_epoch]
        if self.num_workers == 0:
            pin = self.pin_memory and torch.cuda.is_available()
            source = (self._batches.build(epoch, k) for k in range(start, self.batches_per_epoch))
            if pin:
                source = ({k: v.pin_memory() for k, v in b.items()} for b in source)
        else:
            source = (self._receive(*message) for message in self._make_dataloader())
        for batch in source:
            if self.mode != "eval":
                self._consumed += 1
            yield batch
        if self.mode != "eval":
            self._normalize()

    def _make_dataloader(self) -> torch.utils.data.DataLoader:
        if self._dataloader is None:
            ring = PREFETCH * self.num_workers + 2
            nbytes = self._batches.batch_nbytes()
            self._batches.slabs = torch.empty((ring, nbytes), dtype=torch.uint8).share_memory_()
            self._dataloader = torch.utils.data.DataLoader(
                self._batches,
                batch_size=None,
                sampler=BatchNumbers(self._cursor, ring),
                num_workers=self.num_workers,
                collate_fn=as_is,
                prefetch_factor=PREFETCH,
                persistent_workers=True,  # keeps each worker's chunk cache across epochs
            )
        return self._dataloader

    def _receive(self, where: int | torch.Tensor, layout: tuple, nbytes: int) -> dict:
        """A worker's batch, copied out of its slab (the slab is reused soon after)."""
        pin = self.pin_memory and torch.cuda.is_available()
        if isinstance(where, int):
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
            buffer.copy_(self._batches.slabs[where, :nbytes])
        else:
            buffer = where.pin_memory() if pin else where
        return unpack(buffer, layout)

    def _normalize(self) -> None:
        if self._consumed >= self.batches_per_epoch:
            self._epoch, self._consumed = self._epoch + 1, 0


class WindowLoader(BatchStream):
    """This rank's batches of windows of one split of a store (see the module docstring).

    store: a Store or its path; spec: the window shape. split / split_spec: which forecast
    ranges (default: the store's split spec). mode: "epoch" | "sampled" | "eval" (default
    "epoch" for train, "eval" otherwise). global_batch_size: windows per step over all ranks,
    a multiple of world_size. num_steps: batches per epoch in sampled mode (default N // G).
    sample_by / series_weights: sampled mode's distribution. shuffle_group_blocks: chunk-sized
    blocks shuffled together in epoch mode (more: better mixing, more chunks per batch).
    scaling: "standard" | "robust" | "none"; scale_by: "window" | "series" (train rows only).
    series_stats: with scale_by="series", each series' (loc, scale) [n_series, Cy] computed
    elsewhere (`train_series_stats` of the training store, for forecasts of new input); default:
    those of this store's train rows.
    num_workers: DataLoader worker processes (0: build batches in this process); cache_mb:
    decoded chunk cache per process; pin_memory: page-locked batches for faster GPU copies.
    drop_last_of: keep whole batches of N forecast starts per series only (see WindowIndex).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike,
        spec: WindowSpec,
        *,
        split: str = "train",
        split_spec: dict | None = None,
        mode: str | None = None,
        global_batch_size: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_steps: int | None = None,
        sample_by: str = "window",
        series_weights: np.ndarray | None = None,
        shuffle_group_blocks: int = 16,
        scaling: str = "standard",
        scale_by: str = "window",
        series_stats: tuple[np.ndarray, np.ndarray] | None = None,
        num_workers: int = 0,
        cache_mb: float = 256,
        pin_memory: bool = False,
        drop_last_of: int = 0,
    ):
        store = store if isinstance(store, Store) else Store(store)
        rank, world_size, global_batch_size = int(rank), int(world_size), int(global_batch_size)
        mode = mode or ("epoch" if split == "train" else "eval")
        if mode not in MODES:
            raise UserError(f"loader mode '{mode}' is not one of {', '.join(MODES)}")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise UserError(f"rank {rank} / world size {world_size}: need 0 <= rank < world size")
        if global_batch_size < 1:
            raise UserError(
                f"global batch size must be a positive integer, got {global_batch_size!r}"
            )
        if global_batch_size % world_size:
            raise UserError(
                f"global batch size {global_batch_size} is not divisible by world size "
                f"{world_size}: choose a global batch size that is a multiple of {world_size}"
            )
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        if drop_last_of < 0:
            raise UserError(f"the legacy drop-last batch must be >= 0 (0: off), got {drop_last_of}")
        scaling_mod.check(scaling, scale_by)
        self.store, self.spec, self.split, self.mode = store, spec, split, mode
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.scaling, self.scale_by = scaling, scale_by
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.split_spec = splits_mod.validate(store.splits if split_spec is None else split_spec)
        lo, hi = splits_mod.resolve(self.split_spec, store.lengths, split)
        self.index = WindowIndex(lo, hi, spec, len(store.roles.target), drop_last_of)
        N, G = self.n_windows, global_batch_size

        if mode == "epoch":
            self.batches_per_epoch = N // G
            if self.batches_per_epoch == 0:
                raise UserError(
                    f"split '{split}' holds {N} windows, fewer than the global batch size {G}: "
                    "lower the global batch size, input_size or horizon"
                )
        elif mode == "sampled":
            self.batches_per_epoch = int(num_steps) if num_steps else max(1, N // G)
        else:
            self.batches_per_epoch = -(-N // G)
        weights = None if series_weights is None else np.asarray(series_weights, np.float64)
        # The order depends on what decides which windows come in which sequence; the state
        # also pins what decides a batch's content (batch size, epoch length, scaling).
        weights_hash = None if weights is None else hashlib.blake2b(weights.tobytes()).hexdigest()
        order_settings = {
            "spec": spec.to_dict(), "split": split, "split_spec": self.split_spec, "mode": mode,
            "sample_by": sample_by if mode == "sampled" else None,
            "series_weights": weights_hash if mode == "sampled" else None,
            "shuffle_group_blocks": shuffle_group_blocks if mode == "epoch" else None,
            **({"drop_last_of": drop_last_of} if drop_last_of else {}),
        }
        self.order_hash = _hash_int(json.dumps(order_settings, sort_keys=True, default=str))
        settings = {**order_settings, "global_batch_size": G, "scaling": scaling,
                    "scale_by": scale_by, "batches_per_epoch": self.batches_per_epoch}
        self.settings_hash = _hash_int(json.dumps(settings, sort_keys=True, default=str))
        self._fingerprint_int = _hash_int(store.fingerprint)
        self._order_args = dict(sample_by=sample_by, series_weights=weights,
                                group_blocks=int(shuffle_group_blocks))
        self._series_loc = self._series_scale = None
        if scale_by == "series" and scaling != "none":
            if series_stats is None:
                series_stats = train_series_stats(store, self.split_spec, scaling)
            self._series_loc, self._series_scale = _checked_stats(series_stats, store)
        self._cache_bytes = int(cache_mb * 2**20)
        self.seed = int(seed)
        self._epoch, self._consumed = 0, 0
        self._cursor = [0, 0, self.batches_per_epoch]  # what the DataLoader's sampler reads
        self._build(self.seed)

    def _build(self, seed: int) -> None:
        """(Re)make the order and the batch dataset for `seed`; workers restart with them."""
        self.seed = int(seed)
        key = (self.seed, self._fingerprint_int, self.order_hash)
        a = self._order_args
        if self.mode == "epoch":
            # one block per chunk: the windows whose reads start in it (all in its slot)
            R, rows = self.store.chunk_rows, self.store.n_timesteps
            borders = np.append(np.arange(0, rows, R), rows)
            block_starts = self.index.first_ids_at_rows(self.store.indptr, borders)
            order = EpochOrder(block_starts, a["group_blocks"], key)
        elif self.mode == "sampled":
            order = SampledOrder(self.index.offsets, key, sample_by=a["sample_by"],
                                 series_weights=a["series_weights"])
        else:
            order = EvalOrder(self.n_windows)
        self._batches = WindowBatches(self.store, self, order, self._cache_bytes)
        self._dataloader = None

    # -- sizes --------------------------------------------------------------------------
    @property
    def n_windows(self) -> int:
        """Windows of the split (univariate: one per target channel and forecast start)."""
        return self.index.n_windows

    @property
    def epoch(self) -> int:
        return self.state_dict()["epoch"]

    def gather(self, series, channel, t) -> dict[str, torch.Tensor]:
        """The batch of the given windows (series, target channel or -1, forecast start row),
        cut and scaled as training batches are; for windows no split names (forecasts)."""
        return self._batches.gather(np.asarray(series), np.asarray(channel), np.asarray(t))

    @property
    def order(self):
        """The window order (`tsforge.data.order`): `order.ids(epoch, positions)`."""
        return self._batches.order

    @property
    def batches(self) -> WindowBatches:
        """The picklable batch builder; `batches.gather(series, channel, t)` cuts windows
        (what a mixture's store source calls in the workers)."""
        return self._batches

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{epoch, batches_consumed, seed, fingerprint, settings_hash}: where to resume."""
        epoch, consumed = self._epoch, self._consumed
        if consumed >= self.batches_per_epoch and self.mode != "eval":
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "batches_consumed": consumed, "seed": self.seed,
                "fingerprint": self.store.fingerprint, "settings_hash": self.settings_hash}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; its seed replaces this loader's (the run's order goes on)."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise UserError(
                f"loader state lacks {', '.join(missing)}: it is not a WindowLoader state"
            )
        if state["fingerprint"] != self.store.fingerprint:
            raise UserError(
                f"loader state belongs to store fingerprint {state['fingerprint']}, but "
                f"{self.store.path} has {self.store.fingerprint}: resume with the store the "
                "run was trained on, or start a new run"
            )
        if int(state["settings_hash"]) != self.settings_hash:
            raise UserError(
                "loader state was saved with other loader settings (window spec, split, mode, "
                "global batch size, sampling or scaling): resume with the run's settings, "
                "or start a new run"
            )
        consumed = int(state["batches_consumed"])
        if not 0 <= consumed <= self.batches_per_epoch:
            raise UserError(f"loader state has {consumed} batches consumed, "
                            f"outside 0..{self.batches_per_epoch}")
        if int(state["seed"]) != self.seed:
            self._build(int(state["seed"]))
        self._epoch, self._consumed = int(state["epoch"]), consumed


_SERIES_STATS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def train_series_stats(
    store: Store, split_spec: dict, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series loc / scale of the train rows, remembered for the process's last few
    stores, so the train, val and test loaders of a run share one pass over the store."""
    key = (store.fingerprint, json.dumps(split_spec, sort_keys=True), method)
    if key not in _SERIES_STATS:
        _, train_hi = splits_mod.resolve(split_spec, store.lengths, "train")
        targets = store.column_index(store.roles.target)
        _SERIES_STATS[key] = scaling_mod.fit_series(store, train_hi, targets, method)
        if len(_SERIES_STATS) > 4:
            _SERIES_STATS.popitem(last=False)
    return _SERIES_STATS[key]


def _checked_stats(stats, store: Store) -> tuple[np.ndarray, np.ndarray]:
    """Given (loc, scale), float32 [n_series, Cy]: one row per series of `store`."""
    want = (store.n_series, len(store.roles.target))
    loc, scale = (np.ascontiguousarray(x, dtype=np.float32) for x in stats)
    if loc.shape != want or scale.shape != want:
        raise ValueError(f"series_stats must be two arrays of shape {want} (series, targets), "
                         f"got {loc.shape} and {scale.shape}")
    return loc, scale


def _hash_int(text: str) -> int:
    """A stable non-negative 63-bit integer of a string."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
