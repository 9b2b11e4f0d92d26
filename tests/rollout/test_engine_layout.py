"""The rollout engine stays in one-job files: short files and functions, and strategies told apart
by name only in their registry (issue 22)."""
import ast
from pathlib import Path

import pytest

from rollout.params import Strategy
from rollout.strategies import RULES

ROLLOUT = Path(__file__).resolve().parents[2] / "rollout"
FILES = sorted(ROLLOUT.glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_files_and_functions_are_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 200, f"{path.name} has {len(source.splitlines())} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= 30, f"{path.name}: {node.name} has {lines} lines"


@pytest.mark.parametrize("path", [p for p in FILES if p.name != "strategies.py"], ids=lambda p: p.name)
def test_no_strategy_name_outside_the_registry(path):
    names = set(RULES)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in names:
            assert path.name == "params.py", f"{path.name} names the strategy {node.value!r}"


def test_the_registry_has_every_configurable_strategy():
    assert set(RULES) == set(Strategy.__args__)
