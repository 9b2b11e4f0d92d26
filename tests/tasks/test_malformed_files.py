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
