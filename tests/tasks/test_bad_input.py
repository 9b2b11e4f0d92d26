"""Issue 13 item 5, the data side: malformed rows, prompts holding the mask token or longer than
the context, an empty eval split. Each is an error naming the row / key, or (on_error=skip)
left out and counted; never a crash deep in a worker."""
from __future__ import annotations

import functools
import json

import pytest

from models.tokenizer import build_tiny_tokenizer
from tasks.prompts import encode_prompt
from tasks.readers import DatasetError
from tasks.registry import get_task
from tasks.screen import PromptError, PromptLimits, screen_prompts

TOKENIZER = build_tiny_tokenizer()
MASK = TOKENIZER.mask_token_id
ENCODE = functools.partial(encode_prompt, tokenizer=TOKENIZER, template="chat", kind="math")
LIMITS = PromptLimits(MASK, max_prompt_tokens=120)


def good(i: int) -> dict:
    return {"question": f"What is {i}+1?", "ground_truth_answer": str(i + 1)}


def test_malformed_rows_are_named_or_skipped_and_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(good(0)), "{not json", json.dumps({"question": "no answer"}),
             json.dumps({"question": 7, "ground_truth_answer": "7"}), json.dumps(good(1)), "[1, 2]"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: bad JSON"):
        get_task("math_jsonl", path=str(path))
    with pytest.warns(UserWarning, match="skipped 4 bad math rows"):
        task = get_task("math_jsonl", path=str(path), on_error="skip", eval_fraction=0.0)
    assert [s.split(": ")[0] for s in task.skipped_rows] == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    assert "ground_truth_answer: Field required" in task.skipped_rows[1]
    assert sorted(r["question"] for r in task.train_rows(None, seed=0)) == [good(0)["question"], good(1)["question"]]


def test_prompt_with_the_mask_token_is_named():
    rows = [good(0), {"question": f"Fill in: 2 + {TOKENIZER.mask_token} = 5", "ground_truth_answer": "3"}]
    assert MASK in ENCODE(rows[1])  # the tokenizer really turns the text into the mask id
    with pytest.raises(PromptError, match=r"train row 1 \(question 'Fill in: 2 \+ <\|MASK\|> = 5'\): its prompt "
                                          r"contains the mask token \(id 2\) at position \d+.*on_error=skip"):
        screen_prompts(rows, ENCODE, LIMITS, "raise", "train")


def test_prompt_longer_than_the_context_is_named():
    rows = [good(0), {"question": "x" * 500, "ground_truth_answer": "1"}]
    n = len(ENCODE(rows[1]))
    with pytest.raises(PromptError, match=rf"eval row 1 .*has {n} tokens, more than the 120"):
        screen_prompts(rows, ENCODE, LIMITS, "raise", "eval")


def test_skip_leaves_bad_prompts_out_and_counts_them():
    rows = [good(0), {"question": "y" * 500, "ground_truth_answer": "1"}, good(1),
            {"question": TOKENIZER.mask_token, "ground_truth_answer": "1"}]
    with pytest.warns(UserWarning, match="skipped 2 train rows"):
        out = screen_prompts(rows, ENCODE, LIMITS, "skip", "train")
    assert out.rows == [good(0), good(1)] and out.prompts == [ENCODE(good(0)), ENCODE(good(1))]
    assert [s.split(" (")[0] for s in out.skipped] == ["train row 1", "train row 3"]
    with pytest.raises(PromptError, match="no train row has a prompt the model can take"):
        screen_prompts(rows[1::2], ENCODE, LIMITS, "skip", "train")


def test_empty_eval_split_names_the_keys(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(good(i)) + "\n" for i in range(5)))
    task = get_task("math_jsonl", path=str(path), eval_fraction=0.0)
    assert len(task.train_rows(None, seed=0)) == 5
    with pytest.raises(DatasetError, match="empty eval split.*task.params.eval_path.*trainer.eval_every=0"):
        task.eval_rows(8, seed=0)
    assert task.eval_rows(0, seed=0) == []


@pytest.mark.parametrize("path, message", [("no_such_module:fn", "ModuleNotFoundError"),
                                           ("tasks.builtin.arith:no_such_fn", "AttributeError"),
                                           ("tasks.builtin.arith:OPS", "not callable"),
                                           ("chess", "unknown reward 'chess'")])
def test_a_reward_that_cannot_load_names_the_key(path, message):
    from tasks.registry import resolve_reward

    with pytest.raises(ValueError, match=rf"task.reward={path!r}.*{message}"):
        resolve_reward(path)
