"""TrajectoryBatch, the columns a rollout worker returns: every Trajectory field comes back exactly
(random lengths, empty responses and tails, process rewards, the sampler's own output), rows
read in any order, RowMeta describes each row, and an id that does not fit is refused."""
from __future__ import annotations

import dataclasses
import pickle
import random

import numpy as np
import pytest

from helpers import params, prompts_mixed, tiny_model
from rollout.sampler import generate
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import TrajectoryBatch


def random_trajectories(n: int, seed: int) -> list[Trajectory]:
    rng = random.Random(seed)
    f32 = lambda k: np.random.default_rng(rng.randrange(2**32)).standard_normal(k).astype(np.float32).tolist()  # noqa: E731
    out = []
    for i in range(n):
        r, tail = rng.choice([0, 1, rng.randrange(2, 40)]), rng.choice([0, rng.randrange(1, 8)])
        out.append(Trajectory(
            prompt_ids=[rng.randrange(2**31) for _ in range(rng.randrange(1, 30))],
            response_ids=[rng.randrange(50000) for _ in range(r)], step_map=[rng.randrange(1, 99) for _ in range(r)],
            logprobs=f32(r), entropies=f32(r), block_size=rng.choice([4, 32]),
            finish_reason=rng.choice(["eos", "stop", "length"]), num_forwards=rng.randrange(100),
            tail_ids=[rng.randrange(50000) for _ in range(tail)], tail_steps=[rng.randrange(99) for _ in range(tail)],
            canvas_len=rng.choice([0, 64]), process_rewards=[rng.random() for _ in range(r)] if i % 3 == 0 else [],
            policy_version=rng.randrange(5), prompt_uid=f"uid-{rng.randrange(10**6)}", sample_idx=rng.randrange(8)))
    return out


def test_round_trip_field_by_field():
    trajs = random_trajectories(25, seed=0)
    assert any(not t.response_ids for t in trajs) and any(not t.tail_ids for t in trajs)
    batch = pickle.loads(pickle.dumps(TrajectoryBatch.from_trajectories(trajs)))  # as the object store does
    assert len(batch) == len(trajs)
    for want, got in zip(trajs, batch.to_trajectories()):
        for f in dataclasses.fields(Trajectory):
            a, b = getattr(want, f.name), getattr(got, f.name)
            assert a == b and type(a) is type(b), f.name
            if isinstance(a, list) and a:
                assert {type(x) for x in a} == {type(x) for x in b}, f.name  # Python ints/floats, not numpy
    assert TrajectoryBatch.from_trajectories([]).to_trajectories() == []


def test_select_metas_and_the_sampler_output():
    trajs = generate(tiny_model(4), prompts_mixed(4) * 2, params(max_new_tokens=12), seeds=list(range(8)))
    for k, t in enumerate(trajs):
        t.prompt_uid, t.sample_idx, t.policy_version = f"p{k // 2}", k % 2, 3
    batch = TrajectoryBatch.from_trajectories(trajs)
    assert batch.to_trajectories() == trajs  # the sampler's float32 log-probs and entropies are kept exactly
    rows = [5, 0, 7, 5]
    assert [batch.trajectory(i) for i in rows] == [trajs[i] for i in rows]
    for i, (m, t) in enumerate(zip(batch.metas(), trajs)):
        assert (m.prompt_uid, m.sample_idx, m.row, m.prompt_len, m.response_len, m.num_forwards, m.policy_version,
                m.finish_reason, m.payload) == (t.prompt_uid, t.sample_idx, i, len(t.prompt_ids), len(t.response_ids),
                                                t.num_forwards, 3, t.finish_reason, None)
        assert batch.key(i) == m.key


def test_an_id_that_does_not_fit_int32_is_refused():
    t = random_trajectories(1, seed=1)[0]
    t.response_ids, t.step_map, t.logprobs, t.entropies = [2**31], [1], [0.0], [0.0]
    with pytest.raises(OverflowError):
        TrajectoryBatch.from_trajectories([t])
