"""Sampler throughput: KV-cached vs uncached block diffusion vs `transformers` AR generate.

Prints one JSON line. All three decode the same batch of prompts with the same weights (our
SDAR-shaped model and a transformers Qwen3ForCausalLM holding identical tensors).

Synthetic (default): random weights and random prompts; every decoder makes exactly `--new`
tokens per row, EOS ignored, sampled at temperature 1.

    python bench/sampler.py            # prompt 128, 256 new tokens, batch 8, ~50M params
    python bench/sampler.py --new 512  # the issue's target shape
    python bench/sampler.py --quick    # < 1 minute

`--model PATH` (an SDAR/TraDo or tiny HF checkpoint directory, e.g. runs/*/checkpoints/step_N/hf):
the trained weights, decoded greedily as the end-of-run report does. A tiny-family checkpoint
(char tokenizer) gets the built-in arith task's held-out prompts (conf/task/arith.yaml, seed 0,
the first `--batch` of them; `--batch 256` is the report's whole set) and their accuracy is
reported; an SDAR/TraDo checkpoint gets random prompts below its special ids. Our sampler stops
at EOS (max_new_tokens `--new`, default 24 as in conf/config.yaml). The AR twin's outputs mean
nothing (our logits are unshifted, a causal LM's are shifted), so it cannot stop at EOS by
itself: it makes L tokens for every row, L = our longest response, i.e. the forwards a batched
AR decode of the same answers takes. Both are credited with the response tokens our sampler
kept, so over_hf_ar = AR seconds ÷ our seconds as in the synthetic mode;
over_hf_ar_all_ar_tokens credits AR with all batch × L tokens it made instead.

    python bench/sampler.py --model /tmp/trained_hf --strategy dynamic --threads 1 --repeats 15

over_hf_ar = our tokens/s ÷ AR generate tokens/s. `--repeats` keeps the fastest of N timings of
each decoder, taking turns (the development machine is shared, single timings are noisy; under
contention --threads 1 is far steadier than 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, get_args

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.checkpoint import load_model  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.tokenizer import load_tokenizer  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402
from rollout.params import SamplingParams, Strategy  # noqa: E402
from rollout.sampler import generate  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from tasks.prompts import encode_prompt  # noqa: E402
from tasks.registry import get_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
Scorer = Callable[[list[Trajectory]], float]


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


def random_prompts(cfg: ModelConfig, batch: int, length: int) -> list[list[int]]:
    """Ids below EOS and mask: special ids come after the ordinary ones (synthetic model, Qwen)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, min(cfg.eos_token_id, cfg.mask_token_id), (batch, length), generator=g).tolist()


def arith_prompts(path: Path, batch: int) -> tuple[list[list[int]], Scorer]:
    """The report's held-out arith prompts (first `batch`) and an accuracy scorer for them."""
    tokenizer = load_tokenizer(path)
    task = get_task("arith", **yaml.safe_load((REPO / "conf/task/arith.yaml").read_text())["params"])
    rows = task.eval_rows(batch, seed=0)
    prompts = [encode_prompt(r, tokenizer, task.template, task.kind) for r in rows]

    def accuracy(trajs: list[Trajectory]) -> float:
        texts = [tokenizer.decode(t.response_ids, skip_special_tokens=True) for t in trajs]
        return round(sum(task.reward(x, r)["correct"] for x, r in zip(texts, rows)) / len(rows), 4)
    return prompts, accuracy


