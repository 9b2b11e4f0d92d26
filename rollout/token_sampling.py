"""Draw one candidate per masked slot: temperature, top-k, top-p, inverse-CDF on a given uniform.

Everything stays on the logits' device with no host synchronisation. The inverse CDF is two-level:
a float64 cumulative sum over per-chunk masses (V / 1024 entries) finds the chunk, a second one
inside that chunk finds the token, so no float64 pass over the whole vocabulary is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Candidates:
    tokens: torch.Tensor      # [M] sampled ids
    logprobs: torch.Tensor    # [M] log-prob of the sampled id under the sampling distribution
    confidence: torch.Tensor  # [M] its probability (what confidence-based strategies rank by)
    entropy: torch.Tensor     # [M] entropy of the sampling distribution


_EXCLUDED = torch.finfo(torch.float32).min  # an excluded token's logit: probability exactly 0, and
# p * logit stays 0 in the entropy (not 0 * -inf = NaN)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  banned_id: int) -> torch.Tensor:
    """The sampling distribution's float32 logits, computed in place (temperature 0 keeps the raw
    logits); excluded tokens (`banned_id` among them) get `_EXCLUDED`."""
    if temperature > 0 and temperature != 1.0:
        logits.div_(temperature)
    logits[:, banned_id] = _EXCLUDED  # after the division, which would take it to -inf
    if top_k and top_k < logits.shape[-1]:
        # The k-th largest logit; for k = 1 the max, 20x faster than topk's selection on a CPU.
        kth = logits.amax(-1, keepdim=True) if top_k == 1 else torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits.masked_fill_(logits < kth, _EXCLUDED)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the mass before it already reaches top_p (the top token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        logits.masked_fill_(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), _EXCLUDED)
    return logits


_CHUNK = 1024


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[M] index i with P(< i) <= u * total < P(<= i), for probs [M, V] float32, u [M] float64.
    Searching for the first cumulative mass *above* the target never picks a zero-probability
    token; if rounding runs past the chunk, the chunk's most likely token is taken."""
    m, vocab = probs.shape
    size = min(_CHUNK, vocab)  # a small vocabulary is one chunk
    whole = vocab - vocab % size
    sums = [probs[:, :whole].view(m, whole // size, size).sum(-1)]
    if whole < vocab:
        sums.append(probs[:, whole:].sum(-1, keepdim=True))
    cum = torch.cat(sums, dim=1).double().cumsum(-1)
    target = (u * cum[:, -1]).unsqueeze(-1)
    chunk = torch.searchsorted(cum, target, right=True).clamp_(max=cum.shape[1] - 1)
    before = torch.where(chunk > 0, cum.gather(1, (chunk - 1).clamp(min=0)), torch.zeros_like(target))
    cols = chunk * size + torch.arange(size, device=probs.device)
    inside = probs.gather(1, cols.clamp(max=vocab - 1)).masked_fill(cols >= vocab, 0.0)
    local = torch.searchsorted(inside.double().cumsum(-1), target - before, right=True)
    local = torch.where(local < size, local, inside.argmax(-1, keepdim=True))
    return (chunk * size + local).squeeze(-1)


def sample_candidates(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int,
                      top_p: float, banned_id: int) -> Candidates:
    """logits [M, V] (overwritten when already float32), u [M] float64 uniforms. `banned_id`
    (the mask token) is never sampled. Three passes over the vocabulary: softmax, the chunk masses
    of the inverse CDF, and sum(p * logit) for the entropy (plus a plain sum)."""
    logits = filter_logits(logits.float(), temperature, top_k, top_p, banned_id)
    probs = torch.softmax(logits, dim=-1)
    tokens = probs.max(-1).indices if temperature == 0 else inverse_cdf(probs, u)
    p_tok = probs.gather(-1, tokens[:, None]).squeeze(-1)
    token_logp = p_tok.log()
    # log-sum-exp from the sampled token (logit - log p), then H = -sum(p * (logit - lse)); the
    # sum(p) factor cancels the softmax's rounding of the total mass (as large as lse * 1e-5).
    lse = logits.gather(-1, tokens[:, None]).squeeze(-1) - token_logp
    entropy = lse * probs.sum(-1) - torch.linalg.vecdot(probs, logits)
    return Candidates(tokens, token_logp, p_tok, entropy)
