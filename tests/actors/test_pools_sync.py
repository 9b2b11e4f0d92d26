"""The groups come up with their sizes and names, the planner gives every worker beside learner
rank 0 shared memory, and every host transport syncs weights bit for bit after an update."""
from __future__ import annotations

import ray

from actors.rollout_group import records_for
from actors.start import start_run
from actors.weight_sync.publisher import WeightPublisher
from support import SMALL, compose_config
from tests.actors.weights import decode_once, learner_weights, rollout_weights, same, weights_version


def test_groups_and_weight_sync(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "cluster.learner.num_workers=2",
                                  "cluster.reward.num_workers=2", "ray.namespace=test-sync",
                                  "task.reward=tasks.builtin.arith:reward", "trainer.logger=[]",
                                  "engine.backend=deepspeed", "engine.zero_stage=2", "engine.lr=1e-2"])
    run = start_run(cfg)
    rollout, learner = run.rollout, run.learner
    try:
        assert [len(rollout.workers), len(rollout.rewarders), len(learner.ranks), len(rollout.judges)] == [2, 2, 2, 0]
        for name in ("rollout-0", "rollout-1", "reward-0", "reward-1", "learner-0", "learner-1"):
            assert ray.get_actor(name, namespace="test-sync") is not None
        assert learner.publisher.transports == ["shared_memory", "shared_memory"]  # one node: beside rank 0

        prompts = [[23, 18, 24, 30], [25, 24, 18, 27, 30]]  # "0+1=", "2+4=" in tiny-tokenizer ids
        records = records_for(["a", "b"], prompts, 2)
        rows = {"a": {"ground_truth_answer": "1"}, "b": {"ground_truth_answer": "6"}}
        for version, kind in enumerate(["shared_memory", "object_store", "collective"], start=1):
            trajs, _, _ = rollout.collect(rollout.submit(records, rows, cfg.rollout, rollout.route))
            assert {t.policy_version for t in trajs} == {version - 1}
            shards = [(trajs[i::2], [1.0, -1.0][i % 2:] * 2) for i in range(2)]
            ray.get([a.rl_step.remote(tr, ad[:len(tr)], None, version) for a, (tr, ad) in zip(learner.ranks, shards)])
            want = learner_weights(learner.ranks)
            assert not same(want, rollout_weights(rollout.workers[0])), "the update should have changed the weights"
            learner.publisher = WeightPublisher(learner.ranks, rollout.workers, forced=kind)
            learner.publisher.held = version - 1
            seconds = learner.publisher.publish(version)
            assert seconds > 0 and learner.publisher.held == version
            decode_once(rollout.workers, learner.publisher, cfg.rollout)  # shared memory binds it here
            assert [weights_version(w) for w in rollout.workers] == [version, version]
            for w in rollout.workers:
                assert same(rollout_weights(w), want), kind
    finally:
        run.close()
