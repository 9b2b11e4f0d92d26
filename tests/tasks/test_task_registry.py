"""get_task: built-in and file tasks behind one interface, with disjoint train/eval rows."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.prompts import build_prompt
from tasks.registry import get_task, resolve_reward

BUILTINS = ["arith", "countdown", "digits", "sudoku4"]


def questions(rows):
    return {r["question"] for r in rows}


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_task_interface(name):
    task = get_task(name)
    assert (task.kind, task.template, task.reward_path) == ("math", "plain", f"tasks.builtin.{name}:reward")
    train, evals = task.train_rows(150, seed=0), task.eval_rows(40, seed=0)
    assert len(train) == 150 and len(evals) == len(questions(evals)) == 40
    assert not questions(train) & questions(evals)
    assert train == task.train_rows(150, seed=0) and evals == task.eval_rows(40, seed=0)
    assert questions(evals) != questions(task.eval_rows(40, seed=1))
    assert all(task.reward(r["solution"], r)["correct"] for r in evals)
    assert not task.reward("no answer", evals[0])["correct"]
    assert resolve_reward(task.reward_path) is task.reward


def test_easy_sft_slice_never_sees_full_task_eval_questions():
    full_eval = get_task("arith", min_digits=1, max_digits=3).eval_rows(300, seed=0)
    easy_train = get_task("arith", min_digits=1, max_digits=2).train_rows(3000, seed=0)
    assert not questions(easy_train) & questions(full_eval)
    assert all(len(q[:-1].replace("-", "+").split("+")[0]) <= 2 for q in questions(easy_train))


def test_builtin_knob_and_size_errors():
    with pytest.raises(TypeError, match="digits"):
        get_task("arith", digits=3)
    with pytest.raises(ValueError, match="too small"):
        get_task("arith", max_digits=1, ops=["+"]).eval_rows(50, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
    with pytest.raises(ValueError, match="eval_fraction"):
        get_task("sudoku4", eval_fraction=1.5)


def test_registered_names_resolve_through_rewards_get_reward():
    rewards = pytest.importorskip("rewards")
    if not hasattr(rewards, "get_reward"):
        pytest.skip("rewards.get_reward is not there yet")
    row = get_task("arith").eval_rows(1, seed=0)[0]
    assert rewards.get_reward("tasks.builtin.arith:reward")(row["solution"], row)["correct"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_file_task_splits_one_file_deterministically(tmp_path):
    rows = [{"question": f"What is {i}+1?", "ground_truth_answer": str(i + 1)} for i in range(100)]
    task = get_task("math_jsonl", path=write_jsonl(tmp_path / "m.jsonl", rows), eval_fraction=0.2)
    assert (task.kind, task.template, task.reward_path) == ("math", "auto", "math")
    train, evals = task.train_rows(None, seed=0), task.eval_rows(None, seed=0)
    assert len(train) + len(evals) == 100 and not questions(train) & questions(evals)
    assert task.train_rows(10, seed=0) == train[:10]
    assert task.eval_rows(None, seed=1) != evals


def test_file_task_with_an_eval_file(tmp_path):
    code = {"question": "echo", "test_method": "stdio", "test_input": ["a"], "test_output": ["a"]}
    train = write_jsonl(tmp_path / "train.jsonl", [code] * 3)
    evals = write_jsonl(tmp_path / "eval.jsonl", [dict(code, question="echo twice")])
    task = get_task("code_jsonl", path=train, eval_path=evals, template="chat")
    assert (task.kind, task.template, task.reward_path) == ("code", "chat", "code")
    custom = get_task("code_jsonl", path=train, reward="tasks.builtin.arith:reward")
    assert custom.reward_path == "tasks.builtin.arith:reward" and callable(custom.reward)
    assert len(task.train_rows(None, seed=0)) == 3
    assert task.eval_rows(None, seed=0)[0]["question"] == "echo twice"


@pytest.mark.parametrize("name", BUILTINS)
def test_tiny_tokenizer_covers_every_builtin_character(name):
    tokenizer = pytest.importorskip("models.tokenizer").build_tiny_tokenizer()
    task = get_task(name)
    rows = task.train_rows(100, seed=0) + task.eval_rows(20, seed=0)
    text = "".join(build_prompt(r, tokenizer, task.template, task.kind) + r["solution"] for r in rows)
    assert set(text) <= set("0123456789+-*/=(),. \n\\{}abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_tasks_never_import_ray():
    modules = "tasks.registry, tasks.prompt_stream, tasks.prompts, tasks.loaders"
    code = f"import sys, {modules}; assert 'ray' not in sys.modules, 'tasks imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
