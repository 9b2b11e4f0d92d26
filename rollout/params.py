"""Sampling parameters, validated at the boundary (they cross from config/driver to workers)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["static", "dynamic", "entropy_bounded", "random", "sequential"]


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    block_size: int = Field(4, ge=1)
    # Denoising passes per block (K). `static` commits n_k = masked/K tokens per pass; the
    # adaptive strategies use K as a cap and commit everything left on the last pass.
    steps_per_block: int = Field(4, ge=1)
    strategy: Strategy = "static"
    # dynamic: commit every position with confidence >= τ. 0.97 is the knee on the RL-trained tiny
    # arith model (256 held-out prompts, bench/sampler.py --model DIR --batch 256): at 0.9 it commits
    # confidently wrong digit pairs together (2.3 points below static), 0.97 is 0.4 points below
    # static at 2.7 tokens/forward.
    threshold: float = Field(0.97, gt=0.0, le=1.0)
    # dynamic: commit at least this many per pass (None = n_k like the reference engine; 1 = Fast-dLLM).
    min_per_step: int | None = Field(None, ge=1)
    entropy_bound: float = Field(1.0, gt=0.0)  # entropy_bounded: summed entropy budget per pass
    temperature: float = Field(1.0, ge=0.0, allow_inf_nan=False)  # 0 = greedy; inf would sample uniformly
    top_k: int = Field(0, ge=0)  # 0 = off
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    stop_token_ids: tuple[Annotated[int, Field(ge=0)], ...] = ()  # below the vocabulary size (checked by generate)
    ignore_eos: bool = False  # benchmarks: always decode max_new_tokens
    use_cache: bool = True
    seed: int = 0
    # Continuous batching: rows decoded together; a finished row's slot takes the next prompt of
    # the worker's queue at the next block boundary (rollout/engine.py).
    max_batch_rows: int = Field(256, ge=1)
    # KV-cache columns per slot (prompt + response canvas, whole blocks); null = sized from the
    # longest canvas of the prompts of one generate() call (fixed-shape passes: rounded up to one of
    # 4 widths per doubling, so shards share widths: rollout/sizing.py).
    cache_tokens: int | None = Field(None, ge=1)
    # On a GPU: the share of the device's memory that everything on it (this process's weights, KV
    # cache and workspaces, other processes) may take while decoding, as vLLM's option of that
    # name; the rows in flight shrink to fit it (rollout/sizing.py).
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    # torch.compile the decode passes' transformer body (first call compiles; rollout/decode_forward.py).
    compile: bool = False
    # CUDA graphs for the decode passes: compiled with mode="reduce-overhead" at fixed shapes (every
    # pass runs all slots over the whole cache). Without a CUDA device: a warning, then the pass
    # `compile` picks (compiled or eager).
    cuda_graphs: bool = False

    @model_validator(mode="after")
    def _check(self) -> "SamplingParams":
        if self.steps_per_block > self.block_size:
            raise ValueError(f"steps_per_block={self.steps_per_block} exceeds block_size={self.block_size}: "
                             "every pass must be able to commit at least one token")
        if self.cache_tokens is not None and self.cache_tokens < self.max_new_tokens + self.block_size:
            raise ValueError(f"rollout.cache_tokens={self.cache_tokens} cannot hold a canvas of max_new_tokens="
                             f"{self.max_new_tokens} plus a prompt block (block_size={self.block_size}): "
                             f"set it to at least {self.max_new_tokens + self.block_size} or null")
        if self.cuda_graphs and not self.use_cache:
            raise ValueError("rollout.cuda_graphs=true needs rollout.use_cache=true: the uncached reference pass "
                             "changes shape every block, so there is no fixed-shape pass to record")
        return self
