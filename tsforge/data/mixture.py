"""Mixtures of sources for pretraining: one stream of univariate windows drawn from several
stores and generators (kernelsynth, randomwalk, profiles) by weight (`data=mixture`; the
README's "Mixtures for pretraining").

    from tsforge.data.mixture import Mixture, SourceSpec, MixtureLoader
    mix = Mixture([SourceSpec("etth1", "store", path="etth1.zarr", weight=1.0),
                   SourceSpec("kernelsynth", "kernelsynth", weight=1.0)])
    spec = WindowSpec(input_size=96, horizon=24)
    train = MixtureLoader(mix, spec, split="train", global_batch_size=256, rank=0,
                          world_size=1, seed=0, num_workers=2)
    for batch in train: ...        # batch["source"] [B] int64: index into mix.labels
    train.shares()                 # {label: fraction of the windows so far}
    state = train.state_dict()     # a handful of integers; load_state_dict resumes exactly

Windows. Every window is univariate (each target channel of each series is a series) and has
the run's input_size + horizon; a series too short for a window gives none, and a source with
no training window is refused, by name. Covariates are not read (`hist_exog`, `futr_exog`,
`stat_exog` have width 0): sources do not share them. Windows are scaled per window.

The order (training). Global window p of epoch e comes from source
`searchsorted(cdf(w), u)`, u uniform from the generator of block p // SAMPLE_BLOCK seeded by
(seed, the mixture's fingerprint, its settings, e, block) (`order.generator`), so any position
is computed without the ones before it; the window within that source is what the source's
own sampled order (`order.SampledOrder`, uniform with replacement over the source's windows)
puts at position p of epoch e. A generated window (KernelSynth, or a prior of
`tsforge.data.priors`: randomwalk, profiles) is generated from the seed
(seed, source index, split, e, p). The order is thus a pure function of (seed, epoch, position,
settings, the sources' fingerprints): not of the world size nor of the number of workers.
Global batch k is positions [kG, (k+1)G); rank r takes its part (`order.rank_positions`), and
workers build whole batches, as `WindowLoader` does (`loader.BatchStream`). An epoch is
`max(1, sum of the sources' sizes // G)` batches; epochs only renew the streams.

Weights. Given per source (`weight`, any positive numbers, normalised to sum 1), or, when no
source has one, w_i = n_i^(1/T) / sum_j n_j^(1/T), with n_i the source's training windows
(a generated source counts as its `windows`, default 1,000,000 as Chronos's KernelSynth set)
and T the temperature (default 1: proportional to size; larger T flattens toward uniform).

Evaluation (val/test). The held-out windows of each source, concatenated in source order and
visited once each across ranks (pads masked with `valid=False`), so the existing Evaluator
scores them as one split: stores give their own val/test split (a store without one gives
none), generated sources EVAL_WINDOWS windows each from seeds no training window uses (the
split is part of the seed). Metrics are pooled over every held-out window.

State: {epoch, batches_consumed, seed, fingerprint, settings_hash, source_windows}, the last
the global windows drawn from each source so far (for `shares()`, the realised mixture).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tsforge.data import kernelsynth, priors, splits
from tsforge.data import scaling as scaling_mod
from tsforge.data.batches import _mask
from tsforge.data.loader import STATE_KEYS, BatchStream, WindowLoader, _hash_int
from tsforge.data.order import SAMPLE_BLOCK, generator, rank_positions
from tsforge.data.store import ColumnRoles, Store
from tsforge.data.transport import layout_of, pack_message
from tsforge.data.windows import WindowIndex, WindowSpec
from tsforge.errors import UserError

# generated sources, by name: each a function (seeds, length) -> float32 [B, length]
SAMPLERS = {"kernelsynth": kernelsynth.sample, **priors.GENERATED}
GENERATORS = tuple(SAMPLERS)
DEFAULT_GENERATED_WINDOWS = 1_000_000  # a generated source's size for temperature weights
EVAL_WINDOWS = 512  # held-out windows of a generated source, per split
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
MIXTURE_STATE_KEYS = (*STATE_KEYS, "source_windows")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One source of a mixture: a store (`kind="store"`, `path`) or a generator (`kind` one
    of GENERATORS). `label` names it in logs (`train/loss/<label>`)."""

    label: str
    kind: str
    path: str | None = None
    weight: float | None = None
    windows: int | None = None  # a generated source's size, for temperature weights


