"""What a decode or a training step does, counted while it runs, for the roofline figures.

`WorkCounter` adds up the FLOPs and the bytes a model's linear layers and attention calls must move
(each weight once per call, the keys and values attention reads): FLOPs / seconds against the
machine's matmul rate, bytes / seconds against its bandwidth (bench/common.py). Attention FLOPs
are what the kernel computes, 4 · rows · heads · queries · keys · head_dim: keys a mask hides
included, since a dense kernel computes them too.

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


class WorkCounter:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flops = 0.0
        self.bytes = 0.0
        self._stack = ExitStack()

    def _linear(self, module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        rows = inputs[0].numel() // module.in_features
        self.flops += 2 * rows * module.in_features * module.out_features
        self.bytes += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))

    def _attend(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def counted(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            n, h, tq, d = q.shape
            self.flops += 4 * n * h * tq * k.shape[2] * d
            self.bytes += (k.numel() + v.numel()) * k.element_size()
            return fn(q, k, v, *args, **kwargs)

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
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open call: time spent in nested wrapped calls

    def wrap(self, phase: str) -> Callable[[Callable], Callable]:
        def wrapper(fn: Callable) -> Callable:
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                self._inner.append(0.0)
                try:
                    return fn(*args, **kwargs)
                finally:
                    total, inner = time.perf_counter() - start, self._inner.pop()
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
