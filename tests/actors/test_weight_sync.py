"""Weight sync from the engine's streamed tensors: bit-exact on every transport, again on a second
sync that reuses the mapping/buckets after the weights changed, with ZeRO-3 ranks all gathering
and with plain torch (workers decoding from the shared-memory slots switch to other transports and
back); and the disk fallback (an HF export loaded into a fresh model)."""

from __future__ import annotations

import pytest
import ray

from actors.start import start_run
from actors.weight_sync.planner import COLLECTIVE, OBJECT_STORE, SHARED_MEMORY
from actors.weight_sync.publisher import WeightPublisher
from support import SMALL, compose_config
from tests.actors.weights import decode_once, learner_weights, rollout_weights, same, weights_version


@pytest.mark.parametrize(
    "engine",
    [
        ["cluster.learner.num_workers=2", "engine.backend=deepspeed", "engine.zero_stage=3"],
        ["engine.backend=torch"],  # the workers' parameters are views of the shared-memory slots
    ],
    ids=["zero3", "torch"],
)
def test_every_transport_is_bit_exact_twice_and_disk(ray_session, tmp_path, engine):
    cfg = compose_config(
        SMALL + engine + [f"trainer.run_dir={tmp_path}", "mode=sft", "engine.lr=1e-2", "weight_sync.bucket_mb=1",
                          "trainer.logger=[]", "task.reward=tasks.builtin.arith:reward"]
    )  # several buckets on the tiny model
    run = start_run(cfg)
    ranks, workers = run.learner.ranks, run.rollout.workers
    pairs = [([23, 18, 24, 30], [24, 30]), ([25, 24, 18, 27, 30], [28, 30])]  # "0+1=1", "2+4=6"
    publishers = {kind: WeightPublisher(ranks, workers, forced=kind) for kind in (SHARED_MEMORY, OBJECT_STORE,
                                                                                    COLLECTIVE)}
    try:
        for version, kind in enumerate(list(publishers) * 2 + ["disk"], start=1):
            ray.get([a.sft_step.remote(pairs, version) for a in ranks])  # a cheap update (mode=sft)
            want = learner_weights(ranks)
            assert not same(want, rollout_weights(workers[0])), "weights should change"
            if kind == "disk":
                ray.get([a.export_hf.remote(str(tmp_path / "export")) for a in ranks])
                ray.get([w.load_from_disk.remote(str(tmp_path / "export"), version) for w in workers])
            else:
                publishers[kind].publish(version)
                if kind == SHARED_MEMORY:  # not called at the sync: each binds it in its next generate
                    assert [weights_version(w) for w in workers] == [version - 1, version - 1]
                    decode_once(workers, publishers[kind], cfg.rollout)
            assert [weights_version(w) for w in workers] == [version, version]
            for w in workers:
                assert same(rollout_weights(w), want), (version, kind)
    finally:
        run.close()
