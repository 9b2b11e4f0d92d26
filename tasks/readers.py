"""Read raw records from JSONL, JSON, Parquet and `datasets.save_to_disk` directories.

Each reader yields (where, value) pairs; `value` is the parsed record or the exception that
stopped it from parsing, so one bad line costs one row, not the file. Problems that make the
whole file unreadable raise DatasetError."""
from __future__ import annotations

import json
import re
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

# utf-8-sig: a leading byte order mark (Windows editors write one) is not part of the first row.
ENCODING = "utf-8-sig"
# Bytes that are not UTF-8, as errors="surrogateescape" decodes them: found, they name their line.
_INVALID_BYTE = re.compile("[\udc80-\udcff]")


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
    with path.open(encoding=ENCODING, errors="surrogateescape") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield Where(str(path), line=line_no), _parse_line(line)


def _parse_line(line: str) -> Any:
    """A JSON line's value, or the ValueError saying why it has none."""
    bad = _INVALID_BYTE.search(line)
    if bad:
        return ValueError(_invalid_byte(bad, bad.start() + 1))
    try:
        return json.loads(line)
    # ValueError: JSONDecodeError, or an integer past Python's digit limit; RecursionError:
    # nesting deeper than the parser's stack. Each costs its line, not the file.
    except (ValueError, RecursionError) as err:
        return ValueError(f"bad JSON: {err}")


def _read_json(path: Path) -> Iterator[Record]:
    text = path.read_text(encoding=ENCODING, errors="surrogateescape")
    listed = text.lstrip().startswith("[")
    bad = _INVALID_BYTE.search(text)
    if bad and not listed:  # JSON lines, or one object: the reader of lines names the bad line
        yield from _read_jsonl(path)
        return
    if bad:  # json.loads would keep the bad byte inside a string: the row would be mangled
        line, column = text.count("\n", 0, bad.start()) + 1, bad.start() - text.rfind("\n", 0, bad.start())
        raise DatasetError(f"{path}:{line}: {_invalid_byte(bad, column)}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        if not listed:
            yield from _read_jsonl(path)  # a .json file holding JSON lines
            return
        at = f"{err.lineno}:{err.colno}:" if isinstance(err, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}:{at} bad JSON: {getattr(err, 'msg', err)}") from err
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        yield Where(str(path), index=i), row


def _invalid_byte(match: re.Match[str], column: int) -> str:
    byte = ord(match.group()) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
    return f"invalid UTF-8 byte 0x{byte:02x} at column {column}: the file must be UTF-8 text"


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
