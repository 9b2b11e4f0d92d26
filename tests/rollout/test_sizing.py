"""Memory sizing of a decode (rollout/sizing.py) from injected memory readings: cached-but-unused
memory counts as available, the headroom and the per-row costs are exact, prefill runs in groups
that fit the workspace and decodes what one prefill decodes, and fixed-shape passes share widths."""
import pytest
import torch
from test_sampler import assert_same
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from helpers import params, tiny_model
from models.decode_masks import BlockCausal, KeyEnd
from models.tiny import synthetic_config
from models.transformer import DiffusionLM
from rollout.decode_forward import DecodeForward
from rollout.device_memory import MemoryReading
from rollout.engine import SlotDecoder
from rollout.sampler import generate
from rollout.sizing import DecodePlan, cache_width, plan_decode, row_costs, stable_capacity, token_bytes

GIB = 2**30


def reading_for(budget: int, p, total: int = 8 * GIB, cached: int = 0, allocated: int = GIB) -> MemoryReading:
    """A device on which exactly `budget` bytes are left to a decode under p's headroom, with
    `cached` bytes held by torch's cache but unused."""
    headroom = int((1 - p.gpu_memory_utilization) * total)
    return MemoryReading(total=total, free=headroom + budget - cached, reserved=allocated + cached, allocated=allocated)


def test_torch_cached_memory_counts_so_a_second_generate_gets_the_same_rows():
    """After a decode its KV cache sits in torch's cache: the device's "free" shrinks by it, but
    the rows that fit must not (mem_get_info's free alone gave ~101 rows, then ~11)."""
    model, p = tiny_model(4), params(max_new_tokens=24, max_batch_rows=256)
    costs = row_costs(model, p, 40)
    budget = 100 * (costs.kv_row + costs.pass_row)
    first = plan_decode(model, p, 40, 256, reading_for(budget, p))
    again = plan_decode(model, p, 40, 256, reading_for(budget, p, cached=90 * costs.kv_row))
    assert first == again and first.slots == 100
    # What a reading of the device's free memory alone would have left (the old sizing).
    free_only = reading_for(budget - 90 * costs.kv_row, p)
    assert plan_decode(model, p, 40, 256, free_only).slots < 2 * first.slots // 3


@pytest.mark.parametrize("family", ["tiny", "llada", "dream"])
def test_row_costs_hold_exactly_a_slot_of_the_decoder(family):
    """The KV-and-canvas bytes of a row equal what a one-slot decoder allocates (full attention:
    the wider cache of SlotDecoder); no reading, no sizing."""
    model, p = tiny_model(4, family=family), params(max_new_tokens=12)
    decoder = SlotDecoder(model, p, 36, 1)
    table = decoder.table
    held = [*table.cache.keys, *table.cache.values, table.tokens, table.steps, table.logp, table.ent]
    assert row_costs(model, p, 36).kv_row == sum(t.numel() * t.element_size() for t in held)
    assert decoder.width == cache_width(model.config, p, 36)
    assert plan_decode(model, p, 36, 7, None) == DecodePlan(7, None)


def test_rows_fill_the_budget_less_the_headroom_exactly():
    model, p = tiny_model(4), params(max_new_tokens=24, gpu_memory_utilization=0.5)
    costs = row_costs(model, p, 40)
    assert costs.prefill_cols == 40 - (6 + 1) * 4 and costs.prefill_one() > costs.pass_row
    for rows in (1, 3, 20):
        budget = rows * costs.kv_row + max(rows * costs.pass_row, costs.prefill_one())
        plan = plan_decode(model, p, 40, 64, reading_for(budget, p))
        assert plan.slots == rows
        assert plan.prefill_tokens == (budget - rows * costs.kv_row - costs.prefill_mask) // costs.token
        assert plan_decode(model, p, 40, 64, reading_for(budget + costs.kv_row - 1, p)).slots == rows
        assert plan_decode(model, p, 40, rows - 1 or 1, reading_for(budget, p)).slots == (rows - 1 or 1)
    # The same device with a larger share for the decode holds more rows.
    budget = 3 * costs.kv_row + max(3 * costs.pass_row, costs.prefill_one())
    wider = p.model_copy(update={"gpu_memory_utilization": 0.9})
    assert plan_decode(model, wider, 40, 64, reading_for(budget, p)).slots > 3


def test_a_device_without_room_for_one_row_is_named():
    model, p = tiny_model(4), params(max_new_tokens=24)
    costs = row_costs(model, p, 40)
    short = reading_for(costs.kv_row + max(costs.pass_row, costs.prefill_one()) - 1, p)
    with pytest.raises(ValueError, match=r"one decode row needs .* rollout.gpu_memory_utilization=0.9.*"
                                         r"rollout.max_new_tokens \(24\), rollout.cache_tokens"):
        plan_decode(model, p, 40, 4, short)


