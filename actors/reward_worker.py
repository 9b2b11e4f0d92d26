"""RewardWorker: decodes response ids and scores them against their task rows (CPU only)."""
from __future__ import annotations

from typing import Any

from models.tokenizer import load_tokenizer
from rewards import get_reward, score_batch
from rewards.result import Score
from rollout.trajectory_batch import TrajectoryBatch


class RewardWorker:
    def __init__(self, rank: int, tokenizer_path: str, reward: str, concurrency: int = 4,
                 timeout_s: float | None = None) -> None:
        self.rank, self.concurrency, self.timeout_s = rank, concurrency, timeout_s
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.fn = get_reward(reward)  # "math" | "code" | "pkg.module:function"

    def score(self, batch: TrajectoryBatch, which: list[int], rows: list[dict[str, Any]]) -> list[Score]:
        """One Score per row `which[i]` of the batch, in order; rows[i] is its task row."""
        # Ids are decoded once here, never re-tokenized: the learner trains on the ids.
        texts = [self.tokenizer.decode(batch.ragged["response_ids"].row(i).tolist(), skip_special_tokens=True)
                 for i in which]
        results = score_batch(self.fn, texts, rows, concurrency=self.concurrency, timeout=self.timeout_s)
        return [Score(*batch.key(i), float(r["reward"]), bool(r["correct"]), r["info"].get("failure"),
                      str(r["info"].get("error", ""))[:300])
                for i, r in zip(which, results)]
