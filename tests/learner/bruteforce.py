"""Test oracle: the naive way to score a trajectory: one forward per (block, step) state over the bare sequence.

It is the reference the packed TraceRL rows are tested and benchmarked against: same numbers,
~K× more forwards, each over the whole prefix.
"""
from __future__ import annotations

import torch
from torch import nn

from dense_masks import column_mask
from rollout.trajectory import Trajectory
from tests.learner.python_rows import Sequence, block_step_groups


def state_logprobs(model: nn.Module, traj: Trajectory, mask_id: int) -> torch.Tensor:
    """[len(response)] log-prob of every committed token in the state just before its step."""
    seq = Sequence.of(traj, mask_id)
    B, P = traj.block_size, seq.prompt_len
    out = [torch.zeros(())] * seq.response_len
    for b, groups in block_step_groups(seq, B, 1).items():
        end = min((b + 1) * B, len(seq.ids))
        cols = torch.arange(end)
        mask = column_mask(cols, cols, torch.ones(1, end, dtype=torch.bool), B)
        for g in groups:
            state = [tok if p < max(b * B, P) or s < g[0] else mask_id
                     for p, (tok, s) in enumerate(zip(seq.ids[:end], seq.steps[:end]))]
            trained = [p for p in range(b * B, end) if seq.is_response(p) and seq.steps[p] in g]
            logits = model(torch.tensor([state]), cols[None], mask, logits_at=None)[0, trained].float()
            logits = logits.index_fill(-1, torch.tensor([mask_id]), float("-inf"))
            logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(seq.ids)[trained, None])[:, 0]
            for p, lp in zip(trained, logp):
                out[p - P] = lp
    return torch.stack(out)
