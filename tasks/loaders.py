"""Load and validate task rows from a data file, with a per-row error policy."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import ValidationError

from .readers import DatasetError, Where, read_records
from .schemas import ROW_MODELS, Kind, Row, validate_row

OnError = Literal["skip", "raise"]


@dataclass(frozen=True)
class RowError:
    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RowValidationError(DatasetError):
    def __init__(self, error: RowError):
        super().__init__(str(error))
        self.error = error


@dataclass
class LoadedDataset:
    rows: list[Row]
    source: str
    errors: list[RowError] = field(default_factory=list)  # skipped rows, when on_error="skip"


def load_rows(path: str | Path, kind: Kind, on_error: OnError = "raise",
              split: str | None = None, check: Callable[[Row], str | None] | None = None) -> LoadedDataset:
    """Rows of `kind` from JSONL / JSON / Parquet / a datasets directory (`split` picks one split
    of a DatasetDict). A bad row raises RowValidationError, or with on_error="skip" is left out
    and listed in `.errors` (with one warning per file). No valid rows at all is always an error.
    `check`: a further test of each valid row (what is wrong, or None), e.g. that its image opens."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if kind not in ROW_MODELS:  # a whole-call mistake, not a problem of every row
        raise ValueError(f"unknown row kind {kind!r}; choose from {sorted(ROW_MODELS)}")
    rows: list[Row] = []
    errors: list[RowError] = []
    for where, value in read_records(path, split):
        problem = _problem(value, kind)
        if problem is None and check is not None:
            problem = check(value)
        if problem is None:
            rows.append(value)
            continue
        error = RowError(where, problem)
        if on_error == "raise":
            raise RowValidationError(error)
        errors.append(error)
    if not rows and not errors:
        raise DatasetError(f"dataset {path} is empty")
    if not rows:
        raise DatasetError(f"dataset {path} has no valid {kind} rows; first problem: {errors[0]}")
    if errors:  # one warning per file, not per row: a bad file can have millions of bad rows
        warnings.warn(f"skipped {len(errors)} bad {kind} rows of {path}; first: {errors[0]}",
                      stacklevel=2)
    return LoadedDataset(rows=rows, source=str(path), errors=errors)


def _problem(value: object, kind: Kind) -> str | None:
    """What is wrong with a record (a parse error from the reader, or a failed validation)."""
    if isinstance(value, ValueError):
        return str(value)
    try:
        validate_row(value, kind)
    except ValidationError as err:  # pydantic's text spans lines and repeats the row: name fields
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}"
                         for e in err.errors())
    except ValueError as err:
        return str(err)
    return None