class Mixture:
    """The sources of a mixture, opened: what `data.chosen.store` returns for data=mixture.
    Stands in for a store where the run needs one: `fingerprint`, `roles` (one target)."""

    def __init__(self, specs: list[SourceSpec], temperature: float | None = None):
        if not specs:
            raise UserError("data.sources is empty: list at least one source")
        self.specs = list(specs)
        self.temperature = temperature
        self.stores = [Store(s.path) if s.kind == "store" else None for s in self.specs]
        self.labels = [s.label for s in self.specs]
        parts = [
            {"label": s.label, "kind": s.kind, "weight": s.weight, "windows": s.windows,
             "fingerprint": st.fingerprint if st is not None else None}
            for s, st in zip(self.specs, self.stores)
        ]  # fmt: skip
        parts.append({"temperature": temperature, "kernelsynth": kernelsynth.KERNEL_BANK})
        if any(s.kind in priors.GENERATED for s in self.specs):  # older mixtures keep theirs
            parts.append({"priors": priors.VERSION})
        text = json.dumps(parts, sort_keys=True, default=str)
        self.fingerprint = "mixture-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        self.roles = ColumnRoles(target=("y",))
        self.splits: dict = {}

    def sources(self, spec: WindowSpec, split: str, seed: int, scaling: str,
                cache_mb: float) -> list:  # fmt: skip
        """The sources' window cutters for one split."""
        out = []
        for i, (s, st) in enumerate(zip(self.specs, self.stores)):
            if st is None:
                out.append(GeneratedSource(s, i, spec, split, seed, scaling))
            else:
                out.append(StoreSource(s, st, spec, split, seed, scaling, cache_mb))
        return out

    def weights(self, sizes: list[int]) -> np.ndarray:
        """Normalised weights: the given ones, else n_i^(1/T) (see module doc)."""
        given = [s.weight for s in self.specs]
        if all(w is not None for w in given):
            w = np.asarray(given, np.float64)
        else:
            T = 1.0 if self.temperature is None else float(self.temperature)
            w = np.asarray(sizes, np.float64) ** (1.0 / T)
        return w / w.sum()


class StoreSource:
    """A store's windows of one split, cut by a WindowLoader's picklable batch builder;
    training windows drawn with replacement (its sampled order), held-out ones in order."""

    def __init__(self, s: SourceSpec, st: Store, spec: WindowSpec, split: str, seed: int,
                 scaling: str, cache_mb: float):  # fmt: skip
        self.label = s.label
        lo, hi = splits.resolve(splits.validate(st.splits), st.lengths, split)
        self.n_windows = WindowIndex(lo, hi, spec, len(st.roles.target)).n_windows
        if split == "train" and self.n_windows == 0:
            raise UserError(
                f"data.sources: source '{s.label}' ({st.path}) has no training window of "
                f"input_size={spec.input_size} + horizon={spec.horizon}: shorten them, or "
                "drop the source"
            )
        self.size = self.n_windows
        if self.n_windows:
            loader = WindowLoader(st, spec, split=split, mode="sampled" if split == "train"
                                  else "eval", global_batch_size=1, seed=seed, scaling=scaling,
                                  cache_mb=cache_mb)  # fmt: skip
            self.order, self.cutter = loader.order, loader.batches

    def cut(self, epoch: int, positions: np.ndarray, split: str) -> dict[str, np.ndarray]:
        """Training: the windows the source's order puts at `positions`; held out: windows
        `positions` (ids) of the split."""
        ids = self.order.ids(epoch, positions) if split == "train" else positions
        batch = self.cutter.gather(*self.cutter.index.locate(ids))
        return {k: batch[k].numpy() for k in _KEYS}


class GeneratedSource:
    """Generated series (KernelSynth, `tsforge.data.kernelsynth`, or a prior of
    `tsforge.data.priors`), one per window, seeded by (seed, source index, split, epoch,
    position); held-out splits have EVAL_WINDOWS each."""

    def __init__(self, s: SourceSpec, index: int, spec: WindowSpec, split: str, seed: int,
                 scaling: str):  # fmt: skip
        self.label, self.index, self.spec = s.label, index, spec
        self.sample = SAMPLERS[s.kind]
        self.seed, self.scaling = int(seed), scaling
        self.size = s.windows or DEFAULT_GENERATED_WINDOWS
        self.n_windows = self.size if split == "train" else EVAL_WINDOWS

    def cut(self, epoch: int, positions: np.ndarray, split: str) -> dict[str, np.ndarray]:
        L, W = self.spec.input_size, self.spec.window_size
        head = [self.seed, self.index, _SPLIT_CODE[split], int(epoch)]
        y_BW = self.sample([[*head, int(p)] for p in positions], W)
        y_in, y_out = (
            np.ascontiguousarray(y_BW[:, :L, None]),
            np.ascontiguousarray(y_BW[:, L:, None]),
        )
        (m_in, in_full), (m_out, out_full) = _mask(y_in), _mask(y_out)
        loc, scale = scaling_mod.window_stats(y_in, m_in, self.scaling)
        if self.scaling != "none":
            scaling_mod.apply(y_in, loc, scale, None if in_full else m_in)
            scaling_mod.apply(y_out, loc, scale, None if out_full else m_out)
        B = len(positions)
        return {"insample_y": y_in, "insample_mask": m_in, "outsample_y": y_out,
                "outsample_mask": m_out, "loc": loc, "scale": scale,
                "series": np.asarray(positions, np.int64), "channel": np.zeros(B, np.int64),
                "t": np.full(B, L, np.int64)}  # fmt: skip


