"""JudgeWorker: the reward route's judge (docs/design.md §7), an autoregressive model (transformers or
vLLM backend) scoring responses it decodes from the batch itself.

The pool (`judge-0`, `judge-1`, ...) has its own placement group, sized by cluster.judge, and exists
only when reward.outcome or reward.process is "judge". Workers are restartable; the rollout group
re-issues a dead worker's call to the next judge.
"""
from __future__ import annotations

from typing import Any

import torch

from models.tokenizer import load_tokenizer
from rewards.contract import ResponseScore, ScoreParts
from rewards.judge_backends import JudgeConfig, make_backend
from rewards.judging import JudgeRequest, judge_responses
from rewards.process import ProcessScore
from rewards.result import Score
from rollout.trajectory_batch import TrajectoryBatch

from .device import device_for_actor


class JudgeWorker:
    def __init__(self, rank: int, judge: JudgeConfig, tokenizer_path: str, chunk_tokens: int = 8,
                 correct_at: float = 0.5, num_gpus: float = 0.0, threads: int = 1) -> None:
        device_for_actor()  # without an assigned GPU, none is visible to the judge's libraries
        torch.set_num_threads(threads)
        self.rank, self.cfg, self.chunk_tokens, self.correct_at = rank, judge, chunk_tokens, correct_at
        self.tokenizer = load_tokenizer(tokenizer_path)  # the policy's: decodes the responses' ids
        self.backend = make_backend(judge, num_gpus)

    def score(self, batch: TrajectoryBatch, which: list[int], task_rows: list[dict[str, Any]],
              parts: ScoreParts) -> list[ResponseScore]:
        """One answer per row `which[i]` of the batch, in order (all prompts of the call in one
        batched generate)."""
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        requests = [JudgeRequest(*batch.key(i), batch.ragged["response_ids"].row(i).tolist(), row)
                    for i, row in zip(which, task_rows)]
        judged = judge_responses(self.backend, self.cfg.prompts, decode, requests, parts.outcome,
                                 self.chunk_tokens if parts.process else None)
        return [ResponseScore(s.prompt_uid, s.sample_idx, self._outcome(s) if parts.outcome else None,
                              s if parts.process else None) for s in judged]

    def _outcome(self, s: ProcessScore) -> Score:
        """The judge's outcome verdict; an unreadable one is no verdict (left out of training, counted)."""
        failed = s.outcome_failure is not None
        return Score(s.prompt_uid, s.sample_idx, s.outcome, not failed and s.outcome >= self.correct_at,
                     "judge_failed" if failed else None, (s.outcome_failure or "")[:300])
