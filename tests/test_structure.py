"""The house's shape: no import circle between the project's files, and only the entry points read the
command line's parser (every other layer takes the part of the configuration it needs)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The command line, the vantage6 functions' task decoders (the central's and the node's, any version),
# the other commands, and the store's description of the command line's options (`python -m ppsdg.store`).
ENTRY_POINTS = {"main", "ppsdg.central_task", "ppsdg.node_task", "ppsdg.commands", "ppsdg.store"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import statement of the project's modules, at any depth (a function's own imports too)."""
    files = [*ROOT.glob("ppsdg/**/*.py"), *ROOT.glob("backends/*.py"), ROOT / "main.py", ROOT / "train.py"]
    modules = {module_name(path): path for path in files}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                                else node.module for alias in node.names)
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def test_no_import_circle_spans_files():
    graph = import_graph()
    assert len(graph) > 30
    circles = sorted(module for module in graph if module in reachable(graph, module))
    assert circles == []


def test_only_the_entry_points_import_the_parser():
    graph = import_graph()
    assert {module for module, imported in graph.items() if "ppsdg.parser" in imported} == ENTRY_POINTS


def test_the_circle_check_finds_a_circle():
    assert reachable({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == {"a", "b", "c"}
