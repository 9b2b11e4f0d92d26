"""Two DDP ranks, each updating on half of the trajectories, make the same step as one process on
all of them: the same weights, and every rank reports the same global metrics (not its own).

Also with a default process group that rejects CPU tensors, as NCCL does on a GPU learner
(`cuda:gloo`: gloo registered for CUDA tensors only): every host-side collective of the update
(micro-batch counts, token totals, metrics) and DDP's CPU gradients must find a group that takes
them, and nothing may send a CPU tensor through the default group.

And two DeepSpeed ZeRO-3 ranks of a vision-language model, one of them without any image prompt, make
the single-process step: both run the vision tower and projector in every forward (ZeRO-3 gathers
parameters and reduces gradients module by module; before, gloo aborted on mismatched collectives)."""
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine_workers import quiet
from helpers import params, prompts_mixed, sampled_image_rollouts, tiny_model, tiny_vlm
from learner.algo_config import AlgoConfig
from learner.distributed import close_distributed, free_port, init_distributed
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.policy_update import PolicyUpdater
from rollout.sampler import generate

ADVANTAGES = [1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, -0.75]
# Two passes over the rows, so the second one sees ratios != 1 (clipping, KL to the old policy).
ALGO = AlgoConfig(name="tracerl", ppo_epochs=2, kl_beta=0.05, eps_low=0.01, eps_high=0.01)


def step(rank: int, world: int, images: bool = False, **engine) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Rank `rank` of `world` takes its round-robin share of the 8 trajectories through one RL step.
    `images`: a LLaDA-V-shaped model (frozen tower) whose even trajectories show a picture and odd ones
    none, so of two ranks, rank 1 holds no image."""
    torch.set_num_threads(1)
    if images:
        model = tiny_vlm(4)
        trajs = sampled_image_rollouts(model, params(max_new_tokens=12))
        model.freeze_vision()
    else:
        model = tiny_model(4, sharpen=1.0)
        trajs = generate(model, prompts_mixed(4) * 2, params(max_new_tokens=12), seeds=list(range(8)))
    trainer = TrainEngine(model, EngineConfig(lr=1e-2, **engine))
    metrics = PolicyUpdater(trainer, ALGO, model.config).rl_step(trajs[rank::world], ADVANTAGES[rank::world], 0)
    return metrics, {k: v.detach().clone() for k, v in trainer.full_state_dict().items()}


def rank_worker(rank: int, port: int, out: str, backend: str, images: bool, engine: dict) -> None:
    quiet()
    init_distributed(rank, 2, "127.0.0.1", port, torch.device("cpu"), backend)
    torch.save(step(rank, 2, images, **engine), Path(out) / f"rank{rank}.pt")
    close_distributed()


@pytest.mark.parametrize("backend, images", [("gloo", False), ("cuda:gloo", False), ("gloo", True)],
                         ids=["gloo", "cuda:gloo", "zero3-images-on-rank-0-only"])
def test_two_ranks_report_the_single_process_step(tmp_path, backend, images):
    # Adam's eps 1e-6 for the image model: its few near-zero gradients differ in summation order only.
    engine = {"backend": "deepspeed", "zero_stage": 3, "eps": 1e-6} if images else {}
    mp.spawn(rank_worker, args=(free_port(), str(tmp_path), backend, images, engine), nprocs=2)
    (m0, w0), (m1, _) = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    want_m, want_w = step(0, 1, images, **({"eps": engine["eps"]} if images else {}))
    assert m0 == m1  # global figures on every rank
    assert m0.keys() == want_m.keys() and want_m["clip_frac"] > 0 and want_m["kl"] > 0
    for k in want_m:
        if k != "lr":
            assert abs(m0[k] - want_m[k]) <= 1e-5 * max(1.0, abs(want_m[k])), (k, m0[k], want_m[k])
    assert m0["trained_tokens"] == want_m["trained_tokens"] and m0["rows"] == want_m["rows"]
    for name in want_w:
        # Adam moves each weight by ~lr = 1e-2; summation-order noise on near-zero gradients shows up
        # as a few 1e-6 after Adam's normalisation. A wrong gradient would differ by ~1e-2.
        torch.testing.assert_close(w0[name], want_w[name], atol=1e-5, rtol=0, msg=name)
