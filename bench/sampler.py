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

Engine figures (added to the same JSON line):
- host_syncs_per_pass: blocking device→host reads per denoising pass of the cached run (HostLink).
- The machine's limits, measured in the same run: matmul_gflops_per_s (a 2048³ matmul in the
  model's dtype), read_gbytes_per_s (a read of a 1 GiB buffer: the memory's rate) and
  weights_sized_read_gbytes_per_s (a buffer as large as the weights a pass streams: the caches' rate);
  roofline_cached: the cached run's GFLOP/s and GB/s, their shares of those limits, and a breakdown
  of its time by phase (bench/sampler_roofline.py).
- `--batches 1,8,32 --strategies static,dynamic`: the same figures per configuration (key
  `static_b32`, ...); with `--baseline DIR` (repeatable; a checkout of another commit, e.g.
  `git archive f3e6162 | tar -x -C /tmp/f3e6162`) that engine runs the same model and prompts in a
  subprocess, taking turns with ours `--repeats` times (best of each kept): `over DIR` = our
  tokens/s ÷ its.
- `--heavy`: a heavy-tailed workload (EOS at random lengths: stop ids are a slice of the vocabulary
  sized so that a fifth of the rows reach max_new_tokens) decoded with continuous batching and
  with static batches of the same `--max-batch-rows` (each until its longest row ends), both
  produce the same rows (each row depends on its seed alone). continuous_over_static_batching =
  static seconds ÷ continuous seconds with fixed-shape passes (every slot every pass: what CUDA
  graphs and compiled passes run, and what a GPU pass costs whatever its live rows);
  continuous_over_static_batching_trimmed: the same with the eager engine's passes, which compute
  only live rows (on a CPU a static batch then gets cheaper as its rows finish).
- `--no-reference` skips the uncached and transformers runs (real-size vocabularies).
- `--device cuda --dtype bfloat16 --shape sdar_4b`: random weights at a real checkpoint shape.
- `--images N`: image prompts (N image tokens) against text prompts of the same length, per-pass cost
  (bench/sampler_images.py).

    python bench/sampler.py --no-reference --vocab 151936 --hidden 256 --layers 4 --prompt 32 --new 16 \
        --batch 64 --batches 64,256 --baseline /tmp/old --heavy --threads 1
    python bench/sampler.py --no-reference --vocab 4096 --top-k 1 --threshold 0.9 --batches 1,8,32 \
        --strategies static,dynamic --baseline /tmp/f3e6162 --repeats 3   # the issue-22 table
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, get_args

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO, bench_parser, emit, fastest  # noqa: E402
from bench.sampler_images import image_figures  # noqa: E402
from bench.sampler_roofline import decode_work, limits, roofline, sweep  # noqa: E402
from bench.shapes import SHAPES, random_model, random_prompts  # noqa: E402
from models.checkpoint import load_model  # noqa: E402
from models.tiny import synthetic_config  # noqa: E402
from models.tokenizer import load_tokenizer  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402
from rollout.decode_forward import DecodeForward  # noqa: E402
from rollout.params import SamplingParams, Strategy  # noqa: E402
from rollout.sampler import generate  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from tasks.prompts import encode_prompt  # noqa: E402
from tasks.registry import get_task  # noqa: E402

Scorer = Callable[[list[Trajectory]], float]


def build(hidden: int, layers: int, vocab: int, block: int) -> DiffusionLM:
    torch.manual_seed(0)
    heads = hidden // 64
    cfg = synthetic_config(
        vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=max(heads // 2, 1),
        head_dim=64,
        max_position_embeddings=4096,
        block_size=block,
    )
    model = DiffusionLM(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    return model


def hf_twin(model: DiffusionLM):
    """transformers Qwen3ForCausalLM with our tensors (same names under `model.`)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    c = model.config
    hf = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_layers,
            num_attention_heads=c.num_heads,
            num_key_value_heads=c.num_kv_heads,
            head_dim=c.head_dim,
            max_position_embeddings=c.max_position_embeddings,
            rope_theta=c.rope_theta,
            rms_norm_eps=c.rms_norm_eps,
            tie_word_embeddings=False,
            eos_token_id=c.eos_token_id,
            pad_token_id=c.pad_token_id,
        )
    ).eval()
    state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return hf


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


def hf_generate(hf, prompts: list[list[int]], new: int, pad_id: int) -> None:
    """Greedy AR generate of exactly `new` tokens per row; prompts left-padded."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    hf.generate(
        ids,
        attention_mask=attn,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        use_cache=True,
        pad_token_id=pad_id,
    )


def heavy_tailed(
    model: DiffusionLM, params: SamplingParams, rows: int, batch_rows: int, prompt: int, repeats: int
) -> dict[str, Any]:
    """Continuous vs static batching on rows whose lengths are geometric, a fifth reaching the budget.

    Static batching decodes fixed batches of `batch_rows`, each until its longest row ends. Two pass
    kinds: fixed shapes (every pass computes every slot, as CUDA-graph and compiled passes do, and
    as a GPU's cost barely shrinks with a batch's live rows) and the eager engine's trimmed passes
    (finished rows compacted away, so on a CPU a static batch's cost shrinks with it)."""
    cfg, new = model.config, params.max_new_tokens
    stop_p = 1 - 0.2 ** (1 / new)  # P(no stop in `new` tokens) = 1/5 for near-uniform logits
    n_stop = max(1, round(stop_p * cfg.eos_token_id))
    p = params.model_copy(
        update=dict(ignore_eos=False, max_batch_rows=batch_rows, stop_token_ids=tuple(range(1, n_stop + 1)))
    )
    prompts = random_prompts(cfg, rows, prompt, seed=2)
    chunks = [prompts[i : i + batch_rows] for i in range(0, rows, batch_rows)]
    seeds = list(range(rows))
    passes = {"fixed": DecodeForward(fixed_shapes=True), "trimmed": DecodeForward()}

    def static(kind: str) -> list[Trajectory]:
        return [
            t
            for i, c in enumerate(chunks)
            for t in generate(model, c, p, seeds[i * batch_rows : (i + 1) * batch_rows], forward=passes[kind])
        ]

    runs: dict[str, Callable[[], Any]] = {}
    for kind in passes:
        runs[f"continuous_{kind}"] = lambda kind=kind: generate(model, prompts, p, seeds, forward=passes[kind])
        runs[f"static_{kind}"] = lambda kind=kind: static(kind)
    seconds, outs = fastest(runs, repeats)
    # Equal up to float32 rounding: batched matmuls of other shapes round differently, which can flip
    # a near-tie of random weights' flat distributions (in float64 every row is identical).
    same = sum(a.response_ids == b.response_ids for a, b in zip(outs["continuous_trimmed"], outs["static_trimmed"]))
    lengths = sorted(len(t.response_ids) for t in outs["continuous_trimmed"])
    ratio = {k: round(seconds[f"static_{k}"] / seconds[f"continuous_{k}"], 2) for k in passes}
    return {
        "continuous_over_static_batching": ratio["fixed"],
        "continuous_over_static_batching_trimmed": ratio["trimmed"],
        "heavy": {
            "rows": rows,
            "max_batch_rows": batch_rows,
            "stop_ids": n_stop,
            "rows_identical": same,
            "median_len": lengths[rows // 2],
            "at_budget": sum(n == new for n in lengths),
            "tokens": sum(lengths),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        },
    }


def main() -> None:
    ap = bench_parser(threads=2, repeats=1, repeats_help="keep the fastest of N timings of each decoder")
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
    ap.add_argument("--no-reference", action="store_true", help="skip the uncached and transformers runs")
    ap.add_argument("--top-k", type=int, default=0, help="top-k filter of the sampling distribution (0 = off)")
    ap.add_argument("--batches", default="", help="comma-separated batch sizes: per-configuration figures")
    ap.add_argument("--strategies", default="static", help="--batches: comma-separated strategies")
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="checkout of another commit to run at --batches (repeatable)")
    ap.add_argument("--heavy", action="store_true", help="continuous vs static batching, heavy-tailed lengths")
    ap.add_argument("--heavy-rows", type=int, default=64)
    ap.add_argument("--max-batch-rows", type=int, default=16, help="--heavy: rows in flight")
    ap.add_argument("--compile", action="store_true", help="rollout.compile: torch.compile the decode passes "
                    "(ours only; the work counted is the eager decode's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random weights at a real checkpoint shape")
    ap.add_argument("--images", type=int, help="N image tokens: image vs text prompts (bench/sampler_images.py)")
    args = ap.parse_args()
    if args.quick:
        args.prompt, args.new, args.hidden, args.layers, args.vocab = 64, 64, 256, 4, 8000
    torch.set_num_threads(args.threads)
    if args.images:
        emit(image_figures(args))
        return
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
    elif args.shape:
        batch, new = args.batch or 8, args.new or 256
        model = random_model(SHAPES[args.shape], args.block or 4, args.device, getattr(torch, args.dtype))
        prompts = random_prompts(model.config, batch, args.prompt)
    else:
        batch, new = args.batch or 8, args.new or 256
        model = build(args.hidden, args.layers, args.vocab, args.block or 4)
        model = model.to(args.device, getattr(torch, args.dtype))
        prompts = random_prompts(model.config, batch, args.prompt)
    cfg = model.config
    update = {} if args.threshold is None else {"threshold": args.threshold}
    params = SamplingParams(
        block_size=args.block or cfg.block_size,
        steps_per_block=args.steps,
        strategy=args.strategy,
        max_new_tokens=new,
        ignore_eos=not args.model,
        temperature=0.0 if args.model else 1.0,
        top_k=args.top_k,
        compile=args.compile,
        **update,
    )
    uncached_params = params.model_copy(update={"use_cache": False})
    if args.model:  # the AR twin makes as many tokens per row as our longest response: decode once (and warm up)
        ar_new = max(len(t.response_ids) for t in generate(model, prompts, params))
    else:
        generate(model, [p[:8] for p in prompts[:2]], params.model_copy(update={"max_new_tokens": 8}))  # warm-up
        ar_new = new
    stats: dict[str, int] = {}
    fns: dict[str, Callable[[], Any]] = {"cached": lambda: generate(model, prompts, params, stats=stats)}
    if not args.no_reference:
        hf = hf_twin(model)
        with torch.no_grad():
            hf_generate(hf, [p[:8] for p in prompts[:2]], 4, cfg.pad_token_id)  # warm-up
        fns["uncached"] = lambda: generate(model, prompts, uncached_params)
        fns["hf_ar"] = lambda: torch.no_grad()(hf_generate)(hf, prompts, ar_new, cfg.pad_token_id)
    seconds, outs = fastest(fns, args.repeats)
    cached = outs["cached"]
    tokens = sum(len(t.response_ids) for t in cached)
    t_cached = seconds["cached"]
    lim = limits(model, args.quick)
    out: dict[str, Any] = {"tokens_per_s_cached": round(tokens / t_cached, 1),
                           "matmul_gflops_per_s": round(lim["matmul_flops_per_s"] / 1e9, 1),
                           "read_gbytes_per_s": round(lim["read_bytes_per_s"] / 1e9, 2),
                           "weights_sized_read_gbytes_per_s": round(lim["weights_sized_read_bytes_per_s"] / 1e9, 2),
                           "roofline_cached": roofline(decode_work(model, prompts, params), t_cached, tokens, lim)}
    if not args.no_reference:
        t_uncached, t_hf = seconds["uncached"], seconds["hf_ar"]
        out.update(
            {
                "tokens_per_s_uncached": round(tokens / t_uncached, 1),
                "cached_over_uncached": round(t_uncached / t_cached, 2),
                "tokens_per_s_hf_ar": round(tokens / t_hf, 1),
                "over_hf_ar": round(t_hf / t_cached, 3),
                "over_hf_ar_all_ar_tokens": round((tokens / t_cached) / (batch * ar_new / t_hf), 3),
                "cached_equals_uncached": all(
                    a.response_ids == b.response_ids for a, b in zip(cached, outs["uncached"])
                ),
            }
        )
    out.update(
        {
            "tokens_per_forward": round(tokens / sum(t.num_forwards for t in cached), 3),
            "host_syncs_per_pass": round(stats["host_syncs"] / stats["passes"], 3),
            **({"accuracy": score(cached)} if score else {}),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "model": str(args.model) if args.model else (args.shape or "random"),
            "batch": batch,
            "prompt": round(sum(map(len, prompts)) / batch, 1),
            "new_tokens": new,
            "ar_new_tokens": ar_new,
            "block": params.block_size,
            "steps_per_block": args.steps,
            "strategy": args.strategy,
            **({"threshold": params.threshold} if args.strategy == "dynamic" else {}),
            "vocab": cfg.vocab_size,
            "device": args.device,
            "dtype": args.dtype,
            "compile": args.compile,
            "threads": args.threads,
            "repeats": args.repeats,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    )
    if args.batches:
        out["configs"] = sweep(model, params, args, lim)
        out["baselines"] = [str(b) for b in args.baseline]
    if args.heavy:
        out.update(heavy_tailed(model, params, args.heavy_rows, args.max_batch_rows, args.prompt, args.repeats))
    emit(out)


if __name__ == "__main__":
    main()
