"""The import graph of zoo/ and export/ has one direction: no cycle, export/ builds on zoo and never the reverse,
and an import inside a function is only for an optional or heavy dependency (named here, with its reason)."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGES = ("zoo", "export")
# Internal imports that stay inside a function, and why: each is optional or costly, and its absence is handled.
LAZY_OK = {
    ("zoo.data.loaders", "zoo.data.torch_backend"): "torchvision: heavy, needed only by the 'torch' backend",
    ("zoo.data.loaders", "zoo.data.ffcv_backend"): "FFCV: an optional extra",
    ("zoo.data.native", "zoo._native"): "the compiled extension: optional, with a pure-torch fallback",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = mod if is_pkg else mod.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    target = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    # `from pkg import sub` imports the submodule; `from mod import name` imports mod
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known or f"{target}.{a.name}" == "zoo._native"
            else target for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    mods = _modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    lazy = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _resolve(mod, is_pkg, node, known):
                if target.split(".")[0] not in PACKAGES:
                    continue
                edges[mod].add(target)
                if id(node) in in_function:
                    lazy.append((mod, target, node.lineno))
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or a module importing itself)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_zoo_never_imports_export():
    edges, _ = _graph()
    assert not [(m, t) for m, ts in edges.items() for t in ts if m.startswith("zoo") and t.split(".")[0] == "export"]


def test_imports_inside_functions_are_only_the_named_optional_ones():
    _, lazy = _graph()
    assert [(m, t, line) for m, t, line in lazy if (m, t) not in LAZY_OK] == []


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path, monkeypatch):
    """The checks above are only worth something if they can fail: a two-module cycle through an import inside a
    function is found by both."""
    import tests.test_layers as t

    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text("")
    (tmp_path / "zoo" / "a.py").write_text("from .b import f\n")
    (tmp_path / "zoo" / "b.py").write_text("def f():\n    from .a import g\n")
    monkeypatch.setattr(t, "REPO", tmp_path)
    monkeypatch.setattr(t, "PACKAGES", ("zoo",))
    edges, lazy = t._graph()
    assert t._cycles(edges) == [["zoo.a", "zoo.b"]]
    assert lazy == [("zoo.b", "zoo.a", 2)]


def test_one_version_number():
    import tomllib

    import zoo

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == zoo.__version__
