"""A shard's trajectories as columns (what a rollout worker returns and the object store holds), and
`RowMeta`, the few scalars per row the driver works with.

A list of `Trajectory` pickles every id and float as its own Python object; here each ragged field
is one concatenated numpy array plus offsets, which pickles as a handful of buffers (Ray keeps them
out of band, and a reader on the node maps them without copying). Token ids and decoding steps are
int32, log-probs and entropies float32 (the sampler's dtypes, so the round trip is exact), process
rewards float64 (the driver computes them in Python floats).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .trajectory import FinishReason, Trajectory

RAGGED = {"prompt_ids": np.int32, "response_ids": np.int32, "step_map": np.int32, "logprobs": np.float32,
          "entropies": np.float32, "tail_ids": np.int32, "tail_steps": np.int32, "process_rewards": np.float64}
INTS = ("block_size", "num_forwards", "canvas_len", "policy_version", "sample_idx")
STRS = ("finish_reason", "prompt_uid", "image")


@dataclass(frozen=True)
class RowMeta:
    """One row of a TrajectoryBatch as the driver sees it: enough for accounting, advantages,
    metrics and balancing learner shards, never the tokens."""
    prompt_uid: str
    sample_idx: int
    row: int  # index of the trajectory in its batch
    prompt_len: int
    response_len: int
    num_forwards: int
    policy_version: int
    finish_reason: FinishReason
    # Where the batch is: the driver's object reference to it (set by the driver; rollout/ knows no Ray).
    payload: Any = None

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt_uid, self.sample_idx


@dataclass
class Ragged:
    """Variable-length rows: row i is values[offsets[i]:offsets[i + 1]]."""
    values: np.ndarray
    offsets: np.ndarray  # int64, one more than there are rows

    @classmethod
    def of(cls, rows: Sequence[Sequence], dtype: type) -> Ragged:
        offsets = _offsets(rows)  # an id that does not fit the dtype raises (OverflowError), never wraps
        return cls(np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1])), offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _offsets(rows: Sequence[Sequence]) -> np.ndarray:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.array([len(r) for r in rows], dtype=np.int64), out=offsets[1:])
    return offsets


@dataclass
class TrajectoryBatch:
    ragged: dict[str, Ragged]  # the RAGGED fields
    ints: dict[str, np.ndarray]  # the INTS fields, one int64 per row
    strs: dict[str, list[str]]  # the STRS fields

    @classmethod
    def from_trajectories(cls, trajs: Sequence[Trajectory]) -> TrajectoryBatch:
        return cls({k: Ragged.of([getattr(t, k) for t in trajs], dtype) for k, dtype in RAGGED.items()},
                   {k: np.array([getattr(t, k) for t in trajs], dtype=np.int64) for k in INTS},
                   {k: [getattr(t, k) for t in trajs] for k in STRS})

    def __len__(self) -> int:
        return len(self.strs["prompt_uid"])

    def key(self, i: int) -> tuple[str, int]:
        return self.strs["prompt_uid"][i], int(self.ints["sample_idx"][i])

    def trajectory(self, i: int) -> Trajectory:
        return Trajectory(**{k: r.row(i).tolist() for k, r in self.ragged.items()},
                          **{k: int(v[i]) for k, v in self.ints.items()},
                          **{k: v[i] for k, v in self.strs.items()})

    def to_trajectories(self) -> list[Trajectory]:
        return [self.trajectory(i) for i in range(len(self))]

    def metas(self) -> list[RowMeta]:
        p, r = self.ragged["prompt_ids"].lengths(), self.ragged["response_ids"].lengths()
        ints = self.ints
        return [RowMeta(uid, int(ints["sample_idx"][i]), i, int(p[i]), int(r[i]), int(ints["num_forwards"][i]),
                        int(ints["policy_version"][i]), self.strs["finish_reason"][i])
                for i, uid in enumerate(self.strs["prompt_uid"])]
