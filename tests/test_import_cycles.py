"""Imports run one way: no cycle between the package's modules, counting every import statement.

Type-checking imports (``if TYPE_CHECKING:``) and function-local imports count as much as the ones at
the top of a module: they hide a cycle from the interpreter, not from a reader. A module depends on the
module it imports from (``from .a import b`` on ``a``, or on ``a.b`` when ``b`` is a submodule);
importing a submodule is not counted as depending on its package's ``__init__``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import optuna_diffusion

PACKAGE = Path(optuna_diffusion.__file__).parent


def module_files(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` (a package is named by its ``__init__``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: line of the first such import}, every import statement included."""
    modules = module_files(package)
    root = package.name

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names if alias.name.split(".")[0] == root]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != root:
                    continue
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base) for alias in node.names]
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(
        f"{a} -> {b} (line {line})" for a in component for b, line in sorted(graph[a].items()) if b in inside
    )


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and "optuna_diffusion.models" in graph["optuna_diffusion.generation"]  # the walk sees imports
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, component) for component in found)


def test_the_walk_counts_type_checking_and_function_local_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("import pkg.a\ng = 1\n")
    (package / "d.py").write_text("from .a import *\n")  # a leaf that imports a module of the cycle

    graph = import_graph(package)

    assert graph["pkg.a"] == {"pkg.sub.b": 3} and graph["pkg.sub.b"] == {"pkg.c": 2} and graph["pkg.c"] == {"pkg.a": 1}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_the_command_line_loads_without_torch_and_the_package_exports_stay_whole():
    """``optuna-diffusion --help`` imports the package lazily (PEP 562): neither torch nor Optuna."""
    code = (
        "import sys\n"
        "import optuna_diffusion.cli\n"
        "assert not {'torch', 'optuna', 'diffusers'} & set(sys.modules), sorted({'torch', 'optuna', 'diffusers'} & set(sys.modules))\n"
        "import optuna_diffusion.apply\n"  # the submodule named like the function must not hide it
        "from optuna_diffusion import Plan, apply, TimestepSampler\n"
        "import optuna_diffusion\n"
        "assert callable(apply) and optuna_diffusion.apply is apply and Plan.__module__ == 'optuna_diffusion.plan'\n"
        "assert set(optuna_diffusion.__all__) <= set(dir(optuna_diffusion))\n"
        "assert optuna_diffusion.blocks.find_blocks is optuna_diffusion.find_blocks\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
