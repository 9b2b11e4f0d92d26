"""What a rollout returns: token ids and the decoding trace, never re-tokenized text."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class Trajectory:
    prompt_ids: list[int]
    # Up to and including the first EOS/stop token (or cut at max_new_tokens).
    response_ids: list[int]
    # 1-based global denoising pass (of this sequence, counted across blocks) that committed each token.
    step_map: list[int]
    # Log-prob of each committed token under the sampling distribution at its commit pass.
    logprobs: list[float]
    # Entropy of the sampling distribution at the commit pass (AGRPO's importance sampling uses it).
    entropies: list[float]
    block_size: int
    finish_reason: FinishReason
    num_forwards: int
    # Tokens the sampler committed after the response end inside the last decoded block, with their
    # steps. They are never trained, but earlier tokens of that block saw them, so the learner needs
    # them to rebuild the exact context of every committed token.
    tail_ids: list[int] = field(default_factory=list)
    tail_steps: list[int] = field(default_factory=list)
    # Full-attention models: length of the generation canvas every pass attended to (slots after
    # response + tail stayed masked). 0 for block-causal models, where later blocks are invisible.
    canvas_len: int = 0
    # Per-token process reward (rewards/process.py placement, weighted), set by the driver when a
    # process reward is configured and the value model takes it; empty = outcome reward only.
    process_rewards: list[float] = field(default_factory=list)
    policy_version: int = 0
    # The prompt's image (a path or data URI, tasks/images.py) for a vision-language model; "" for text.
    image: str = ""
    prompt_uid: str = ""
    sample_idx: int = 0

    @property
    def response_len(self) -> int:
        return len(self.response_ids)

    @property
    def tokens_per_forward(self) -> float:
        return len(self.response_ids) / max(self.num_forwards, 1)

    def to_dict(self) -> dict:
        return asdict(self)
