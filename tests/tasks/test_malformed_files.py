"""Data files as users have them: a byte order mark, bytes that are not UTF-8, values json cannot
hold. Each row either loads unchanged or is named by file and line; none is dropped or mangled."""
from __future__ import annotations

import json

import pytest

from tasks.loaders import RowValidationError, load_rows
from tasks.readers import DatasetError

ROWS = [{"question": "1+1?", "ground_truth_answer": "2"}, {"question": "2+2?", "ground_truth_answer": "4"}]
LINES = [json.dumps(r).encode() for r in ROWS]


@pytest.mark.parametrize("name, body", [("m.jsonl", b"\r\n".join(LINES) + b"\r\n"),
                                        ("m.json", json.dumps(ROWS, indent=1).encode())], ids=["jsonl", "json"])
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body)
    assert load_rows(path, "math").rows == ROWS


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(LINES[0] + b"\n" + b'{"question": "caf\xe9?", "ground_truth_answer": "1"}\n' + LINES[1] + b"\n")
    with pytest.raises(RowValidationError, match=rf"{path}:2: invalid UTF-8 byte 0xe9 at column 18"):
        load_rows(path, "math")
    with pytest.warns(UserWarning, match="skipped 1 bad math rows"):
        loaded = load_rows(path, "math", on_error="skip")
    assert loaded.rows == ROWS and [e.where.line for e in loaded.errors] == [2]
    listed = tmp_path / "m.json"
    listed.write_bytes(b"[" + LINES[0] + b",\n" + b'{"question": "\xff", "ground_truth_answer": "1"}]')
    with pytest.raises(DatasetError, match=rf"{listed}:2: invalid UTF-8 byte 0xff at column 15"):
        load_rows(listed, "math", on_error="skip")


@pytest.mark.parametrize("line, message", [("[" * 100_000 + "]" * 100_000, "maximum recursion depth"),
                                           ('{"question": "q", "ground_truth_answer": ' + "9" * 5000 + "}",
                                            "Exceeds the limit")], ids=["deep_nesting", "huge_integer"])
def test_a_value_json_cannot_hold_costs_its_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(f"{json.dumps(ROWS[0])}\n{line}\n{json.dumps(ROWS[1])}\n")
    with pytest.raises(RowValidationError, match=rf"{path}:2: bad JSON: {message}"):
        load_rows(path, "math")
    with pytest.warns(UserWarning, match="skipped 1 bad math rows"):
        assert load_rows(path, "math", on_error="skip").rows == ROWS
    listed = tmp_path / "m.json"
    listed.write_text(f"[{line}]")
    with pytest.raises(DatasetError, match=rf"{listed}: bad JSON: {message}"):
        load_rows(listed, "math")


CODE = {"question": "add", "test_method": "function", "test_list": ["assert add(1, 2) == 3"]}


@pytest.mark.parametrize("kind, row, message", [
    ("math", {"question": "q", "ground_truth_answer": ""}, "ground_truth_answer: Value error, is blank"),
    ("math", {"question": "q", "ground_truth_answer": " \t"}, "ground_truth_answer: Value error, is blank"),
    ("math", {"question": "q", "ground_truth_answer": float("nan")}, "ground_truth_answer: .*finite number, got nan"),
    ("math", {"question": "q", "ground_truth_answer": float("inf")}, "ground_truth_answer: .*finite number, got inf"),
    ("math", {"question": "q", "ground_truth_answer": [4]}, "ground_truth_answer: .*a string or a number, got list$"),
    ("math", {"question": "q", "ground_truth_answer": None}, "ground_truth_answer: .*got NoneType$"),
    ("math", {"question": "q", "ground_truth_answer": True}, "ground_truth_answer: .*got bool$"),
    ("math", {"question": "", "ground_truth_answer": "4"}, "question: Value error, is blank"),
    ("code", dict(CODE, question="\n"), "question: Value error, is blank"),
    ("code", dict(CODE, test_time_limit=float("inf")), "test_time_limit: Input should be a finite number"),
    ("choice", {"question": "  ", "ground_truth_answer": "A"}, "question: Value error, is blank"),
], ids=["empty_answer", "blank_answer", "nan_answer", "inf_answer", "list_answer", "null_answer", "bool_answer",
        "empty_math_question", "blank_code_question", "inf_time_limit", "blank_choice_question"])
def test_a_row_that_would_train_on_nothing_is_named(tmp_path, kind, row, message):
    good = {"math": ROWS[0], "code": CODE, "choice": {"question": "Which? A. x B. y", "ground_truth_answer": "A"}}
    path = tmp_path / "rows.jsonl"
    path.write_text(f"{json.dumps(good[kind])}\n{json.dumps(row)}\n")
    with pytest.raises(RowValidationError, match=rf"{path}:2: {message}"):
        load_rows(path, kind)


def test_numeric_answers_still_load(tmp_path):
    rows = [{"question": "q", "ground_truth_answer": 4}, {"question": "r", "ground_truth_answer": 0.5}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_rows(path, "math").rows == rows


def test_a_file_task_without_a_path_names_the_key():
    from tasks.registry import get_task

    for params in ({}, {"path": None}, {"path": ""}):  # conf/task/math_jsonl.yaml leaves path null
        with pytest.raises(ValueError, match=r"task 'math_jsonl' needs task.params.path"):
            get_task("math_jsonl", **params)
    with pytest.raises(ValueError, match=r"task 'image_json' needs task.params.path"):
        get_task("image_json", image_root=None)


def test_a_bad_template_is_named_when_the_task_is_built(tmp_path):
    from tasks.registry import get_task

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ValueError, match=r"task.params.template='Chat'; choose from \['chat', 'plain', 'auto'\]"):
        get_task("math_jsonl", path=str(path), template="Chat")


def test_a_split_that_leaves_no_training_rows_names_the_keys(tmp_path):
    from tasks.registry import get_task

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    task = get_task("math_jsonl", path=str(path), eval_fraction=1.0)
    assert len(task.eval_rows(None, seed=0)) == 2  # an evaluation-only file is fine
    with pytest.raises(DatasetError, match=r"task 'math_jsonl' has an empty train split.*task.params.eval_fraction"):
        task.train_rows(None, seed=0)
    assert task.train_rows(0, seed=0) == []


@pytest.mark.parametrize("template", ['{% for m in messages %}<u>{{ m["text"] }}</u>{% endfor %}<a>',
                                      "{% if add_generation_prompt %}<a>{% endif %}", ""],
                         ids=["reads_another_key", "no_messages", "empty"])
def test_a_chat_template_that_drops_the_question_is_named(template):
    from test_task_prompts import char_tokenizer

    from tasks.prompts import build_prompt

    with pytest.raises(ValueError, match=r"chat_template left the user message out .*task.template=plain"):
        build_prompt(ROWS[0], char_tokenizer(template), "chat", "math")
    trimmed = char_tokenizer("{% for m in messages %}<u>{{ m.content | trim }}</u>{% endfor %}<a>")
    assert build_prompt(dict(ROWS[0], question="  1+1?"), trimmed, "chat", "math").startswith("<u>1+1?\n")
