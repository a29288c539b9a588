"""The package's layering, read from the source's import statements.

Data flows one way (cli → config → data → models → engine → analysis → report); the lower
modules never import the higher ones, and no module imports another module's private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spikeseg"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every import in ``path`` (also in functions)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names]))
    return out


MODULES = sorted(SRC.rglob("*.py"))


def _importers_of(prefix: str, within: str) -> list[str]:
    bad = []
    for path in MODULES:
        mod = _module_name(path)
        if not (mod == within or mod.startswith(within + ".")):
            continue
        for target, names in _imports(path):
            full = [target] + [f"{target}.{n}" for n in names]
            if any(t == prefix or t.startswith(prefix + ".") for t in full):
                bad.append(f"{mod} imports {target}")
    return bad


@pytest.mark.parametrize("low,high", [
    ("spikeseg.neurons", "spikeseg.data"),
    ("spikeseg.norm", "spikeseg.data"),
    ("spikeseg.encoding", "spikeseg.data"),
    ("spikeseg.models", "spikeseg.engine"),
    ("spikeseg.models", "spikeseg.convert"),
    ("spikeseg.models", "spikeseg.data"),
    ("spikeseg.convert.algorithm", "spikeseg.engine"),
    ("spikeseg.engine", "spikeseg.convert"),
    ("spikeseg.engine", "spikeseg.analysis"),
    ("spikeseg.data", "spikeseg.engine"),
    ("spikeseg.data", "spikeseg.models"),
])
def test_lower_modules_do_not_import_higher_ones(low, high):
    assert _importers_of(high, low) == []


def test_the_library_never_imports_the_cli():
    bad = [m for m in _importers_of("spikeseg.cli", "spikeseg")
           if not m.startswith(("spikeseg.cli ", "spikeseg.__main__ "))]
    assert bad == []


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in MODULES:
        for target, names in _imports(path):
            if not target.startswith("spikeseg"):
                continue
            bad += [f"{_module_name(path)}: {target}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
            if any(part.startswith("_") and not part.startswith("__")
                   for part in target.split(".")):
                bad.append(f"{_module_name(path)}: {target}")
    assert bad == []
