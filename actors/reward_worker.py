"""RewardWorker: the reward route's rule scorers (docs/design.md §7) — the task's outcome reward and
a rule process reward — on responses it decodes from the batch itself (CPU only)."""
from __future__ import annotations

from typing import Any

from models.tokenizer import load_tokenizer
from rewards import get_reward, score_batch
from rewards.contract import ResponseScore, ScoreParts
from rewards.judging import JudgeRequest, rule_responses
from rewards.limits import RewardLimits
from rewards.process import get_process_fn
from rewards.result import Score
from rollout.trajectory_batch import TrajectoryBatch


class RewardWorker:
    def __init__(self, rank: int, tokenizer_path: str, reward: str, process: str | None = None,
                 chunk_tokens: int = 8, limits: RewardLimits | None = None, concurrency: int = 4,
                 timeout_s: float | None = None) -> None:
        self.rank, self.concurrency, self.timeout_s, self.chunk_tokens = rank, concurrency, timeout_s, chunk_tokens
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.fn = get_reward(reward, limits)  # "math" | "code" | "pkg.module:function"
        self.process_fn = get_process_fn(process) if process else None  # a rule over a response's prefixes

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def score(self, batch: TrajectoryBatch, which: list[int], task_rows: list[dict[str, Any]],
              parts: ScoreParts) -> list[ResponseScore]:
        """One answer per row `which[i]` of the batch, in order; task_rows[i] is its task row. Each
        rule gets reward.timeout_s per response."""
        # Ids are decoded here, never re-tokenized: the learner trains on the ids.
        ids = [batch.ragged["response_ids"].row(i).tolist() for i in which]
        keys = [batch.key(i) for i in which]
        outcome = self._outcome(ids, keys, task_rows) if parts.outcome else [None] * len(which)
        process = (rule_responses(self.process_fn, self.decode, [JudgeRequest(*k, r, row) for k, r, row
                                                                 in zip(keys, ids, task_rows)], self.chunk_tokens,
                                  self.concurrency, self.timeout_s)
                   if parts.process else [None] * len(which))
        return [ResponseScore(*k, o, p) for k, o, p in zip(keys, outcome, process)]

    def _outcome(self, ids: list[list[int]], keys: list[tuple[str, int]],
                 task_rows: list[dict[str, Any]]) -> list[Score]:
        results = score_batch(self.fn, [self.decode(x) for x in ids], task_rows, concurrency=self.concurrency,
                              timeout=self.timeout_s)
        return [Score(*k, float(r["reward"]), bool(r["correct"]), r["info"].get("failure"),
                      str(r["info"].get("error", ""))[:300]) for k, r in zip(keys, results)]
