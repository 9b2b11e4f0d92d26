"""The control plane's shape, read from the source (issue 21's acceptance list): no import circles in
actors/ or learner/ (TYPE_CHECKING imports count: a reader follows them too), an RL step of one
line per phase, a short start_run, the run mode read only in actors/modes.py, weight-sync
transport names only in their registry, "judge" compared only where the reward route is built,
and bench/chaos.py driving faults through the run's hooks, patching nothing."""
from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found & modules - {name}


def cycles(packages: list[str]) -> list[list[str]]:
    """Strongly connected components of more than one module in the import graph (Tarjan)."""
    files = [p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports(p, modules) for p in files}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_actors_and_learner_have_no_import_circles():
    assert cycles(["actors", "learner"]) == []


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    for name, body in {"a.py": "from .b import x\n", "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from .a import y\n", "c.py": "from . import a\n"}.items():
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / name).write_text(body)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert cycles(["pkg"]) == [["pkg.a", "pkg.b"]]


def body_lines(fn) -> int:
    """Lines of a function's body, its docstring left out."""
    node = ast.parse(inspect.getsource(fn).lstrip()).body[0]
    body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
        else node.body
    return body[-1].end_lineno - body[0].lineno + 1


def test_the_rl_step_is_one_line_per_phase_and_start_run_is_short():
    from actors.start import start_run
    from actors.steps import rl_step

    assert body_lines(rl_step) <= 10
    assert body_lines(start_run) <= 25


def source_files(*packages: str) -> list[Path]:
    return [p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))]


def compares(path: Path, pick) -> list[str]:
    """`file:line` of every comparison in `path` for which pick(node) holds."""
    return [f"{path.relative_to(REPO)}:{n.lineno}" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Compare) and pick(n)]


def mentions_mode(node: ast.Compare) -> bool:
    return any(isinstance(x, ast.Attribute) and x.attr == "mode" for x in [node.left, *node.comparators])


def mentions(value: str):
    return lambda node: any(isinstance(x, ast.Constant) and x.value == value for x in ast.walk(node))


def test_the_run_mode_is_read_only_by_the_modes_module():
    found = [hit for p in source_files("actors") + [REPO / "launch.py"] if p.name != "modes.py"
             for hit in compares(p, mentions_mode)]
    assert found == []


def test_judge_is_compared_only_where_the_reward_route_is_built():
    found = [hit for p in source_files("actors", "bench") + [REPO / "launch.py"] if p.name != "reward_route.py"
             for hit in compares(p, mentions("judge"))]
    assert found == []


def test_transport_names_are_literals_only_in_the_weight_sync_registry():
    from actors.weight_sync.planner import TRANSPORTS

    found = [f"{p.relative_to(REPO)}:{n.lineno}" for p in source_files("actors") + [REPO / "launch.py"]
             if p.name != "planner.py" for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Constant) and n.value in TRANSPORTS]
    assert found == []


def test_chaos_patches_nothing():
    tree = ast.parse((REPO / "bench" / "chaos.py").read_text())
    calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [f for f in calls if isinstance(f, ast.Name) and f.id == "setattr"]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in
                        ("driver", "actors", "ray") for t in n.targets)]
