"""Trajectories stay in the object store (docs/design.md §8): the driver holds object refs to each
shard's TrajectoryBatch and its rows' RowMeta; whoever needs the tokens (a learner rank, a reward
worker, the process reward, mode=eval's output) fetches them here, in the process that uses them."""
from __future__ import annotations

from collections.abc import Sequence

import ray

from rollout.trajectory import Trajectory
from rollout.trajectory_batch import RowMeta


def fetch(samples: Sequence[RowMeta]) -> list[Trajectory]:
    """The trajectories of `samples`, in order (each batch fetched once)."""
    refs = list(dict.fromkeys(m.payload for m in samples))
    batches = dict(zip(refs, ray.get(refs)))
    return [batches[m.payload].trajectory(m.row) for m in samples]