def test_chunked_prefill_decodes_what_one_prefill_decodes():
    """A workspace that fits about one prompt per prefill forward: groups of admitted rows, padded
    to their widest prompt, give the tokens, steps and log-probs of one forward over all of them."""
    model = tiny_model(4, sharpen=4.0)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(2, 10, (n,), generator=g).tolist() for n in (17, 30, 9, 25, 13, 22, 6, 29)]
    seeds = list(range(8))
    for strategy in ("static", "dynamic"):
        p = params(strategy=strategy, max_new_tokens=20, max_batch_rows=4)
        capacity = 52  # the longest canvas: prompt 30 -> block at 28, 20 new tokens -> 52
        costs = row_costs(model, p, capacity)
        tight = reading_for(4 * costs.kv_row + max(4 * costs.pass_row, costs.prefill_one()), p)
        plan = plan_decode(model, p, capacity, 4, tight)
        assert plan.slots == 4 and plan.prefill_tokens < 2 * 24  # never two rows of 24 columns at once
        one, chunked = {}, {}
        whole = generate(model, prompts, p, seeds, stats=one)
        grouped = generate(model, prompts, p, seeds, stats=chunked, memory=lambda device: tight)
        assert_same(grouped, whole)
        assert chunked["prefill_forwards"] > one["prefill_forwards"] and chunked["passes"] == one["passes"]


class PeakBytes(TorchDispatchMode):
    """Peak bytes of the tensors an op sequence creates and holds (op granularity), besides `existing`."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.skip = {t.untyped_storage().data_ptr() for t in existing}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key, (ref, size) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.now -= size
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live and key not in self.skip:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out


@pytest.mark.parametrize("shape", [
    dict(intermediate_size=256, num_heads=4, head_dim=16),                     # the MLP dominates
    dict(intermediate_size=96, num_heads=8, head_dim=16),                      # q and its fp32 q-norm
    dict(intermediate_size=96, num_heads=8, head_dim=16, family="llada"),      # q and its rotary terms
    dict(hidden_size=128, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16),  # the norms
])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_token_bytes_bound_the_activations_of_a_prefill_and_a_decode_forward(shape, dtype):
    """Counted op by op on a CPU: a prefill forward (block-causal mask) and a fused decode pass
    ([finished block | current block] over the cache) hold at most token_bytes per query token,
    and not more than 20% less (the estimate decides how many rows a GPU runs)."""
    cfg = synthetic_config(100, num_layers=2, **{"hidden_size": 64, "num_kv_heads": 2, **shape})
    model = DiffusionLM(cfg).eval().to(dtype)
    est = token_bytes(cfg, model.embed_tokens.weight.element_size())
    n, B, T = 4, 4, 32
    cache = model.new_kv_cache(n, 48)
    c0 = torch.full((n,), 16)
    ends = (c0, c0 + B)
    decode_cols = torch.cat([(c0 - B)[:, None] + torch.arange(B), c0[:, None] + torch.arange(B)], 1)
    # The decode pass's mask as the engine builds it, before the forward (row_costs counts it apart).
    decode_mask = KeyEnd(ends, B, 48, dtype, cfg.num_heads // cfg.num_kv_heads)
    for cols, mask in ((torch.arange(T).expand(n, -1), BlockCausal(B)), (decode_cols, decode_mask)):
        if isinstance(mask, BlockCausal):
            cache.prefill(torch.arange(n), cols[0])
        else:
            cache.decode(cols, 48)
        ids = torch.randint(0, 90, cols.shape)
        held = [*model.parameters(), *cache.keys, *cache.values, ids, cols, *ends, decode_mask.valid]
        with torch.no_grad(), PeakBytes(held) as peak:
            model.hidden_states(ids, cols, mask, cache)
        per_token = peak.peak / ids.numel()
        assert per_token <= est <= 1.2 * per_token, (per_token, est)


def test_fixed_shape_widths_are_few_and_shared_by_shards():
    """Compiled passes see a handful of cache widths for shards of any prompt length (each a
    compile or a CUDA-graph recording); the eager engine keeps the shard's own width."""
    cfg, B = tiny_model(4).config, 4
    p = params(max_new_tokens=24)
    widths = [stable_capacity(c, p, cfg) for c in range(1, 257)]
    assert all(c <= w <= max(c, -(-int(1.25 * c) // B) * B) and w % B == 0 for c, w in zip(range(1, 257), widths))
    assert widths == sorted(widths) and max(widths) == 256  # never past the model's context
    for low in range(8, 129):
        assert len(set(widths[low - 1:2 * low])) <= 5  # canvases within a factor 2
    seen = {False: [], True: []}
    model = tiny_model(4)

    def body(m, ids, pos, mask, cache):
        seen[fixed].append(cache.capacity)
        return type(m).hidden_states(m, ids, pos, mask, cache)

    for fixed in (False, True):
        for n in (37, 44, 39, 41):  # canvases 60, 64, 60, 64
            generate(model, [[3] * n, [4] * 5], params(max_new_tokens=20, max_batch_rows=2),
                     forward=DecodeForward(body, fixed_shapes=fixed))
    assert sorted(set(seen[False])) == [60, 64] and set(seen[True]) == {64}
