"""The rooms show the architecture: no module imports one that imports it back, and lower layers know nothing of
higher ones. Read from the source with `ast` (imports inside functions count; those under `if TYPE_CHECKING:` do
not), so the test holds without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("journal", "kernel_ext", "widgets")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            found += [n for child in node.orelse for n in _imports(ast.Module(body=[child], type_ignores=[]))]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        found += _imports(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` depends on the module it names
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)  # a package's own __init__ is no loop of its modules
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


def test_no_module_imports_one_that_imports_it_back():
    loops = _loops(_graph())
    assert loops == [], "import loops: " + "; ".join(" <-> ".join(loop) for loop in loops)


def test_lower_layers_know_nothing_of_higher_ones():
    graph = _graph()
    wrong = []
    for name, targets in graph.items():
        for target in targets:
            if name.startswith("journal") and not target.startswith("journal"):
                wrong.append(f"{name} -> {target} (the journal knows nothing of the runtime)")
            if name.startswith("kernel_ext") and target.startswith("widgets"):
                wrong.append(f"{name} -> {target} (widgets plug themselves in)")
            if name == "kernel_ext.config" and target.startswith(("kernel_ext.runtime", "kernel_ext.notebook")):
                wrong.append(f"{name} -> {target} (settings know nothing of sessions)")
            if name.startswith("kernel_ext.history.model") and target.startswith("kernel_ext.history."):
                wrong.append(f"{name} -> {target} (the history's model draws no pictures)")
            if not name.startswith("kernel_ext.engines") and target.startswith("kernel_ext.engines") and not (
                    name.startswith(("kernel_ext.cli", "kernel_ext.notebook"))):
                wrong.append(f"{name} -> {target} (an engine is a target above the runtime)")
    assert wrong == []


def test_the_graph_sees_the_imports_it_checks():
    # A test that reads nothing passes anything: the reader must see a few known edges.
    graph = _graph()
    assert "kernel_ext.config" in graph["kernel_ext.runtime"]
    assert "journal._log" in graph["journal._store"]
    assert "journal" in graph["kernel_ext.runtime"]
