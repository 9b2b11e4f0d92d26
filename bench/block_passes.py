"""Where a dynamic decode's forwards go, per block size: the figures behind README "Block-size adaptation".

Decodes a tiny-family checkpoint's held-out prompts of a built-in task (its conf/task yaml's params,
`--param key=value` overriding them; the first `--prompts` eval rows of split seed 0: the run
report's set) greedily with the dynamic strategy at each `--blocks` B (steps_per_block = B), and
prints one JSON line with, per B:
accuracy, response tokens (up to and including EOS), forwards (the row's denoising passes, as
Trajectory.num_forwards: the prompt's prefill is not one), their ratio, the blocks a response spans
(the first one shares the prompt's tail), passes per block, and the tail (slots after EOS the last
block still decodes). tokens/forward <= tokens / blocks: a larger B pays only if few passes fill a block.

    python bench/block_passes.py --model runs/warm_starts/HASH --task arith --blocks 4,8
    python bench/block_passes.py --model DIR --task digits --param op=sort --threshold 0.97
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository first (bench/common.py)

import torch  # noqa: E402
import yaml  # noqa: E402

from bench.common import REPO, bench_parser, emit  # noqa: E402
from models.checkpoint import load_model  # noqa: E402
from models.tokenizer import load_tokenizer  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.sampler import generate  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from tasks.prompts import encode_prompt  # noqa: E402
from tasks.registry import get_task, resolve_reward  # noqa: E402


def passes_per_block(t: Trajectory) -> list[int]:
    """Distinct commit passes of each block the response (and its tail) spans."""
    B, first = t.block_size, len(t.prompt_ids)
    by_block: dict[int, set[int]] = {}
    for i, step in enumerate(t.step_map + t.tail_steps):
        by_block.setdefault((first + i) // B, set()).add(step)
    return [len(steps) for steps in by_block.values()]


def figures(trajs: list[Trajectory], correct: list[bool]) -> dict[str, float]:
    tokens, forwards = sum(len(t.response_ids) for t in trajs), sum(t.num_forwards for t in trajs)
    blocks = [passes_per_block(t) for t in trajs]
    return {"accuracy": round(statistics.fmean(correct), 4), "tokens": round(tokens / len(trajs), 3),
            "forwards": round(forwards / len(trajs), 3), "tokens_per_forward": round(tokens / forwards, 3),
            "blocks": round(statistics.fmean(len(b) for b in blocks), 3),
            "passes_per_block": round(statistics.fmean(p for b in blocks for p in b), 3),
            "tail": round(statistics.fmean(len(t.tail_ids) for t in trajs), 3)}


def main() -> None:
    ap = bench_parser(__doc__, quick="64 prompts", threads=1)
    ap.add_argument("--model", type=Path, required=True, help="tiny-family HF checkpoint directory")
    ap.add_argument("--task", default="arith", help="a built-in task with a conf/task/<name>.yaml")
    ap.add_argument("--param", action="append", default=[], help="task knob key=value (repeatable)")
    ap.add_argument("--blocks", default="4,8", help="comma-separated block sizes")
    ap.add_argument("--threshold", type=float, default=0.97, help="dynamic τ")
    ap.add_argument("--prompts", type=int, default=1024, help="held-out prompts (the run report's 1,024)")
    ap.add_argument("--new", type=int, default=24, help="max new tokens (conf/config.yaml's 24)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((REPO / f"conf/task/{args.task}.yaml").read_text())["params"]
    params.update(yaml.safe_load(f"{{{', '.join(p.replace('=', ': ', 1) for p in args.param)}}}") or {})
    task = get_task(args.task, **params)
    rows = task.eval_rows(64 if args.quick else args.prompts, seed=0)
    tokenizer = load_tokenizer(args.model)
    prompts = [encode_prompt(r, tokenizer, task.template, task.kind) for r in rows]
    reward = resolve_reward(task.reward_path)
    out: dict[str, object] = {"model": str(args.model), "task": args.task, "params": params,
                              "threshold": args.threshold, "prompts": len(rows)}
    for B in (int(b) for b in args.blocks.split(",")):
        model = load_model(args.model, overrides={"block_size": B}).eval()
        sampling = SamplingParams(block_size=B, steps_per_block=B, strategy="dynamic", threshold=args.threshold,
                                  temperature=0.0, max_new_tokens=args.new)
        trajs = generate(model, prompts, sampling)
        correct = [reward(tokenizer.decode(t.response_ids, skip_special_tokens=True), r)["correct"]
                   for t, r in zip(trajs, rows)]
        out[f"B{B}"] = figures(trajs, correct)
    emit(out)


if __name__ == "__main__":
    main()
