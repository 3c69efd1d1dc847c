"""The rooms' rules (#19), checked on every run: no import circle among memfs's modules, no `_private`
name used outside the module that defines it, no module over 500 lines and no function over 60.
An exception, if one is ever needed, is allowlisted below with its reason; an entry that is no
longer needed fails the test too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "memfs"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

# Circles that existed when the check came (#19 lists them); each breaks by moving one thing.
KNOWN_CIRCLES = {
}

# (module that uses it, private name): why it is still used there.
KNOWN_PRIVATE_USES = {
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """memfs modules `name` imports, at module level or inside functions; not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in known)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target in known:
                    found.add(target)
                for a in child.names:  # from . import kv
                    if f"{target}.{a.name}" in known:
                        found.add(f"{target}.{a.name}")
            visit(child)

    visit(tree)
    found.discard(name)
    found.discard("memfs")  # the package's __init__ (its version) imports nothing back
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    found = set(circles(import_graph()))
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"import circles: {new}; break them (move the shared piece to a module both import)"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"these circles are gone: take them off KNOWN_CIRCLES in tests/test_structure.py: {gone}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_definitions() -> dict[str, set[str]]:
    """module -> the private names it defines (module-level defs and assignments, class members, self._x)."""
    out: dict[str, set[str]] = defaultdict(set)
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
                out[mod].add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
                out[mod].add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                out[mod].add(node.attr)
    return out


def private_uses() -> set[tuple[str, str]]:
    """(module, name) for each private memfs name a module uses that it does not define itself."""
    defined = private_definitions()
    everywhere = set().union(*defined.values())
    uses: set[tuple[str, str]] = set()
    for mod, path in modules().items():
        own = defined.get(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name)
                                                          and node.value.id in ("self", "cls")):
                names = [node.attr]
            for n in names:
                if _private(n) and n in everywhere and n not in own:
                    uses.add((mod, n))
    return uses


def test_no_private_name_used_outside_its_module():
    found = private_uses()
    new = sorted(found - set(KNOWN_PRIVATE_USES))
    assert not new, (f"private names used outside their module: {new}; give the owner a public method, or "
                     "(with a reason) allowlist it in tests/test_structure.py")
    gone = sorted(set(KNOWN_PRIVATE_USES) - found)
    assert not gone, f"no longer used: take these off KNOWN_PRIVATE_USES: {gone}"


def long_modules_and_functions(max_module: int = MAX_MODULE_LINES, max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for mod, path in modules().items():
        text = path.read_text()
        if text.count("\n") > max_module:
            out.append(f"module {mod} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    out.append(f"function {mod}.{node.name} ({length} lines)")
    return out


def test_no_long_module_or_function():
    found = long_modules_and_functions()
    assert not found, (f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function: {found}; "
                       "split it by job (docs/DESIGN.md §9 says where each job lives)")


def test_the_checks_find_what_they_look_for(tmp_path):
    """The circle finder and the import reader are not vacuous."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    graph = import_graph()
    assert "memfs.errors" in graph["memfs.local"] and "memfs.inputs" in graph["memfs.kv"]
    smaller = long_modules_and_functions(max_module=300, max_function=30)
    assert any(f.startswith("module memfs.store ") for f in smaller)
    assert any(f.startswith("function ") for f in smaller)
