"""docs/*.md name code by its place: every backticked `package.module.name` (or
`package.module:function`), config key (`algo.token_budget`) and repository path
(`actors/rollout_group.py`, `tests/x.py::test_name`) must still resolve, so a rename that leaves
the docs stale fails here."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from actors.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"actors", "bench", "learner", "models", "rewards", "rollout", "tasks", "tests"}
SECTIONS = {field.alias or name for name, field in RunConfig.model_fields.items()}
FILE_SUFFIXES = {"json", "jsonl", "safetensors", "yaml", "py", "md", "html", "png", "txt", "tmp"}
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?")


def spans(text: str) -> list[str]:
    """The backticked spans of a markdown text (fenced blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def python_name(name: str) -> bool:
    """`a.b.c` as a module path plus attributes (`a.b:c` as module and attribute)."""
    module_part, _, attr = name.partition(":")
    parts = module_part.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        if parts[0] in PACKAGES and not _ours(obj):
            continue  # an installed copy of the repository elsewhere still has the old module
        for part in parts[cut:] + ([attr] if attr else []):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
            if parts[0] in PACKAGES and isinstance(obj, ModuleType) and not _ours(obj):
                return False
        return True
    return False


def _ours(module: Any) -> bool:
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
    return Path(where).resolve().is_relative_to(REPO)


def config_key(name: str) -> bool:
    """`section.field...` through the RunConfig tree (a dict field takes any key below it)."""
    model: Any = RunConfig
    for part in name.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return model is dict or getattr(model, "__origin__", None) is dict
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return False
        model = fields[part].annotation
        model = next((a for a in getattr(model, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)),
                     model)  # X | None
    return True


def repo_path(span: str) -> bool:
    """A path under the repository (`file.py::test_name`: that test function exists in it)."""
    path, _, function = span.partition("::")
    target = REPO / path
    if not target.exists():
        return False
    return not function or function in {n.name for n in ast.walk(ast.parse(target.read_text()))
                                         if isinstance(n, ast.FunctionDef)}


def unresolved(text: str) -> list[str]:
    """Every backticked name or path of `text` that does not resolve."""
    stale = []
    for span in spans(text):
        word = re.split(r"[\s(=,\[]", span.strip(), maxsplit=1)[0]
        if "<" in word or "{" in word or "*" in word:
            continue  # a pattern, not a name
        if "/" in word and not word.startswith("/"):
            first = word.split("/")[0]
            if (REPO / first).exists() and not repo_path(word.rstrip(".,")):
                stale.append(word)
            continue
        if not DOTTED.fullmatch(word) or word.rsplit(".", 1)[-1] in FILE_SUFFIXES:
            continue
        first = word.split(".")[0]
        if first not in PACKAGES | SECTIONS:
            continue  # another library's name (`torch.compile`) or a file
        if not (python_name(word) or ":" not in word and first in SECTIONS and config_key(word)):
            stale.append(word)
    return stale


def test_every_name_and_path_in_the_docs_resolves():
    stale = {doc.name: unresolved(doc.read_text()) for doc in sorted((REPO / "docs").glob("*.md"))}
    assert {doc: names for doc, names in stale.items() if names} == {}


def test_a_stale_name_fails():
    text = ("`actors.step_data.to_groups` moved; `learner.token_budget` is `algo.token_budget`; "
            "`actors/stages.py` is gone, `tests/test_docs.py::no_such_test` never was; "
            "`tasks.builtin.arith:no_such_fn`. Still true: `actors.step_batch.to_groups`, "
            "`tasks.builtin.arith:process_reward`, `reward.limits.math_timeout_s=1`, `task.params.path=X`, "
            "`tests/test_docs.py::test_a_stale_name_fails`, `conf/`, `config.json`, `ray.get`.")
    assert unresolved(text) == ["actors.step_data.to_groups", "learner.token_budget", "actors/stages.py",
                                "tests/test_docs.py::no_such_test", "tasks.builtin.arith:no_such_fn"]
