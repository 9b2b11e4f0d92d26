"""How much of the device one decode takes (docs/design.md §5): the KV-cache width, the rows in
flight and the prompt tokens one prefill forward may run.

Without a memory reading (a CPU) a decode runs min(`max_batch_rows`, prompts) rows and prefills all
rows admitted together in one forward. With one (rollout/device_memory.py) the budget is what this
process could allocate (torch's cached-but-unused blocks included, so the answer is the same
before and after a generate()) less a headroom of (1 - `rollout.gpu_memory_utilization`) x the
device's memory: as with vLLM's gpu_memory_utilization, everything on the device, this process's
weights and other processes included, stays under that share. Each row holds its KV cache and
canvas; what the rows leave is the workspace of either a decode pass or a prefill forward (they
never run at once), and prefill runs the admitted rows in groups of at most `prefill_tokens`.

Activation figures are per query token of one decoder layer (no grad: one layer's activations
live at a time), as counted op by op on a CPU (tests/rollout/test_sizing.py); attention is assumed
to run a fused kernel (a GPU's memory-efficient SDPA), which never holds [rows, heads, Tq, Tk]
scores.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.config import ModelConfig
from models.transformer import DiffusionLM

from .device_memory import MemoryReading
from .params import SamplingParams

GIB = 2**30
# Fixed-shape passes: 2^_WIDTH_BITS cache widths per doubling. With 2 bits a width is m * 2^e with m
# in {5, 6, 7, 8}: at most 25% more columns than the shard needs, and shards whose canvases are
# within a factor 2 of each other share at most 5 widths (each a compile per pass kind, or a
# CUDA-graph recording), below torch's limits of 8.
_WIDTH_BITS = 2


def cache_width(cfg: ModelConfig, params: SamplingParams, capacity: int) -> int:
    """KV-cache columns per slot for canvases of up to `capacity` columns. Full attention: a later
    pass's query runs from the block to the canvas end, padded to the longest such span; the
    extra columns keep that padding inside the row's own slot."""
    if cfg.attention == "block_causal":
        return capacity
    return capacity + params.max_new_tokens + int(cfg.shift_logits)


