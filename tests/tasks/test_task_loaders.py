"""load_rows over every supported format, and its handling of bad rows and bad files."""

import json

import pytest

from tasks.loaders import RowValidationError, load_rows
from tasks.readers import DatasetError

MATH = [
    {"question": "1+1?", "ground_truth_answer": "2", "source": "toy"},
    {"question": "2*3?", "ground_truth_answer": 6},
]
CODE = [
    {
        "question": "add",
        "test_method": "function",
        "test_list": ["assert add(1, 2) == 3"],
        "test_time_limit": 1,
        "prefix": "def add(a, b):",
    },
    {"question": "echo", "test_method": "stdio", "test_input": ["hi\n"], "test_output": ["hi"], "test_time_limit": 2.5},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(dict.fromkeys(k for row in rows for k in row))  # from_pylist reads keys off row 0
    pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows]), path)
    return path


def write_saved_dataset(path, rows, split=None):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({split: data}) if split else data).save_to_disk(str(path))
    return path


def test_jsonl_rows_pass_through_unchanged(tmp_path):
    loaded = load_rows(write_jsonl(tmp_path / "m.jsonl", MATH), "math")
    assert loaded.rows == MATH  # extra field kept, numeric answer not rewritten
    assert loaded.errors == [] and loaded.source.endswith("m.jsonl")


def test_json_list_and_json_lines_in_a_json_file(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(CODE, indent=2))
    assert load_rows(listed, "code").rows == CODE
    assert load_rows(write_jsonl(tmp_path / "lines.json", CODE), "code").rows == CODE


def test_parquet(tmp_path):
    math_rows = [{"question": "1+1?", "ground_truth_answer": "2"}, {"question": "q", "ground_truth_answer": "a"}]
    assert load_rows(write_parquet(tmp_path / "m.parquet", math_rows), "math").rows == math_rows
    loaded = load_rows(write_parquet(tmp_path / "c.parquet", CODE), "code")
    # Parquet columns are the union of keys: absent fields come back as None and still validate.
    assert [r["test_method"] for r in loaded.rows] == ["function", "stdio"]
    assert loaded.rows[1]["test_input"] == ["hi\n"] and loaded.rows[1]["test_list"] is None


def test_saved_dataset_directory_and_dataset_dict(tmp_path):
    rows = [{"question": "1+1?", "ground_truth_answer": "2"}]
    assert load_rows(write_saved_dataset(tmp_path / "plain", rows), "math").rows == rows
    loaded = load_rows(write_saved_dataset(tmp_path / "dict", rows, split="train"), "math")
    assert loaded.rows == rows  # the only split is picked without asking
    assert load_rows(tmp_path / "dict", "math", split="train").rows == rows
    with pytest.raises(DatasetError, match="splits"):
        load_rows(tmp_path / "dict", "math", split="test")
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(DatasetError, match="not a datasets save_to_disk directory"):
        load_rows(tmp_path / "not_a_dataset", "math")


def test_bad_json_line_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(MATH[0]) + "\n\n" + '{"question": "broken"\n' + json.dumps(MATH[1]) + "\n")
    with pytest.raises(RowValidationError, match=r"m\.jsonl:3: bad JSON") as info:
        load_rows(path, "math")
    assert info.value.error.where.line == 3


def test_missing_field_and_wrong_type(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl", [MATH[0], {"question": "q"}, {"question": ["q"], "ground_truth_answer": "1"}]
    )
    with pytest.raises(RowValidationError, match=r"m\.jsonl:2: ground_truth_answer: Field required"):
        load_rows(path, "math")
    with pytest.warns(UserWarning):
        loaded = load_rows(path, "math", on_error="skip")
    assert loaded.rows == [MATH[0]]
    assert [(e.where.line, e.message) for e in loaded.errors] == [
        (2, "ground_truth_answer: Field required"),
        (3, "question: Input should be a valid string"),
    ]


def test_skip_collects_errors_and_warns_once(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([MATH[0], "not a row", {"question": "q"}, MATH[1]]))
    with pytest.warns(UserWarning, match=r"skipped 2 bad math rows") as caught:
        loaded = load_rows(path, "math", on_error="skip")
    assert len(caught) == 1
    assert loaded.rows == MATH
    assert [str(e).split(": ")[0] for e in loaded.errors] == [f"{path}[1]", f"{path}[2]"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"question": "q", "test_method": "function", "test_time_limit": 1}, "non-empty test_list"),
        ({"question": "q", "test_method": "stdio", "test_input": ["1"], "test_output": []}, "test_output has 0"),
        ({"question": "q", "test_method": "sql", "test_list": ["x"]}, "test_method"),
        ({"question": "q", "test_method": "function", "test_list": ["x"], "test_time_limit": 0}, "test_time_limit"),
    ],
)
def test_code_row_checks(tmp_path, bad, message):
    with pytest.raises(RowValidationError, match=message):
        load_rows(write_jsonl(tmp_path / "c.jsonl", [CODE[0], bad]), "code")


@pytest.mark.parametrize("name, content", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.json", ""), ("e.json", "[]")])
def test_empty_file_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match="is empty"):
        load_rows(path, "math", on_error="skip")


def test_whole_file_problems(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl", "math")
    broken = tmp_path / "b.json"
    broken.write_text('[{"question": "q",\n  "ground_truth_answer": }]')
    with pytest.raises(DatasetError, match=r"b\.json:2:\d+: bad JSON"):
        load_rows(broken, "math")
    (tmp_path / "x.csv").write_text("question\n")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_rows(tmp_path / "x.csv", "math")
    with pytest.raises(DatasetError, match="no valid math rows"):
        load_rows(write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}]), "math", on_error="skip")
    with pytest.raises(ValueError, match="unknown row kind"):
        load_rows(write_jsonl(tmp_path / "ok.jsonl", MATH), "poetry")
    with pytest.raises(ValueError, match="on_error"):
        load_rows(write_jsonl(tmp_path / "ok.jsonl", MATH), "math", on_error="ignore")
