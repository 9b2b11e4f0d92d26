"""What a decode or a training step does, counted while it runs, for the roofline figures.

`WorkCounter` adds up the FLOPs and the bytes a model's linear layers and attention calls must move
(each weight once per call, the keys and values attention reads): FLOPs / seconds against the
machine's matmul rate, bytes / seconds against its bandwidth (bench/common.py). Attention FLOPs
are 4 · heads · head_dim per (query, key) pair: by default every pair of the call (what a dense
kernel computes, keys a mask hides included); `pairs` may count only the visible ones. A forward
with gradients counts three times (its backward computes the gradients of the inputs and of the
weights, each as costly as the forward); calls made inside backward (recomputation) do not count.

`PhaseClock` times named phases of a run by wrapping the functions that do them; each phase gets
its exclusive time (a nested wrapped call's time goes to its own phase), and what no wrapper
covers is the caller's. The wrappers exist only inside the `with` block. On a CPU every op is
synchronous, so the times are the ops' own; on a GPU they would be launch times.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch
from torch import nn

import models.transformer as transformer

Pairs = Callable[[Any, torch.Tensor, torch.Tensor], int]  # (mask, q, k) -> (query, key) pairs computed


def all_pairs(mask: Any, q: torch.Tensor, k: torch.Tensor) -> int:
    return q.shape[0] * q.shape[2] * k.shape[2]


def _factor() -> int:
    """How often a call's FLOPs count: 0 inside backward, 3 with gradients, else 1."""
    if torch._C._current_graph_task_id() != -1:
        return 0
    return 3 if torch.is_grad_enabled() else 1


class WorkCounter:
    def __init__(self, model: nn.Module, pairs: Pairs = all_pairs) -> None:
        self.model, self.pairs = model, pairs
        self.flops = 0.0
        self.bytes = 0.0
        self._stack = ExitStack()

    def _linear(self, module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        rows = inputs[0].numel() // module.in_features
        self.flops += 2 * rows * module.in_features * module.out_features * _factor()
        self.bytes += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))

    def _attend(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def counted(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, **kwargs: Any) -> torch.Tensor:
            self.flops += 4 * q.shape[1] * q.shape[3] * self.pairs(mask, q, k) * _factor()
            self.bytes += (k.numel() + v.numel()) * k.element_size()
            return fn(q, k, v, mask, **kwargs)

        return counted

    def __enter__(self) -> "WorkCounter":
        for m in self.model.modules():
            if isinstance(m, nn.Linear):
                self._stack.callback(m.register_forward_hook(self._linear).remove)
        self._stack.enter_context(patched(transformer, "attend", self._attend))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


@contextmanager
def patched(owner: Any, name: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """owner.name replaced by wrap(owner.name) inside the block (a class, module or instance)."""
    original = getattr(owner, name)
    own = name in vars(owner)  # an instance's forward lives on its class: delete, don't restore
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


class PhaseClock:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock  # time.thread_time: CPU seconds, steadier than wall time on a loaded machine
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open call: time spent in nested wrapped calls

    def wrap(self, phase: str) -> Callable[[Callable], Callable]:
        def wrapper(fn: Callable) -> Callable:
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = self.clock()
                self._inner.append(0.0)
                try:
                    return fn(*args, **kwargs)
                finally:
                    total, inner = self.clock() - start, self._inner.pop()
                    self.seconds[phase] += total - inner
                    if self._inner:
                        self._inner[-1] += total

            return timed

        return wrapper

    @contextmanager
    def timing(self, targets: dict[str, list[tuple[Any, str]]]) -> Iterator["PhaseClock"]:
        """Time each phase's (owner, function name) targets inside the block."""
        with ExitStack() as stack:
            for phase, places in targets.items():
                for owner, name in places:
                    stack.enter_context(patched(owner, name, self.wrap(phase)))
            yield self
