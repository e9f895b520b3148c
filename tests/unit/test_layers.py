"""The package's layers, and that every import runs down them (or within one).

    pytest tests/unit/test_layers.py

From the bottom: shared vocabulary (errors, forecast column names, metrics, losses); data and
models, which know nothing of configs; config (schemas and the checks before launch); train;
then what uses a trained run (runs) and what starts training (launchers), which do not use
each other; the search (tune), which starts runs and reads them; the command line on top.
Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tsforge

PACKAGE = Path(tsforge.__file__).parent
LAYERS = {
    "errors": 0, "forecasts": 0, "__init__": 0,
    "metrics": 1, "losses": 1,
    "data": 2, "models": 2,
    "config": 3,
    "train": 4,
    "runs": 5, "launchers": 5,
    "tune": 6,
    "cli": 7, "launch": 7, "__main__": 7,
}  # fmt: skip


def part(module: str) -> str:
    """'tsforge.data.loader' -> 'data'; 'tsforge' -> '__init__'."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported tsforge module, line) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))  # fmt: skip
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found += [(module, t, node.lineno) for t in targets
                      if t == "tsforge" or t.startswith("tsforge.")]  # fmt: skip
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {part(m) for m, _, _ in imports()}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_imports_run_down_the_layers():
    up = [f"{m}:{line} imports {t}" for m, t, line in imports()
          if part(t) in LAYERS and LAYERS[part(t)] > LAYERS[part(m)]]  # fmt: skip
    assert not up, "imports up the layers:\n" + "\n".join(up)


def test_runs_and_launchers_do_not_use_each_other():
    across = [f"{m}:{line} imports {t}" for m, t, line in imports()
              if {part(m), part(t)} == {"runs", "launchers"}]  # fmt: skip
    assert not across, "\n".join(across)