def fastest(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Fastest of `repeats` timings of each fn; the fns take turns, so load that comes and goes on
    a shared machine hits them alike."""
    best, out = {name: float("inf") for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, out


def hf_generate(hf, prompts: list[list[int]], new: int, pad_id: int) -> None:
    """Greedy AR generate of exactly `new` tokens per row; prompts left-padded."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    hf.generate(ids, attention_mask=attn, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                use_cache=True, pad_token_id=pad_id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", type=Path, help="HF checkpoint directory (see the module docstring)")
    ap.add_argument("--prompt", type=int, default=128, help="random prompts: tokens per prompt")
    ap.add_argument("--new", type=int, help="max new tokens (default 256; 24 with --model)")
    ap.add_argument("--batch", type=int, help="prompts per batch (default 8)")
    ap.add_argument("--block", type=int, help="block size B (default 4; the checkpoint's with --model)")
    ap.add_argument("--steps", type=int, default=4, help="denoising passes per block (static: B/K tokens/pass)")
    ap.add_argument("--strategy", choices=get_args(Strategy), default="static")
    ap.add_argument("--threshold", type=float, help="dynamic τ (default: SamplingParams' default)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="keep the fastest of N timings of each decoder")
    args = ap.parse_args()
    if args.quick:
        args.prompt, args.new, args.hidden, args.layers, args.vocab = 64, 64, 256, 4, 8000
    torch.set_num_threads(args.threads)
    score: Scorer | None = None
    if args.model:
        model = load_model(args.model).eval()
        if model.config.family not in ("sdar", "tiny"):  # the AR twin is a Qwen3
            ap.error(f"--model: a {model.config.family} checkpoint has no Qwen3 twin; use an SDAR/TraDo or tiny one")
        batch, new = args.batch or 8, args.new or 24
        if model.config.family == "tiny":
            prompts, score = arith_prompts(args.model, batch)
        else:
            prompts = random_prompts(model.config, batch, args.prompt)
    else:
        batch, new = args.batch or 8, args.new or 256
        model = build(args.hidden, args.layers, args.vocab, args.block or 4)
        prompts = random_prompts(model.config, batch, args.prompt)
    cfg = model.config
    update = {} if args.threshold is None else {"threshold": args.threshold}
    params = SamplingParams(block_size=args.block or cfg.block_size, steps_per_block=args.steps,
                            strategy=args.strategy, max_new_tokens=new, ignore_eos=not args.model,
                            temperature=0.0 if args.model else 1.0, **update)
    uncached_params = params.model_copy(update={"use_cache": False})
    if args.model:  # the AR twin makes as many tokens per row as our longest response: decode once (and warm up)
        ar_new = max(len(t.response_ids) for t in generate(model, prompts, params))
    else:
        generate(model, [p[:8] for p in prompts[:2]], params.model_copy(update={"max_new_tokens": 8}))  # warm-up
        ar_new = new
    hf = hf_twin(model)
    with torch.no_grad():
        hf_generate(hf, [p[:8] for p in prompts[:2]], 4, cfg.pad_token_id)  # warm-up
        seconds, outs = fastest({"cached": lambda: generate(model, prompts, params),
                                 "uncached": lambda: generate(model, prompts, uncached_params),
                                 "hf_ar": lambda: hf_generate(hf, prompts, ar_new, cfg.pad_token_id)}, args.repeats)
    cached, uncached = outs["cached"], outs["uncached"]
    same = all(a.response_ids == b.response_ids for a, b in zip(cached, uncached))
    tokens = sum(len(t.response_ids) for t in cached)
    t_cached, t_uncached, t_hf = seconds["cached"], seconds["uncached"], seconds["hf_ar"]
    out = {
        "tokens_per_s_cached": round(tokens / t_cached, 1),
        "tokens_per_s_uncached": round(tokens / t_uncached, 1),
        "cached_over_uncached": round(t_uncached / t_cached, 2),
        "tokens_per_s_hf_ar": round(tokens / t_hf, 1),
        "over_hf_ar": round(t_hf / t_cached, 3),
        "over_hf_ar_all_ar_tokens": round((tokens / t_cached) / (batch * ar_new / t_hf), 3),
        "tokens_per_forward": round(tokens / sum(t.num_forwards for t in cached), 3),
        "cached_equals_uncached": same,
        **({"accuracy": score(cached)} if score else {}),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "model": str(args.model) if args.model else "random", "batch": batch,
        "prompt": round(sum(map(len, prompts)) / batch, 1), "new_tokens": new, "ar_new_tokens": ar_new,
        "block": params.block_size, "steps_per_block": args.steps, "strategy": args.strategy,
        **({"threshold": params.threshold} if args.strategy == "dynamic" else {}),
        "threads": args.threads, "repeats": args.repeats,
        "seconds": {"cached": round(t_cached, 3), "uncached": round(t_uncached, 3), "hf_ar": round(t_hf, 3)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
