"""A config as dotted keys: `{"data": {"horizon": 24}}` -> `{"data.horizon": 24}`.

    from tsforge.config.flat import flat
    flat(OmegaConf.to_container(cfg, resolve=True))

One reading for everything that compares or shows configs key by key: what may change on
resume, the columns of `tsforge runs list`, the HParams of TensorBoard.
"""

from __future__ import annotations

from typing import Any


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists and empty dicts stay values."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}