def stable_capacity(capacity: int, params: SamplingParams, cfg: ModelConfig) -> int:
    """`capacity` rounded up to a few widths per doubling (whole blocks, at most the model's
    context): fixed-shape passes then see one width for most shards instead of one per shard."""
    step = 1 << max((capacity - 1).bit_length() - 1 - _WIDTH_BITS, 0)  # capacity <= 2^bit_length
    width = -(-capacity // step) * step
    B = params.block_size
    context = -(-cfg.max_position_embeddings // B) * B  # no valid prompt's canvas ends past it
    return max(capacity, min(-(-width // B) * B, context))


def prefill_columns(cfg: ModelConfig, params: SamplingParams, capacity: int) -> int:
    """The most prompt columns one row prefills: the whole prompt blocks before its first generated
    block, which leaves at least ceil(max_new_tokens / B) blocks of the canvas (block-causal with a
    cache; full attention and the uncached reference never prefill)."""
    if cfg.attention != "block_causal" or not params.use_cache:
        return 0
    B = params.block_size
    return max(capacity - (-(-params.max_new_tokens // B) + 1) * B, 0)


@dataclass(frozen=True)
class RowCosts:
    """Bytes, for canvases of up to `capacity` columns."""

    kv_row: int        # one slot's KV cache and canvas tensors
    pass_row: int      # one row's share of a decode pass's workspace
    token: int         # one query token through a decoder layer (prefill: per prompt column)
    prefill_mask: int  # one prefill forward's block-causal mask at the widest prefill
    prefill_cols: int  # the widest prefill (columns)

    def prefill_one(self) -> int:
        """The workspace a prefill of one row of the widest prompt needs (0: no prefill)."""
        return self.prefill_cols * self.token + self.prefill_mask if self.prefill_cols else 0


def token_bytes(cfg: ModelConfig, elem: int) -> int:
    """Peak activation bytes per query token of one decoder layer: rotary tables, plus the largest
    of the attention phase (residual and normed input, q/k/v and the rotary temporaries, plus
    the fp32 copies of q when q is RMS-normed), the MLP phase (the residual outside the layer too,
    gate and up (one matmul's output, models/fused.py), the activation and the product) and the RMS
    norms (two fp32 copies of the hidden state)."""
    h, mlp_width = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    attention = elem * (2 * h + 4 * q + 2 * kv) + (4 * q if cfg.qk_norm else 0)
    mlp = elem * (3 * h + 4 * mlp_width)
    norm = elem * 3 * h + 8 * h
    return elem * 2 * cfg.head_dim + max(attention, mlp, norm)


def sample_bytes(params: SamplingParams, vocab: int, elem: int) -> int:
    """Per sampled position: the vocabulary projection, fp32 logits, probabilities and one more
    fp32 copy (temperature, top-k); top-p also sorts the vocabulary (values, int64 order, softmax,
    cumulative sum, drop masks)."""
    return vocab * (elem + 12 + (32 if params.top_p < 1.0 else 0))


def row_costs(model: DiffusionLM, params: SamplingParams, capacity: int) -> RowCosts:
    cfg, elem = model.config, model.embed_tokens.weight.element_size()
    width, B = cache_width(cfg, params, capacity), params.block_size
    kv = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * width * elem if params.use_cache else 0
    canvas = width * (8 + 8 + 4 + 4)  # tokens, steps (int64), log-probs, entropies (fp32)
    # A block-causal cached pass queries [finished block | current block]; any other pass spans the
    # canvas. Then a block is sampled, and the block-end status builds a few [rows, width]
    # temporaries (16 B per column covers them).
    fused_pass = cfg.attention == "block_causal" and params.use_cache
    queries = 2 * B if fused_pass else width
    tok = token_bytes(cfg, elem)
    # The pass's additive attention mask (models/decode_masks.py KeyEnd), held through the forward:
    # a fused pass's two segments need one row per query and query head of a K/V group, else one.
    mask_rows = queries * cfg.num_heads // cfg.num_kv_heads if fused_pass else 1
    pass_row = queries * tok + mask_rows * width * elem + B * sample_bytes(params, cfg.vocab_size, elem) + 16 * width
    cols = prefill_columns(cfg, params, capacity)
    # [T, T] bool block ids compared, repeated per query head of a K/V group, and SDPA's additive copy.
    mask = cols * cols * (1 + cfg.num_heads // cfg.num_kv_heads * (1 + elem))
    return RowCosts(kv_row=kv + canvas, pass_row=pass_row, token=tok, prefill_mask=mask, prefill_cols=cols)


@dataclass(frozen=True)
class DecodePlan:
    slots: int                  # rows in flight
    prefill_tokens: int | None  # rows x padded prompt columns of one prefill forward (None: unbounded)


def plan_decode(model: DiffusionLM, params: SamplingParams, capacity: int, wanted: int,
                reading: MemoryReading | None) -> DecodePlan:
    """Rows in flight (`wanted`, fewer when the budget cannot hold them) and the prefill group size."""
    if reading is None:
        return DecodePlan(wanted, None)
    costs = row_costs(model, params, capacity)
    headroom = int((1 - params.gpu_memory_utilization) * reading.total)
    budget = reading.available - headroom
    one = costs.kv_row + max(costs.pass_row, costs.prefill_one())
    if budget < one:
        raise ValueError(
            f"one decode row needs {one / GIB:.2f} GiB ({costs.kv_row / GIB:.2f} GiB of KV cache for "
            f"{cache_width(model.config, params, capacity)} columns, the rest pass/prefill workspace) but "
            f"{max(budget, 0) / GIB:.2f} GiB of the device are left to this decode: "
            f"{reading.available / GIB:.2f} GiB available, {headroom / GIB:.2f} GiB kept free by "
            f"rollout.gpu_memory_utilization={params.gpu_memory_utilization}. Lower rollout.max_new_tokens "
            f"({params.max_new_tokens}), rollout.cache_tokens ({params.cache_tokens}) or the prompts' length, raise "
            "rollout.gpu_memory_utilization, or free the device (another process, a colocated learner awake?)")
    slots = min(wanted, (budget - costs.prefill_one()) // costs.kv_row, budget // (costs.kv_row + costs.pass_row))
    if not costs.prefill_cols:
        return DecodePlan(slots, None)
    # The rows leave the rest to a prefill forward; one row of the widest prompt always fits.
    return DecodePlan(slots, (budget - slots * costs.kv_row - costs.prefill_mask) // costs.token)


def prefill_groups(columns: list[int], tokens: int | None) -> list[tuple[int, int, int]]:
    """(start, stop, columns) of consecutive admitted rows prefilled by one forward: each group's
    rows x its widest row's columns stay within `tokens` (None: one group). Groups with nothing to
    prefill are left out."""
    groups: list[tuple[int, int, int]] = []
    start, width = 0, 0
    for i, cols in enumerate(columns):
        if tokens is not None and i > start and (i + 1 - start) * max(width, cols) > tokens:
            groups.append((start, i, width))
            start, width = i, 0
        width = max(width, cols)
    groups.append((start, len(columns), width))
    return [g for g in groups if g[2] > 0]
