"""JudgeWorker: an autoregressive judge model (transformers or vLLM backend) scoring responses.

The pool (`judge-0`, `judge-1`, ...; actors/pools.py) has its own placement group, sized by
cluster.judge, and exists only when reward.outcome or reward.process is "judge". Workers are
restartable; actors/process_stage.collect_judging re-issues a dead worker's task.
"""
from __future__ import annotations

import torch

from models.tokenizer import load_tokenizer
from rewards.judge_backends import JudgeConfig, make_backend
from rewards.judging import JudgeRequest, judge_responses
from rewards.process import ProcessScore

from .device import device_for_actor


class JudgeWorker:
    def __init__(self, rank: int, judge: JudgeConfig, tokenizer_path: str, num_gpus: float = 0.0,
                 threads: int = 1) -> None:
        device_for_actor()  # without an assigned GPU, none is visible to the judge's libraries
        torch.set_num_threads(threads)
        self.rank, self.cfg = rank, judge
        self.tokenizer = load_tokenizer(tokenizer_path)  # the policy's: decodes the responses' ids
        self.backend = make_backend(judge, num_gpus)

    def version(self) -> int:
        """A judge holds no policy weights; this answers `wait_restarted`'s liveness probe."""
        return 0

    def score(self, requests: list[JudgeRequest], outcome: bool, chunk_tokens: int | None) -> list[ProcessScore]:
        """One ProcessScore per request, in order (all prompts of the call in one batched generate)."""
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        return judge_responses(self.backend, self.cfg.prompts, decode, requests, outcome, chunk_tokens)
