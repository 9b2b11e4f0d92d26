"""What the tests compare weight syncs with: the weights a learner group or a rollout worker holds,
read inside the actor (`__ray_call__` runs a function on the actor's instance). Imported as
`tests.actors.weights`, so the actors can import it too."""
from __future__ import annotations

from typing import Any

import ray
import torch


def _full_policy(rank: Any) -> dict[str, torch.Tensor]:
    rank._resident()
    state = rank.engine.full_state_dict()  # collective: every rank gathers
    return {k: v.detach().cpu() for k, v in state.items()} if rank.rank == 0 else {}


def _sampled_with(worker: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in worker.model.state_dict().items()}


def learner_weights(ranks: list[Any]) -> dict[str, torch.Tensor]:
    """The full policy as learner rank 0 sees it (every rank takes part in the gather)."""
    return ray.get([a.__ray_call__.remote(_full_policy) for a in ranks])[0]


def rollout_weights(worker: Any) -> dict[str, torch.Tensor]:
    """The weights a rollout worker samples with."""
    return ray.get(worker.__ray_call__.remote(_sampled_with))


def _held(worker: Any) -> int:
    return worker.weights_version


def weights_version(worker: Any) -> int:
    """The version of the weights a rollout worker holds."""
    return ray.get(worker.__ray_call__.remote(_held))


def decode_once(workers: list[Any], publisher: Any, params: Any) -> None:
    """One short generate call per worker, carrying what the publisher gives it: a shared-memory
    worker binds the version published last here, as in a run (weight_sync/publisher.py)."""
    from actors.rollout_group import records_for  # the actors import this module; no cycle at import
    shard = records_for(["probe"], [[23, 18, 24, 30]], 1)  # "0+1=" in tiny-tokenizer ids
    ray.get([w.generate.remote(shard, params, publisher.binding(i))[0] for i, w in enumerate(workers)])


def _set_version(worker: Any, version: int) -> None:
    worker.version = version


def hold(stand_ins: list[Any], version: int) -> None:
    """bench/scale.py's stand-in rollout workers stamp their rows with `version` from now on, as
    if a weight sync had brought it."""
    ray.get([w.__ray_call__.remote(_set_version, version) for w in stand_ins])


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
