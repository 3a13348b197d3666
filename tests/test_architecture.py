"""The house's rules, read from the source: no import circle (imports inside functions count), no floor
importing a higher one, and imports inside functions only for the heavy optional packages."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "svd_explorer"
# bottom to top: a module may import its own floor and the floors below it
FLOORS = [("errors", "files", "logs"), ("model",), ("text",), ("compress",), ("cache",), ("run",), ("figures",),
          ("study",), ("cli", "ui"), ("__init__", "__main__")]
HEAVY = {"ray", "lm_eval", "gradio", "playwright", "datasets", "pyarrow", "torchao"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(node, name: str, is_package: bool, known) -> list[str]:
    """The package's modules an import statement names (a `from package import module` names the module)."""
    if isinstance(node, ast.Import):
        bases = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = name.split(".") if is_package else name.split(".")[:-1]
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        bases = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for target in bases:
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name:
            out.append(target)
    return out


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(module -> modules it imports, [(module, statement)] of imports written inside functions)."""
    known = modules()
    edges, inner = {name: set() for name in known}, []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[name].update(imported(node, name, path.name == "__init__.py", known))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += [(name, ast.unparse(n)) for n in ast.walk(function)
                          if isinstance(n, (ast.Import, ast.ImportFrom))]
    return edges, inner


def floor(name: str) -> int:
    part = name.split(".")[1] if "." in name else "__init__"
    return next(i for i, names in enumerate(FLOORS) if part in names)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    edges, _ = graph()
    assert circles(edges) == []


def test_no_floor_imports_a_higher_one():
    edges, _ = graph()
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets if floor(b) > floor(a)]
    assert upward == []


def test_imports_inside_functions_are_heavy_optional_packages_only():
    _, inner = graph()
    light = [(name, text) for name, text in inner if text.split()[1].split(".")[0] not in HEAVY]
    assert light == []


def test_the_rules_catch_a_circle_and_an_upward_import():
    edges = {"svd_explorer.model.a": {"svd_explorer.run.b"}, "svd_explorer.run.b": {"svd_explorer.model.a"}}
    assert circles(edges) == [["svd_explorer.model.a", "svd_explorer.run.b"]]
    assert floor("svd_explorer.run.b") > floor("svd_explorer.model.a")
