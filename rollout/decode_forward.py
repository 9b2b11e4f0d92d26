"""What runs the transformer body of a decode pass: eager, `torch.compile`d (`rollout.compile`), or
compiled into CUDA graphs (`rollout.cuda_graphs`). The sampler picks it from the sampling parameters
(`decode_forward`), so a rollout worker only hands over its model.

Compiled passes run at fixed shapes (`fixed_shapes`): every decode pass covers all slots (finished
slots ride along, masked) and reads the whole cache width, so a generate() call has two decode
shapes, the first pass of a block (the finished block is rewritten with the new one: 2B queries per
row) and the others (B queries). Compiled at the trimmed shapes instead, the rows, key length and
mask change every block: ~9 compiles for a short decode, past torch's recompile limit (8), after
which that code runs eager (one logged warning).

CUDA graphs use torch.compile's mode="reduce-overhead" (CUDA graph trees): a recorded graph is
replayed when a call's shapes and static addresses match the recording. The KV cache is
marked a static address: the graph writes it in place, nothing is copied in per replay. A cache of
the same size in the next call usually gets the same memory back from the caching allocator; when
not, or when the shape changes, the graphs are recorded again (torch does not count address changes
of static inputs against its re-record limit). Prefill stays eager: its shapes follow the prompts
admitted. Only the hidden states are compiled: the vocabulary projection runs on the masked slots
alone, whose number changes every pass.

The recorded graphs keep a memory pool of their own that emptying torch's cache cannot return:
`release_graphs` drops the graphs and the compiled code bound to them (a colocated rollout worker's
sleep), and the next call compiles (inductor's on-disk cache makes that mostly a lookup) and records
again.

Without a CUDA device `rollout.cuda_graphs` falls back (with a warning) to the pass `rollout.compile`
picks, as vLLM's CPU backend forces `enforce_eager`.
"""
from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from models.attention import AttnMask
from models.kv_cache import KVCache
from models.transformer import DiffusionLM

from .params import SamplingParams

Body = Callable[..., torch.Tensor]  # (model, input_ids, position_ids, mask, cache[, images]) -> hidden [N, T, H]


def _hidden(model: DiffusionLM, *args: object) -> torch.Tensor:
    return model.hidden_states(*args)  # looked up on the model, so wrappers of the method see eager passes


# One function per mode: torch.compile keeps its compiled variants per code object and stops
# compiling past 8 of them, so the two modes must not share one (nor the eager pass's).
def _hidden_compiled(model: DiffusionLM, *args: object) -> torch.Tensor:
    return model.hidden_states(*args)


def _hidden_graphs(model: DiffusionLM, *args: object) -> torch.Tensor:
    return model.hidden_states(*args)


_compiled: dict[str, Body] = {}


def _compile(mode: str) -> Body:
    """One compiled body per mode for every model (a model is an argument, its weights graph
    inputs): a new model after a weight reload reuses the compiled code while its guards hold."""
    if mode not in _compiled:
        # Automatic dynamic shapes: a size becomes symbolic once it changes (a later call with other
        # slots or cache width: one recompile per pass kind). dynamic=True makes every size symbolic,
        # and inductor then fails on the grouped-query reshape (torch 2.13 on CPU: LoweringException /
        # RecursionError in sympy; the worker's former torch.compile(model, dynamic=True) did too).
        fn = _hidden_graphs if mode == "reduce-overhead" else _hidden_compiled
        _compiled[mode] = torch.compile(fn, mode=mode)
    return _compiled[mode]


@dataclass(frozen=True)
class DecodeForward:
    body: Body = _hidden  # eager
    fixed_shapes: bool = False  # every decode pass over all slots and the whole cache width
    graphs: bool = False        # body replays CUDA graphs: static cache addresses, one step per call

    def prepare(self, cache: KVCache | None) -> None:
        if self.graphs and cache is not None:
            for t in (*cache.keys, *cache.values):
                torch._dynamo.mark_static_address(t)

    def logits(self, model: DiffusionLM, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: AttnMask,
               cache: KVCache | None, at: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [M, V] at the M flat (row * T + column) query indices `at`; `images`: the rows'
        image features (DiffusionLM.embed)."""
        if self.fixed_shapes:  # two query lengths per call: keep each static (no generic recompile)
            for t in (input_ids, position_ids):
                torch._dynamo.mark_static(t, 1)
        if self.graphs:  # the previous replay's outputs are dead: its memory may be reused
            torch.compiler.cudagraph_mark_step_begin()
        extra = () if images is None else (images,)  # a text model's body keeps its five arguments
        h = self.body(model, input_ids, position_ids, mask, cache, *extra)
        return model.lm_head(h.flatten(0, 1)[at])


def graphs_forward() -> DecodeForward:
    """The CUDA-graph decode pass (on a CPU it runs compiled, without graphs: what the tests check)."""
    return DecodeForward(_compile("reduce-overhead"), fixed_shapes=True, graphs=True)


def release_graphs() -> None:
    """Free what the CUDA-graph decode pass holds on the device: every CUDA graph torch.compile
    recorded in this thread (torch's cudagraph trees and their memory pool) and the compiled body,
    whose code replays through those trees (after a reset it would fail, not re-record). Then
    torch's cache goes back to the device. Harmless without CUDA or before any recording."""
    from torch._inductor.cudagraph_trees import reset_cudagraph_trees

    reset_cudagraph_trees()
    torch._C._dynamo.eval_frame.reset_code(_hidden_graphs.__code__)  # its compiled variants only
    if torch.cuda.is_initialized():
        gc.collect()  # the dropped code may sit in reference cycles that still hold the graphs' pool
        torch.cuda.empty_cache()


def compiled_forward() -> DecodeForward:
    return DecodeForward(_compile("default"), fixed_shapes=True)


def decode_forward(model: DiffusionLM, params: SamplingParams) -> DecodeForward:
    if params.cuda_graphs:
        device = model.embed_tokens.weight.device
        if device.type == "cuda":
            return graphs_forward()
        warnings.warn(f"rollout.cuda_graphs=true needs a CUDA device; the model is on {device.type}, so "
                      "decode passes run without graphs (set rollout.cuda_graphs=false to silence this)",
                      stacklevel=2)
    return compiled_forward() if params.compile else DecodeForward()