_KEYS = ("insample_y", "insample_mask", "outsample_y", "outsample_mask", "loc", "scale",
         "series", "channel", "t")  # fmt: skip


class MixtureBatches(torch.utils.data.Dataset):
    """Map-style dataset: item (epoch, batch, slot) is this rank's part of that global batch
    (see the module doc); picklable for the DataLoader's workers."""

    def __init__(self, sources: list, cdf: np.ndarray, key: tuple[int, ...], spec: WindowSpec,
                 split: str, n_batches: int, G: int, rank: int, world: int):  # fmt: skip
        self.sources, self.cdf, self.key, self.spec, self.split = sources, cdf, key, spec, split
        self.n_batches, self.G, self.rank, self.world = n_batches, G, rank, world
        self.offsets = np.concatenate([[0], np.cumsum([s.n_windows for s in sources])])
        self.slabs: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, item: tuple[int, int, int]):
        epoch, batch, slot = item
        return pack_message(self.build(epoch, batch), self.slabs, slot)

    def source_of(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Training: the source of each global position (a draw by weight, per block)."""
        positions = np.asarray(positions, np.int64)
        out = np.empty(len(positions), np.int64)
        block = positions // SAMPLE_BLOCK
        for b in np.unique(block):
            sel = block == b
            u = generator(self.key, epoch, int(b)).random(SAMPLE_BLOCK)
            draws = np.searchsorted(self.cdf, u * self.cdf[-1], side="right")
            out[sel] = np.minimum(draws, len(self.cdf) - 1)[positions[sel] - b * SAMPLE_BLOCK]
        return out

    def build(self, epoch: int, batch: int) -> dict[str, torch.Tensor]:
        positions = rank_positions(batch, self.G, self.rank, self.world)
        B, N = len(positions), int(self.offsets[-1])
        if self.split == "train":
            source, local, valid = self.source_of(epoch, positions), positions, np.ones(B, bool)
        else:  # held out: the concatenation of the sources' windows; pads repeat window 0
            valid = positions < N
            at = np.where(valid, positions, 0)
            source = np.searchsorted(self.offsets, at, side="right") - 1
            local = at - self.offsets[source]
        out = self.empty(B)
        for s in np.unique(source):
            sel = source == s
            part = self.sources[s].cut(epoch, local[sel], self.split)
            for k in _KEYS:
                out[k][sel] = part[k]
        out["valid"], out["source"] = valid, source
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def empty(self, B: int) -> dict[str, np.ndarray]:
        L, H, W = self.spec.input_size, self.spec.horizon, self.spec.window_size
        f32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        return {
            "insample_y": f32(B, L, 1), "insample_mask": f32(B, L, 1),
            "outsample_y": f32(B, H, 1), "outsample_mask": f32(B, H, 1),
            "hist_exog": f32(B, L, 0), "futr_exog": f32(B, W, 0), "stat_exog": f32(B, 0),
            "loc": f32(B, 1, 1), "scale": f32(B, 1, 1),
            "series": np.zeros(B, np.int64), "channel": np.zeros(B, np.int64),
            "t": np.zeros(B, np.int64), "valid": np.ones(B, bool),
            "source": np.zeros(B, np.int64),
        }  # fmt: skip

    def batch_nbytes(self) -> int:
        B = self.G // self.world
        return layout_of({k: torch.from_numpy(v) for k, v in self.empty(B).items()})[1]


class MixtureLoader(BatchStream):
    """This rank's batches of a mixture's windows, for one split (see the module docstring).
    The arguments are WindowLoader's; `num_steps`: training batches per epoch (default
    max(1, sum of sizes // global_batch_size))."""

    def __init__(self, mixture: Mixture, spec: WindowSpec, *, split: str = "train",
                 global_batch_size: int = 1024, rank: int = 0, world_size: int = 1,
                 seed: int = 0, num_steps: int | None = None, scaling: str = "standard",
                 num_workers: int = 0, cache_mb: float = 256,
                 pin_memory: bool = False):  # fmt: skip
        if spec.multivariate:
            raise UserError("a mixture's windows are univariate: set data.multivariate=false")
        G, world = int(global_batch_size), int(world_size)
        rank_positions(0, G, 0, world)  # a UserError when G is not a multiple of the world
        self.mixture, self.spec, self.split = mixture, spec, split
        self.mode = "sampled" if split == "train" else "eval"
        self.global_batch_size, self.rank, self.world_size = G, int(rank), world
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self._args = dict(scaling=scaling, cache_mb=cache_mb, num_steps=num_steps)
        self._build(int(seed))
        self._epoch, self._consumed = 0, 0
        self._cursor = [0, 0, self.batches_per_epoch]
        self._drawn = np.zeros(len(self.sources), np.int64)  # global windows per source

    def _build(self, seed: int) -> None:
        """(Re)make the sources, the order and the batch dataset for `seed`."""
        mixture, spec, split, G = self.mixture, self.spec, self.split, self.global_batch_size
        scaling, num_steps = self._args["scaling"], self._args["num_steps"]
        self.seed = seed
        self.sources = mixture.sources(spec, split, seed, scaling, self._args["cache_mb"])
        self.source_labels = list(mixture.labels)
        self.weights = mixture.weights([s.size for s in self.sources])
        N = self.n_windows = int(sum(s.n_windows for s in self.sources))
        if self.mode == "sampled":
            self.batches_per_epoch = int(num_steps) if num_steps else max(1, N // G)
        else:
            self.batches_per_epoch = -(-N // G)
        settings = {"spec": spec.to_dict(), "split": split, "weights": self.weights.tolist(),
                    "global_batch_size": G, "scaling": scaling,
                    "batches_per_epoch": self.batches_per_epoch}  # fmt: skip
        self.settings_hash = _hash_int(json.dumps(settings, sort_keys=True))
        key = (seed, _hash_int(mixture.fingerprint), self.settings_hash)
        self._batches = MixtureBatches(self.sources, np.cumsum(self.weights), key, spec, split,
                                       self.batches_per_epoch, G, self.rank,
                                       self.world_size)  # fmt: skip
        self._dataloader = None

    @property
    def store(self) -> Mixture:
        return self.mixture

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in super().__iter__():
            if self.mode == "sampled":  # the global batch just taken, whichever rank we are
                k, G = self._consumed - 1, self.global_batch_size
                drawn = self._batches.source_of(self._epoch, np.arange(k * G, (k + 1) * G))
                self._drawn += np.bincount(drawn, minlength=len(self.sources))
            yield batch

    def shares(self) -> dict[str, float]:
        """The realised mixture: each source's fraction of the training windows so far."""
        total = max(int(self._drawn.sum()), 1)
        return {label: float(n) / total for label, n in zip(self.source_labels, self._drawn)}

    def state_dict(self) -> dict:
        epoch, consumed = self._epoch, self._consumed
        if consumed >= self.batches_per_epoch and self.mode != "eval":
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "batches_consumed": consumed, "seed": self.seed,
                "fingerprint": self.mixture.fingerprint, "settings_hash": self.settings_hash,
                "source_windows": [int(n) for n in self._drawn]}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in MIXTURE_STATE_KEYS if k not in state]
        if missing:
            raise UserError(
                f"loader state lacks {', '.join(missing)}: it is not a mixture's "
                "loader state: resume with the run's data settings"
            )
        if state["fingerprint"] != self.mixture.fingerprint:
            raise UserError(
                f"loader state belongs to mixture {state['fingerprint']}, but data.sources "
                f"give {self.mixture.fingerprint}: resume with the run's sources (same stores, "
                "weights, temperature), or start a new run"
            )
        if int(state["settings_hash"]) != self.settings_hash:
            raise UserError(
                "loader state was saved with other loader settings (window spec, "
                "global batch size, scaling): resume with the run's settings"
            )
        consumed = int(state["batches_consumed"])
        if not 0 <= consumed <= self.batches_per_epoch:
            raise UserError(
                f"loader state has {consumed} batches consumed, outside 0..{self.batches_per_epoch}"
            )
        if int(state["seed"]) != self.seed:  # the run's order goes on, as WindowLoader's
            self._build(int(state["seed"]))
        drawn = np.asarray(state["source_windows"], np.int64)
        if drawn.shape != self._drawn.shape:
            raise UserError(
                "loader state counts another number of sources: resume with the run's data.sources"
            )
        self._epoch, self._consumed, self._drawn = int(state["epoch"]), consumed, drawn.copy()


def source_label(name: str | None, path: str | None) -> str:
    """A source's name in logs: its registry or generator name, else its store's folder."""
    if name:
        return name
    return Path(str(path)).name.removesuffix(".zarr") or "store"
