"""Chunked log-sum-exp log-probs (and entropy) equal the plain full-vocabulary log-softmax, values
and gradients, whatever the chunk size."""
import pytest
import torch

from helpers import MASK, PAD, params, prompts_mixed, tiny_model
from learner.batching import micro_batches
from learner.logprobs import token_logprobs
from learner.rows import trace_rows
from rollout.sampler import generate


def plain(model, mb, temperature):
    logits = model(mb.input_ids, mb.position_ids, mb.attn_mask, logits_at=mb.logits_at).float() / temperature
    logp = torch.log_softmax(logits.index_fill(-1, torch.tensor([MASK]), float("-inf")), -1)
    p = logp.exp()
    return logp.gather(-1, mb.targets[:, None])[:, 0], -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_chunked_logprobs_equal_log_softmax(chunk):
    model = tiny_model(4, vocab=40, sharpen=3.0).train()
    trajs = generate(model.eval(), prompts_mixed(4), params(max_new_tokens=12), seeds=[0, 1, 2, 3])
    model.train()
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "block_causal", 1, MASK, 0, 1024)]
    (mb,) = micro_batches(rows, 4096, PAD)
    lp, ent = token_logprobs(model, mb, MASK, 0.7, with_entropy=True, chunk=chunk)
    ref_lp, ref_ent = plain(model, mb, 0.7)
    assert torch.allclose(lp, ref_lp, rtol=0, atol=2e-6) and torch.allclose(ent, ref_ent, rtol=0, atol=2e-6)
    assert not ent.requires_grad  # a logged metric: no graph kept for it
    w = torch.linspace(-1, 1, len(lp))
    params_ = list(model.parameters())
    for a, b in zip(torch.autograd.grad((lp * w).sum(), params_), torch.autograd.grad((ref_lp * w).sum(), params_)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))
