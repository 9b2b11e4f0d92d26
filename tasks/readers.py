"""Read raw records from JSONL, JSON, Parquet and `datasets.save_to_disk` directories.

Each reader yields (where, value) pairs; `value` is the parsed record or the exception that
stopped it from parsing, so one bad line costs one row, not the file. Problems that make the
whole file unreadable raise DatasetError."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


class DatasetError(ValueError):
    """The file as a whole cannot be used (missing, empty, unparseable, unknown format)."""


@dataclass(frozen=True)
class Where:
    """A record's place in its file: a 1-based line (JSONL) or a 0-based index (JSON list,
    Parquet, datasets)."""

    source: str
    line: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}"
        return f"{self.source}[{self.index}]"


Record = tuple[Where, Any]


def read_records(path: str | Path, split: str | None = None) -> Iterator[Record]:
    """Records of a data file, the reader chosen by suffix; a directory is a `datasets` save."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if path.is_dir():
        return _read_saved_dataset(path, split)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise DatasetError(f"unknown dataset format {path.suffix!r} for {path}; "
                       "use .jsonl, .json, .parquet or a datasets save_to_disk directory")


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield Where(str(path), line=line_no), json.loads(line)
            except json.JSONDecodeError as err:
                yield Where(str(path), line=line_no), ValueError(f"bad JSON: {err}")


def _read_json(path: Path) -> Iterator[Record]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("["):
            raise DatasetError(f"{path}:{err.lineno}:{err.colno}: bad JSON: {err.msg}") from err
        yield from _read_jsonl(path)  # a .json file holding JSON lines
        return
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        yield Where(str(path), index=i), row


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only Parquet users need pyarrow loaded

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise DatasetError(f"cannot read Parquet file {path}: {err}") from err
    # to_pylist gives plain lists and str, not numpy arrays, so rows validate like JSON rows.
    for i, row in enumerate(table.to_pylist()):
        yield Where(str(path), index=i), row


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[Record]:
    try:
        import datasets
    except ImportError as err:
        raise DatasetError(f"{path} is a directory; reading datasets saved with save_to_disk "
                           "needs the `datasets` package (pip install datasets)") from err
    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DatasetError(f"{path} is not a datasets save_to_disk directory: {err}") from err
    source = str(path)
    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise DatasetError(f"{path} holds splits {sorted(data)}; choose one with split=")
        data, source = data[split], f"{path}[{split}]"
    for i, row in enumerate(data):
        yield Where(source, index=i), row
