"""No import circle in fpnas_dsl/: every import of every module, those under
`if TYPE_CHECKING:` and those inside functions included, read with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fpnas_dsl"


def module_names() -> dict[str, Path]:
    """Every module of the package by its dotted name (the compiled core by its stub)."""
    out = {}
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi")]:
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fpnas_dsl modules that module `name` imports: `from a.b import c` imports
    a.b.c when that is a module, else a.b; `import a.b.c` the longest module it names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    if path.suffix == ".pyi":
        return set()  # an extension module imports nothing of the package
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in modules else base)
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle() -> None:
    modules = module_names()
    assert "fpnas_dsl.search.loop" in modules and len(modules) > 40
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_walk_sees_type_checking_and_function_imports() -> None:
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    # commands/search.py imports the config only for type checking, the start-up in run().
    assert "fpnas_dsl.search.config" in graph["fpnas_dsl.commands.search"]
    assert "fpnas_dsl.search.startup" in graph["fpnas_dsl.commands.search"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_strategy_imports_the_loop() -> None:
    modules = module_names()
    for name in ("strategy", "sampled", "dnas", "training", "context"):
        full = f"fpnas_dsl.search.{name}"
        assert "fpnas_dsl.search.loop" not in imports_of(full, modules[full], modules), name
