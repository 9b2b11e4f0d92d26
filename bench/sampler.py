"""Sampler throughput: KV-cached vs uncached block diffusion vs `transformers` AR generate.

Prints one JSON line. All three decode the same batch of random prompts with the same random
weights (our SDAR-shaped model and a transformers Qwen3ForCausalLM holding identical tensors),
for the same number of new tokens, EOS ignored.

    python bench/sampler.py            # prompt 128, 256 new tokens, batch 8, ~50M params
    python bench/sampler.py --new 512  # the issue's target shape
    python bench/sampler.py --quick    # < 1 minute
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.config import ModelConfig  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.sampler import generate  # noqa: E402


def build(hidden: int, layers: int, vocab: int, block: int) -> DiffusionLM:
    torch.manual_seed(0)
    heads = hidden // 64
    cfg = ModelConfig(family="sdar", vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3,
                      num_layers=layers, num_heads=heads, num_kv_heads=max(heads // 2, 1), head_dim=64,
                      max_position_embeddings=4096, block_size=block, mask_token_id=vocab - 1,
                      eos_token_id=vocab - 2, pad_token_id=0)
    model = DiffusionLM(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    return model


def hf_twin(model: DiffusionLM):
    """transformers Qwen3ForCausalLM with our tensors (same names under `model.`)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = model.config
    hf = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings, rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False, eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id)).eval()
    state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return hf


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="denoising passes per block (static: B/K tokens/pass)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.prompt, args.new, args.hidden, args.layers, args.vocab = 64, 64, 256, 4, 8000
    torch.set_num_threads(args.threads)
    model = build(args.hidden, args.layers, args.vocab, args.block)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(1, args.vocab - 2, (args.batch, args.prompt), generator=g)
    params = SamplingParams(block_size=args.block, steps_per_block=args.steps, strategy="static",
                            max_new_tokens=args.new, ignore_eos=True, temperature=1.0)
    prompt_lists = prompts.tolist()
    generate(model, [p[:8] for p in prompt_lists[:2]], params.model_copy(update={"max_new_tokens": 8}))  # warm-up
    t_cached, cached = timed(lambda: generate(model, prompt_lists, params))
    t_uncached, uncached = timed(lambda: generate(model, prompt_lists, params.model_copy(update={"use_cache": False})))
    same = all(a.response_ids == b.response_ids for a, b in zip(cached, uncached))

    hf = hf_twin(model)
    with torch.no_grad():
        hf.generate(prompts[:2, :8], max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        t_hf, _ = timed(lambda: hf.generate(prompts, max_new_tokens=args.new, min_new_tokens=args.new,
                                            do_sample=False, use_cache=True))
    tokens = args.batch * args.new
    out = {
        "tokens_per_s_cached": round(tokens / t_cached, 1),
        "tokens_per_s_uncached": round(tokens / t_uncached, 1),
        "cached_over_uncached": round(t_uncached / t_cached, 2),
        "tokens_per_s_hf_ar": round(tokens / t_hf, 1),
        "over_hf_ar": round(t_hf / t_cached, 3),
        "tokens_per_forward": round(sum(len(t.response_ids) for t in cached) / sum(t.num_forwards for t in cached), 3),
        "cached_equals_uncached": same,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "batch": args.batch, "prompt": args.prompt, "new_tokens": args.new, "block": args.block,
        "steps_per_block": args.steps, "strategy": "static", "threads": args.threads,
        "seconds": {"cached": round(t_cached, 2), "uncached": round(t_uncached, 2), "hf_ar": round(t_hf, 2)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
