"""Deterministic train/eval partition of task rows.

A row's side is decided by a keyed hash of its question (and its image, if any) alone, so the split is the same on
every machine and Python version, does not depend on row order or on which other rows exist,
and repeated questions always land on the same side (no train/eval leakage through duplicates).
The same rule partitions generated rows, so an SFT slice and an RL task built with different
difficulty knobs but one seed never share an eval question with each other's train rows."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .schemas import Row


def hash_unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def check_eval_fraction(eval_fraction: float) -> None:
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")


def row_key(row: Row) -> str:
    """What makes a row a distinct question: its text, and its image when it has one."""
    return row["question"] if not row.get("image") else f"{row['question']}\x1f{row['image']}"


def is_eval(row: Row, seed: int, eval_fraction: float) -> bool:
    return hash_unit("split", seed, row_key(row)) < eval_fraction


@dataclass(frozen=True)
class Split:
    train: list[Row]
    eval: list[Row]


def split_rows(rows: list[Row], seed: int, eval_fraction: float) -> Split:
    """Partition `rows` by `is_eval`; each side is in a seeded order that does not depend on the
    input order, so taking its first n rows is a seeded random subset."""
    check_eval_fraction(eval_fraction)
    ordered = sorted(rows, key=lambda row: hash_unit("order", seed, row_key(row)))
    return Split(train=[r for r in ordered if not is_eval(r, seed, eval_fraction)],
                 eval=[r for r in ordered if is_eval(r, seed, eval_fraction)])
