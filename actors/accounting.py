"""A rollout's accounting: every requested (prompt uid, sample) comes back exactly once and every
scorer of the route answers it exactly once (actors/rollout_group.py checks it at each collect)."""
from __future__ import annotations

from collections import Counter

from rewards.contract import ResponseScore
from rollout.requests import PromptRecord
from rollout.trajectory_batch import RowMeta

from .reward_route import Key


def record(answers: dict[Key, ResponseScore], result: list[ResponseScore]) -> None:
    for a in result:
        if a.key in answers:
            raise RuntimeError(f"reward accounting failed: {a.key} answered twice")
        answers[a.key] = a


def check_accounting(records: list[PromptRecord], rows: list[RowMeta],
                     answers: dict[str, dict[Key, ResponseScore]]) -> None:
    """Every requested (uid, sample) came back exactly once and every scorer answered it."""
    want = Counter((r.uid, r.sample_idx) for r in records)
    got = Counter(m.key for m in rows)
    unscored = {name: sorted(set(want) - set(by_key))[:5] for name, by_key in answers.items()
                if set(by_key) != set(want)}
    if got != want or unscored:
        lost, extra = want - got, got - want
        raise RuntimeError(f"prompt accounting failed: lost {sorted(lost)[:5]}, duplicated {sorted(extra)[:5]}, "
                           f"unscored {unscored}")
