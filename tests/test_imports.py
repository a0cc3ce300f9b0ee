"""The installed package's imports form no cycle, function-level imports included: a cycle means a
module that cannot be read (or loaded) without the one that depends on it, and a function-level
import only hides it until the call. Modules are named as installed: ``reference/`` is
``lnca_fast.reference``, ``kernels/`` ``lnca_fast.kernels``, ``bench/`` ``lnca_fast.bench``.

An edge is an import a module states: ``from .cell import Prepared`` -> ``lnca_fast.fast.cell``,
``from . import cell`` -> ``lnca_fast.fast.cell``, ``from .. import create_model`` -> ``lnca_fast``.
The parent packages Python initialises on the way are not edges (every ``__init__`` that re-exports
its modules would otherwise be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Installed package -> its folder in the checkout (pyproject.toml's package-dir).
PACKAGES = {"lnca_fast": "lnca_fast", "lnca_fast.reference": "reference", "lnca_fast.kernels": "kernels",
            "lnca_fast.bench": "bench"}


def installed_modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    modules = {}
    for package, folder in PACKAGES.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("").parts
            if folder == "lnca_fast" and rel and rel[0] in ("reference", "kernels", "bench"):
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            modules[".".join((package, *parts))] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            submodules = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [source, *submodules]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of an attribute path: its module
                target = target.rpartition(".")[0]
            if target:
                out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_finds_a_cycle_through_a_function_level_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from pkg import b\n")
    b.write_text("def main():\n    from pkg.a import x\n")
    known = {"pkg.a", "pkg.b"}
    graph = {"pkg.a": imports_of("pkg.a", a, known), "pkg.b": imports_of("pkg.b", b, known)}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_relative_imports_resolve_to_modules():
    known = set(installed_modules())
    nafca = imports_of("lnca_fast.fast.nafca", ROOT / "lnca_fast/fast/nafca.py", known)
    assert {"lnca_fast.fast.cell", "lnca_fast.fast.nafca_layout", "lnca_fast.reference.nafca"} <= nafca
    assert "lnca_fast.kernels.nafca_fwd" in nafca  # the launcher's function-level import counts


def test_the_installed_package_has_no_import_cycle():
    modules = installed_modules()
    known = set(modules)
    graph = {name: imports_of(name, path, known) for name, path in modules.items()}
    assert len(graph) > 100  # the whole package was scanned
    assert cycles(graph) == []
