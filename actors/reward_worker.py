"""RewardWorker: decodes response ids and scores them against their task rows (CPU only)."""
from __future__ import annotations

from typing import Any

from models.tokenizer import load_tokenizer
from rewards import get_reward, score_batch
from rewards.result import Score
from rollout.trajectory import Trajectory


class RewardWorker:
    def __init__(self, rank: int, tokenizer_path: str, reward: str, concurrency: int = 4,
                 timeout_s: float | None = None) -> None:
        self.rank, self.concurrency, self.timeout_s = rank, concurrency, timeout_s
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.fn = get_reward(reward)  # "math" | "code" | "pkg.module:function"

    def score(self, trajectories: list[Trajectory], rows: list[dict[str, Any]]) -> list[Score]:
        """One Score per trajectory, in order; rows[i] is the task row of trajectories[i]."""
        # Ids are decoded once here, never re-tokenized: the learner trains on the ids.
        texts = [self.tokenizer.decode(t.response_ids, skip_special_tokens=True) for t in trajectories]
        results = score_batch(self.fn, texts, rows, concurrency=self.concurrency, timeout=self.timeout_s)
        return [Score(t.prompt_uid, t.sample_idx, float(r["reward"]), bool(r["correct"]), r["info"].get("failure"),
                      str(r["info"].get("error", ""))[:300])
                for t, r in zip(trajectories, results)]
