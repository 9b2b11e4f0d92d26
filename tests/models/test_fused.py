"""Fused q/k/v and gate/up projections (models/fused.py): the same numbers as separate matmuls, the
same parameters and names, no second copy of any weight, and a fusion that memory moves lose is seen
as lost (generate() re-fuses on a GPU; on a CPU the separate matmuls measured faster)."""
from __future__ import annotations

import copy

import pytest
import torch

from models.fused import fuse_projections, fused_weight, is_fused
from models.tiny import synthetic_config
from models.transformer import DiffusionLM
from rollout.params import SamplingParams
from rollout.sampler import generate


def _model(family: str = "sdar", **shape) -> DiffusionLM:
    torch.manual_seed(0)
    cfg = synthetic_config(97, family=family, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=16, **shape)
    model = DiffusionLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def _storage_bytes(model: DiffusionLM) -> int:
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    return sum(storages.values())


@pytest.mark.parametrize("family", ["sdar", "dream"])  # dream: q/k/v biases, fused as one too
@pytest.mark.parametrize("rows", [1, 4, 8, 33, 128])
def test_fused_forward_equals_separate_bitwise(family, rows):
    separate = _model(family)
    fused = copy.deepcopy(separate)
    fuse_projections(fused)
    assert is_fused(fused) and not is_fused(separate)
    ids = torch.randint(0, 95, (rows, 5), generator=torch.Generator().manual_seed(rows))
    pos = torch.arange(5).expand(rows, 5)
    with torch.no_grad():
        assert torch.equal(fused(ids, pos), separate(ids, pos))


def test_fusion_keeps_parameters_names_and_memory():
    model = _model()
    params_before = dict(model.named_parameters())
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    bytes_before = _storage_bytes(model)
    fuse_projections(model)
    assert dict(model.named_parameters()) == params_before  # the same Parameter objects
    state = model.state_dict()
    assert list(state) == list(state_before)
    assert all(torch.equal(state[k], v) and state[k].shape == v.shape for k, v in state_before.items())
    assert _storage_bytes(model) == bytes_before  # views into one buffer per group: no second copy
    attn = model.layers[0].self_attn
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()


def test_an_in_place_load_writes_through_the_fused_buffer():
    model, other = _model(), _model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-0.5)
    fuse_projections(model)
    with torch.no_grad():  # what a weight sync does
        for name, t in model.state_dict().items():
            t.copy_(other.state_dict()[name])
    assert is_fused(model)
    ids, pos = torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids, pos), other(ids, pos))


def test_gradients_reach_every_projection_of_a_fused_model():
    separate = _model()
    fused = copy.deepcopy(separate)
    fuse_projections(fused)
    ids, pos = torch.tensor([[5, 6, 7, 8]]), torch.arange(4)[None]
    for m in (separate, fused):
        m(ids, pos).logsumexp(-1).sum().backward()
    for (name, a), b in zip(separate.named_parameters(), fused.parameters()):
        assert b.grad is not None and torch.equal(a.grad, b.grad), name


def test_a_lost_fusion_is_seen_and_decodes_the_same():
    model = _model()
    reference = copy.deepcopy(model)
    params = SamplingParams(block_size=4, steps_per_block=2, max_new_tokens=8, ignore_eos=True)
    prompts = [[3, 4, 5], [7, 8]]
    fuse_projections(model)  # what generate() does on a GPU
    first = generate(model, prompts, params)
    assert first == generate(reference, prompts, params)
    model.to_empty(device="meta")  # a colocated worker's sleep and wake
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    assert not is_fused(model)
    assert generate(model, prompts, params) == first  # unfused, still exact
    fuse_projections(model)
    assert is_fused(model) and generate(model, prompts, params) == first


def test_empty_parameters_are_never_fused():
    """ZeRO-3 leaves each rank an empty tensor per parameter until a module's forward gathers it."""
    model = _model()
    fuse_projections(model)
    attn = model.layers[0].self_attn
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
        lin.weight.data = torch.empty(0)
    with torch.no_grad():
        assert fused_weight((attn.q_proj, attn.k_proj, attn.v_proj)) is None


def test_a_fusion_made_by_generate_stays_a_buffer_weight_syncs_copy_into(monkeypatch):
    """generate() decodes in inference mode but fuses (on a GPU: imitated here) outside it: a fused
    buffer made inside would be an inference tensor, and the next weight sync's copy_ would fail."""
    import rollout.sampler as sampler

    model, other = _model(), _model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-0.5)
    params = SamplingParams(block_size=4, steps_per_block=2, max_new_tokens=8, ignore_eos=True)
    monkeypatch.setattr(sampler, "fuses", lambda m: True)
    generate(model, [[3, 4, 5]], params)
    assert is_fused(model) and not any(p.is_inference() for p in model.parameters())
    with torch.no_grad():  # what a weight sync does
        for name, t in model.state_dict().items():
            t.copy_(other.state_dict()[name])
    assert is_fused(model) and generate(model, [[3, 4, 5]], params) == generate(other, [[3, 4, 5]], params)
