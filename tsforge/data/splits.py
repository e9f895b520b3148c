"""Train / validation / test splits as forecast ranges per series.

A split spec is a small dict kept in the store's attrs (and overridable from the config):

    {"kind": "none"}                                        everything is train
    {"kind": "borders", "train": 8640, "val": 11520, "test": 14400}
        row borders from each series' start (the long-horizon ETT protocol)
    {"kind": "ratio", "train": 0.7, "test": 0.2}            int(0.7 n) | rest | int(0.2 n)
    {"kind": "holdout", "horizon": 48}                      test = last 48 rows, val = the 48
                                                            before, train = the rest (M4)
    {"kind": "holdout", "horizon": 48, "test": 0}           no test rows: val = last 48 rows,
                                                            train = the rest (`holdout:48`)

`parse` is the one reader of a split as users write it (`tsforge data ingest --split`,
`data.split=` at launch, a config or a dict): a preset name, `holdout:H`, or a JSON spec.

`resolve` turns a spec into, per split, the rows [lo, hi) in which a window's *forecast* must
lie. The input part of a window may reach back before `lo` (the validation and test inputs
reach into the previous split, as the published protocols do); it never reaches before row 0
unless the loader pads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import numpy as np

from tsforge.errors import UserError

SPLIT_NAMES = ("train", "val", "test")
KINDS = ("none", "borders", "ratio", "holdout")

# Named presets: the protocols of the standard benchmarks (ETT borders, the 70/10/20 ratio, M4).
PRESETS: dict[str, dict] = {
    "none": {"kind": "none"},
    "ett_hour": {"kind": "borders", "train": 8640, "val": 11520, "test": 14400},
    "ett_minute": {"kind": "borders", "train": 34560, "val": 46080, "test": 57600},
    "ratio_70_10_20": {"kind": "ratio", "train": 0.7, "test": 0.2},
    "m4_hourly": {"kind": "holdout", "horizon": 48},
}


FORMS = (
    f"a preset ({', '.join(PRESETS)}), holdout:H (the last H steps of each series for "
    "validation, no test rows) or a JSON spec such as '{\"kind\": \"holdout\", \"horizon\": 48}'"
)


def parse(split, flag: str = "--split") -> dict | None:
    """A split as users write it, as a checked spec; None when `split` is None or empty.

    `split` is a preset name (`PRESETS`), `holdout:H` (validation on the last H steps of each
    series, no test rows: for data whose test lies in another file, as M4's does), a JSON
    object, or a mapping. Anything else is a `UserError` naming `flag` and these forms.
    """
    if split is None:
        return None
    if isinstance(split, Mapping):
        return _checked(dict(split), flag, split)
    text = str(split).strip()
    if not text:
        return None
    holdout = re.fullmatch(r"holdout:\s*(\S*)", text)
    if holdout:
        h = holdout.group(1)
        if not re.fullmatch(r"\d+", h) or int(h) < 1:
            raise UserError(f"{flag} '{text}': H in holdout:H must be a whole number of steps "
                            "of at least 1, e.g. holdout:48")  # fmt: skip
        return validate({"kind": "holdout", "horizon": int(h), "test": 0})
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            why = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise UserError(f"{flag} '{text}' is not valid JSON ({why}): give {FORMS}") from None
        return _checked(spec, flag, text)
    if text not in PRESETS:
        raise UserError(f"{flag} '{text}' is an unknown split preset (nor holdout:H, nor JSON): "
                        f"give {FORMS}")
    return preset(text)


def _checked(spec, flag: str, shown) -> dict:
    try:
        return validate(spec)
    except UserError as err:
        raise UserError(f"{flag} '{shown}': {err}") from None


def preset(name: str) -> dict:
    """A named split spec (`ett_hour`, `ratio_70_10_20`, `m4_hourly`, ...)."""
    if name not in PRESETS:
        raise UserError(f"unknown split preset '{name}': use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def validate(spec: dict) -> dict:
    """Check a split spec's keys and values; returns it as a plain dict."""
    if spec is not None and not isinstance(spec, Mapping):
        raise UserError(f"a split spec is a mapping such as {PRESETS['m4_hourly']}, got {spec!r}")
    spec = dict(spec or {"kind": "none"})
    kind = spec.get("kind")
    if kind not in KINDS:
        raise UserError(f"split kind '{kind}' is not one of {', '.join(KINDS)}")
    need = {"none": (), "borders": SPLIT_NAMES, "ratio": ("train", "test"), "holdout": ("horizon",)}
    optional = {"holdout": ("test",)}.get(kind, ())
    for key in need[kind]:
        if key not in spec:
            raise UserError(f"split of kind '{kind}' needs the key '{key}'")
    extra = sorted(set(spec) - {"kind", *need[kind], *optional})
    if extra:
        raise UserError(f"split of kind '{kind}' has no key '{extra[0]}': its keys are "
                        f"{', '.join(need[kind] + optional) or 'none'}")  # fmt: skip
    # Rows are counted in whole numbers; ratios are fractions (a bool is neither).
    for key in need[kind] + tuple(k for k in optional if k in spec):
        value = spec[key]
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or isinstance(value, float) and np.isfinite(value)
        if not (number if kind == "ratio" else whole):
            want = "a fraction" if kind == "ratio" else "a whole number of rows"
            raise UserError(f"split {kind} '{key}' must be {want}, got {value!r}")
    if kind == "borders" and not 0 < spec["train"] <= spec["val"] <= spec["test"]:
        raise UserError("split borders must satisfy 0 < train <= val <= test")
    ratios_ok = spec.get("train", 0) > 0 and spec.get("test", 0) >= 0
    if kind == "ratio" and not (ratios_ok and spec["train"] + spec["test"] <= 1):
        raise UserError("split ratios must satisfy 0 < train and train + test <= 1")
    if kind == "holdout" and int(spec["horizon"]) < 1:
        raise UserError("split holdout horizon must be >= 1")
    if kind == "holdout" and int(spec.get("test", 0)) < 0:
        raise UserError("split holdout test must be >= 0 (0: no test rows)")
    return spec


def resolve(spec: dict, lengths: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Forecast rows [lo, hi) of `split` for every series of the given lengths (int64 arrays)."""
    if split not in SPLIT_NAMES:
        raise UserError(f"split '{split}' is not one of {', '.join(SPLIT_NAMES)}")
    spec = validate(spec)
    n = np.asarray(lengths, dtype=np.int64)
    kind = spec["kind"]
    if kind == "none":
        b1, b2 = n, n
    elif kind == "borders":
        b1 = np.minimum(n, int(spec["train"]))
        b2 = np.minimum(n, int(spec["val"]))
        n = np.minimum(n, int(spec["test"]))
    elif kind == "ratio":
        b1 = (spec["train"] * n).astype(np.int64)
        b2 = n - (spec["test"] * n).astype(np.int64)
    else:  # holdout: `test` rows at the end (default: horizon), the `horizon` before for val
        h = int(spec["horizon"])
        b2 = np.maximum(n - int(spec.get("test", h)), 0)
        b1 = np.maximum(b2 - h, 0)
    lo, hi = {"train": (np.zeros_like(n), b1), "val": (b1, b2), "test": (b2, n)}[split]
    return lo.astype(np.int64), np.maximum(hi, lo).astype(np.int64)
