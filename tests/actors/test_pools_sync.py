"""Pools come up with their sizes and names; every transport syncs weights bit for bit."""
from __future__ import annotations

import ray
import torch

from actors.pools import create_pools
from actors.run import model_path
from actors.stages import collect, submit
from actors.step_data import records_for
from actors.sync import sync_weights
from support import SMALL, compose_config


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pools_and_weight_sync(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "cluster.learner.num_workers=2",
                                  "cluster.reward.num_workers=2",
                                  "engine.backend=deepspeed", "engine.zero_stage=2", "engine.lr=1e-2"])
    path = model_path(cfg, tmp_path)
    pools = create_pools(cfg, path, "tasks.builtin.arith:reward", "test-sync")
    try:
        assert [len(pools.rollout), len(pools.reward), len(pools.learner)] == [2, 2, 2]
        for name in ("rollout-0", "rollout-1", "reward-0", "reward-1", "learner-0", "learner-1"):
            assert ray.get_actor(name, namespace="test-sync") is not None
        assert pools.transport == ["shared_memory", "shared_memory"]  # one node: all beside learner rank 0

        prompts = [[23, 18, 24, 30], [25, 24, 18, 27, 30]]  # "0+1=", "2+4=" in tiny-tokenizer ids
        records = records_for(["a", "b"], prompts, 2)
        rows = {"a": {"ground_truth_answer": "1"}, "b": {"ground_truth_answer": "6"}}
        for version, kind in enumerate(["shared_memory", "object_store", "collective"], start=1):
            trajs, _ = collect(pools, submit(pools, records, rows, cfg.rollout), version - 1, chunk=4)
            assert {t.policy_version for t in trajs} == {version - 1}
            shards = [(trajs[i::2], [1.0, -1.0][i % 2:] * 2) for i in range(2)]
            ray.get([a.rl_step.remote(tr, ad[:len(tr)], None, version) for a, (tr, ad) in zip(pools.learner, shards)])
            learner = ray.get([a.state_dict.remote() for a in pools.learner])[0]
            before = ray.get(pools.rollout[0].state_dict.remote())
            assert not _equal(learner, before), "the update should have changed the weights"
            pools.transport = [kind] * 2
            pools.collective_stale = True
            seconds = sync_weights(pools, version)
            assert seconds > 0
            assert ray.get([w.version.remote() for w in pools.rollout]) == [version, version]
            for w in pools.rollout:
                assert _equal(ray.get(w.state_dict.remote()), learner), kind
    finally:
        pools.shutdown()
