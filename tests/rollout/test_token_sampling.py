"""The chunked inverse CDF against a float64 cumulative sum over the whole vocabulary."""

import pytest
import torch

from rollout.token_sampling import filter_logits, inverse_cdf, sample_candidates


@pytest.mark.parametrize("vocab", [7, 1024, 3001])
def test_inverse_cdf_equals_a_full_float64_cumsum(vocab):
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(64, vocab, generator=g) * 4
    logits[:, ::3] = float("-inf")  # zero-probability tokens between the others
    probs = torch.softmax(logits, -1)
    u = torch.rand(64, generator=g, dtype=torch.float64)
    u[:3] = torch.tensor([0.0, 1 - 2**-53, 0.5])
    cdf = probs.double().cumsum(-1)
    reference = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1).clamp(max=vocab - 1)
    tokens = inverse_cdf(probs, u)
    assert (probs.gather(1, tokens[:, None]) > 0).all()  # never a zero-probability token, even at u = 0 or ~1
    assert (tokens[2:] == reference[2:]).all()
    # The edges: u = 0 takes the first positive token, u -> 1 the last one (the reference's clamp
    # would land on a zero-probability token there).
    assert tokens[0] == (probs[0] > 0).nonzero()[0, 0] and tokens[1] == (probs[1] > 0).nonzero()[-1, 0]


def test_candidates_match_log_softmax_of_the_filtered_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 3001, generator=g) * 3
    u = torch.rand(32, generator=g, dtype=torch.float64)
    for top_k, top_p in ((0, 1.0), (50, 1.0), (0, 0.9)):
        cand = sample_candidates(logits.clone(), u, 0.7, top_k, top_p, banned_id=5)
        ref = logits / 0.7
        ref[:, 5] = float("-inf")
        if top_k:
            ref = ref.masked_fill(ref < ref.topk(top_k, -1).values[:, -1:], float("-inf"))
        logp = torch.log_softmax(ref.double(), -1)
        if top_p < 1:  # drop tokens once the mass before them reaches top_p
            p_sorted, order = logp.exp().sort(-1, descending=True)
            drop = torch.zeros_like(p_sorted, dtype=torch.bool).scatter(
                -1, order, (p_sorted.cumsum(-1) - p_sorted) >= top_p
            )
            logp = torch.log_softmax(ref.double().masked_fill(drop, float("-inf")), -1)
        assert torch.isfinite(logp.gather(1, cand.tokens[:, None])).all() and (cand.tokens != 5).all()
        assert torch.allclose(cand.logprobs.double(), logp.gather(1, cand.tokens[:, None])[:, 0], atol=1e-5)
        probs = logp.exp()
        entropy = -(probs * logp.masked_fill(probs == 0, 0)).sum(-1)
        assert torch.allclose(cand.entropy.double(), entropy, atol=1e-4)


def test_top_1_keeps_every_tied_best_logit_as_topk_does():
    """top_k = 1 takes the max (faster than topk's selection): the same kept set, ties included."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 3001, generator=g)
    logits[:8, 7] = logits[:8, 9] = logits[:8].amax(-1) + 1  # two best logits tied in half the rows
    kept = filter_logits(logits.clone(), 1.0, 1, 1.0, banned_id=5) > torch.finfo(torch.float32).min
    reference = logits >= logits.topk(1, -1).values
    assert torch.equal(kept, reference) and (kept.sum(-1) == torch.tensor([2] * 8 + [1] * 8)).all()
