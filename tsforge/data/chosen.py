"""The data a config chooses: the store `data.name` / `data.path` names, the split
`data.split` picks (else the store's own), and the checks made before a run directory exists.

    from tsforge.data.chosen import check_data, split_spec, store
    check_data(cfg.data)                  # a UserError naming what is wrong, before launch
    st = store(cfg.data)                  # data=mixture: a mixture.Mixture of its sources
    spec = split_spec(cfg.data, st)

The one place that reads the `data` section for the store and its split: training
(`train.builders`), evaluation and predict (`tsforge.runs`) and the checks at launch
(`config.checks`) all call it, so they cannot disagree.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from tsforge.data import registry
from tsforge.data.mixture import GENERATORS, Mixture, SourceSpec, source_label
from tsforge.data.store import Store
from tsforge.errors import UserError


def check_data(data: DictConfig) -> None:
    """Data settings that are wrong, checked before launch (the run directory is not made)."""
    if data.name == "mixture":
        for i, entry in enumerate(data.sources):  # the stores named by path open
            if entry.path:
                try:
                    Store(entry.path)
                except UserError as err:
                    raise UserError(f"data.sources[{i}].path: {err}") from None
    elif data.name == "store":
        st = store(data)  # exists and is a store of this schema, or a UserError saying so
        _check_train_target(data, st)
    metrics_unscaled(data)


def _check_train_target(data: DictConfig, st: Store) -> None:
    """A target with no finite value in the train split would train on nothing (NaN losses
    and metrics). Reads chunk by chunk and stops at the first finite value: one read for any
    store worth training on."""
    from tsforge.data import splits

    _, train_hi = splits.resolve(split_spec(data, st), st.lengths, "train")
    starts = st.indptr[:-1]
    ends = starts + np.minimum(train_hi, np.diff(st.indptr))
    target = st.column_index(st.roles.target)
    rows = st.chunk_rows
    for k in range(-(-st.n_timesteps // rows)):
        a, b = k * rows, min((k + 1) * rows, st.n_timesteps)
        row = np.arange(a, b)
        series = np.searchsorted(st.indptr, row, side="right") - 1
        in_train = row < ends[series]
        if in_train.any() and np.isfinite(st.rows(a, b)[in_train][:, target]).any():
            return
    raise UserError(
        f"data.path={data.path}: the target ({', '.join(st.roles.target)}) has no value in "
        "the train split (all NaN or empty): ingest the data with its values, or name the "
        "right column with --target"
    )


def store(data: DictConfig) -> Store | Mixture:
    """The store `data` names; for data=mixture, its sources opened (`mixture.Mixture`)."""
    if data.name == "mixture":
        return Mixture(mixture_sources(data), data.temperature)
    if data.name == "store":
        if not data.path:
            raise UserError("data=store needs data.path=<a store made by 'tsforge data ingest'>")
        return Store(data.path)
    return registry.prepare(data.name)


def mixture_sources(data: DictConfig) -> list[SourceSpec]:
    """data.sources as SourceSpecs: registry names prepared into stores (built once)."""
    out = []
    for entry in data.sources:
        label = source_label(entry.name, entry.path)
        if entry.name in GENERATORS:
            out.append(SourceSpec(label, entry.name, weight=entry.weight, windows=entry.windows))
            continue
        path = entry.path or str(registry.prepare(entry.name).path)
        out.append(SourceSpec(label, "store", path=path, weight=entry.weight))
    return out


def split_spec(data: DictConfig, st: Store) -> dict:
    """The split chosen at launch (`data.split`: a preset, `holdout:H`, JSON), else the store's."""
    from tsforge.data import splits

    return splits.parse(data.split, "data.split") or st.splits


def metrics_unscaled(data: DictConfig) -> bool:
    """Whether metrics are computed in the data's own units (`data.metrics_on=original`)."""
    if data.metrics_on not in ("original", "scaled"):
        raise UserError(f"data.metrics_on={data.metrics_on!r}: use original or scaled")
    if data.metrics_on == "scaled" and (data.scale_by != "series" or data.scaling == "none"):
        # per-window scaled values differ from window to window: metrics on them mean nothing
        raise UserError(
            "data.metrics_on=scaled needs data.scale_by=series (and a scaling): the metrics "
            "are then on train-standardized values; or use data.metrics_on=original"
        )
    return data.metrics_on == "original"
