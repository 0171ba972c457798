"""No module imports one that imports it back (at module level or inside a function): one direction
between any two modules of the repository, so each concern has one home."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith(".") for part in parts):
            continue
        name = ".".join(parts)
        modules[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (absolute imports)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {resolve(f"{node.module}.{alias.name}") or resolve(node.module) for alias in node.names}
        graph[name] = found - {None, name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph(project_modules())
    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, ())})
    assert not circles, circles


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    modules["a"].write_text("import b\n")
    modules["b"].write_text("def f():\n    from a import g\n")
    assert import_graph(modules) == {"a": {"b"}, "b": {"a"}}
