"""What a rollout worker is asked to generate: the driver builds these, the workers consume them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptRecord:
    """One (prompt, sample) to generate; its seed follows from (run seed, uid, sample_idx) alone."""
    uid: str
    prompt_ids: list[int]
    sample_idx: int
    image: str = ""  # the prompt's image (a path or data URI, tasks/images.py); "" for a text prompt
