"""LearnerWorker: one torch.distributed rank holding the TrainEngine and the PolicyUpdater.

The driver creates rank 0 first, asks it for an address/port, then starts every rank's `setup`
concurrently (the process group forms when all have joined). Every other method is called
explicitly by the driver on the ranks that must run it.
"""
from __future__ import annotations

import gc
import os

import ray
import torch

from learner.advantages import Filtered
from learner.distributed import free_port, init_distributed
from learner.engine import TrainEngine
from learner.network import use_interface_for_gloo
from learner.policy_update import PolicyUpdater
from learner.value import ValueModel
from models.checkpoint import load_model
from models.config import DTYPES
from models.tokenizer import load_tokenizer
from models.transformer import DiffusionLM
from rewards.process import process_vector
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import RowMeta

from .config import RunConfig
from .device import device_for_actor
from .payloads import fetch
from .reward_route import RewardSection
from .weight_sync.buckets import Layout, WeightsHandle, wire_layout
from .weight_sync.planner import Placement
from .weight_sync.registry import Senders, local_placement


def place_process_rewards(t: Trajectory, chunks: list[float], reward: RewardSection) -> list[float]:
    """Per token of `t`: its chunks' process scores on the decoding steps that completed them
    (rewards/process.py), × reward.process_weight."""
    placed = process_vector(t.step_map, len(t.prompt_ids), t.block_size, t.canvas_len > 0, reward.chunk_tokens,
                            chunks)
    return [reward.process_weight * x for x in placed]


class LearnerWorker:
    def __init__(self, rank: int, world_size: int, cfg: RunConfig, path: str, tag: str, threads: int = 1) -> None:
        self.device = device_for_actor()  # first: it may hide GPUs before CUDA initialises
        torch.set_num_threads(threads)
        self.rank, self.world_size, self.cfg, self.path, self.tag = rank, world_size, cfg, path, tag
        self.engine: TrainEngine | None = None
        self.value_engine: TrainEngine | None = None
        self.updater: PolicyUpdater | None = None
        self.offloaded = False  # colocated: the engines' device state is in host memory
        self.senders = Senders(tag, cfg.weight_sync.bucket_mb << 20, self.device)  # rank 0 publishes

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def placement(self) -> Placement:
        """Rank 0: where the weights are published from, and whether a version fits /dev/shm here."""
        return local_placement(self.device, self.senders.shm_problem(self._wire_layout()))

    def address(self) -> tuple[str, int]:
        """Rank 0: where the other ranks find the process group's store."""
        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int, warmup: bool) -> None:
        """Join the process group and build the engine: for the SFT warm-up (`warmup`, its own
        optimizer and learning rate) or for the run's own algorithm."""
        use_interface_for_gloo(ray.util.get_node_ip_address())  # the group's gloo part, across nodes
        init_distributed(self.rank, self.world_size, master_addr, master_port, self.device)
        self._build(self.path, warmup)

    def start_rl(self, path: str) -> None:
        """After the warm-up: rebuild from the exported warm start with a fresh optimizer."""
        self.path = path
        self._build(path, warmup=False)

    def _build(self, path: str, warmup: bool) -> None:
        self._release()  # before loading: the old and new engines must not both hold the device
        m, algo = self.cfg.model, self.cfg.algo
        load = dict(dtype=DTYPES[m.dtype], device=self.device, family=m.family, overrides=m.overrides())
        # Trained weights load in fp32 (the engine's master weights), not via a model.dtype copy.
        trained = {**load, "dtype": torch.float32}
        model = self._trainable(load_model(path, **trained))
        self.model_cfg = model.config
        if warmup:
            w = self.cfg.warmup
            self.engine = TrainEngine(model, self.cfg.engine.model_copy(
                update={"lr": w.lr, "schedule": "constant", "total_steps": None}), self.device)
            self.sft_updater = PolicyUpdater(self.engine, w.algo, self.model_cfg, seed=self.cfg.trainer.seed)
            return
        self.engine = TrainEngine(model, self.cfg.engine, self.device)
        value_engine = self.cfg.engine.model_copy(update={"lr": self.cfg.engine.lr * algo.value.lr_scale})
        self.value_engine = (TrainEngine(ValueModel(self._trainable(load_model(path, **trained))), value_engine,
                                         self.device)
                             if algo.uses_value else None)
        ref = None
        if algo.needs_frozen_ref:  # the start of RL (KL term, ref_kl); forward only: the checkpoint's dtype will do
            ref = load_model(m.ref_path or path, **load).eval().requires_grad_(False)
        self.updater = PolicyUpdater(self.engine, algo, self.model_cfg, ref_model=ref,
                                     value_engine=self.value_engine, seed=self.cfg.trainer.seed,
                                     pack_rounds=self.cfg.learner.pack_rounds)
        self.sft_updater = self.updater

    def _trainable(self, model: DiffusionLM) -> DiffusionLM:
        """model.train_vision=false: a vision-language model's tower is frozen (not trained, not synced)."""
        if model.config.image_tokens and not self.cfg.model.train_vision:
            model.freeze_vision()
        return model

    def _release(self) -> None:
        """Drop every reference to the current engines (and free their device memory)."""
        self.engine = self.value_engine = self.updater = self.sft_updater = None
        self.offloaded = False
        gc.collect()  # an engine holds reference cycles (optimizer <-> parameters, DDP hooks)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _engines(self) -> list[TrainEngine]:
        return [e for e in (self.engine, self.value_engine) if e is not None]

    # ---- colocation (cluster.colocate: a rollout worker shares this rank's GPU) ----------------
    def offload(self) -> int:
        """Park the engines' device state in host memory while the rollout worker decodes; returns
        the bytes moved. The next method that needs the engines brings it back (`_resident`)."""
        self.senders.release_device_buffers()
        if self.offloaded:
            return 0
        moved = sum(e.offload() for e in self._engines()) + self._move_frozen(torch.device("cpu"))
        self.offloaded = True
        return moved

    def _resident(self) -> None:
        if self.offloaded:
            for e in self._engines():
                e.reload()
            self._move_frozen(self.device)
            self.offloaded = False

    def _move_frozen(self, device: torch.device) -> int:
        """Move the frozen start of RL (algo.log_ref_kl, kl_ref=frozen) to `device`; bytes moved. It has
        no optimizer or gradients, so a plain move is its whole offload."""
        frozen = self.updater.ref_model if self.updater is not None else None
        if frozen is None or next(frozen.parameters()).device == device:
            return 0
        frozen.to(device)
        return sum(p.nbytes for p in frozen.parameters())

    # ---- updates (all ranks, collectively, each with its own shard) ---------------------------
    def rl_step(self, samples: list[RowMeta], advantages: list[float], process_chunks: list[list[float]] | None,
                step: int, filtered: Filtered = Filtered()) -> dict[str, float]:
        """An update on this rank's rows of the step's rollouts (RL, or SFT on them for an objective
        supervised on rollouts), fetched here from the object store. `process_chunks` (per row, a
        score per chunk of reward.chunk_tokens) when a process reward feeds the value model: placed
        here on the decoding steps that completed each chunk (rewards/process.py)."""
        trajectories = fetch(samples)
        for t, chunks in zip(trajectories, process_chunks or []):
            t.process_rewards = place_process_rewards(t, chunks, self.cfg.reward)
        self._resident()
        self.senders.release_device_buffers()  # the last sync's, on the GPU the update needs
        return self.updater.rl_step(trajectories, advantages, step, filtered)

    def sft_step(self, pairs: list[tuple[list[int], list[int], str]], step: int) -> dict[str, float]:
        """An SFT step: the run's objective when algo is SFT, else the warm-up objective."""
        self._resident()
        self.senders.release_device_buffers()
        return self.sft_updater.sft_step(pairs, step)

    # ---- weight sync --------------------------------------------------------------------------
    def join_weight_group(self, kind: str, port: int, world_size: int) -> None:
        """Rank 0: host the `kind` weight-sync group (rollout workers join it concurrently as ranks 1..)."""
        self.senders.join(kind, ray.util.get_node_ip_address(), port, world_size)

    def _wire_layout(self) -> Layout:
        """What the rollout workers hold: floating weights in model.dtype (the learner may train in fp32)."""
        return wire_layout(self.engine.full_layout(synced=True), DTYPES[self.cfg.model.dtype])

    def publish_weights(self, version: int, kinds: list[str]) -> dict[str, WeightsHandle]:
        """All ranks call this (a ZeRO-3 gather is collective); rank 0 streams the weights once into
        every requested transport's buckets, cast to the rollout dtype on its own device, and returns
        a handle per transport. A group transport's handle only announces the buckets:
        `broadcast_weights` sends them."""
        self._resident()
        tensors = self.engine.full_tensors(synced=True)
        if self.rank != 0:
            for _ in tensors:  # take part in each tensor's gather; rank 0 alone packs
                pass
            return {}
        return self.senders.publish(tensors, self._wire_layout(), kinds, version)

    def broadcast_weights(self, kinds: list[str]) -> None:
        """Rank 0: the group half of publish_weights, run while the receivers run load_weights."""
        self.senders.send(kinds)

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """All ranks: engine (+ value engine) state, so optimizer moments survive a resume."""
        self._resident()
        self.engine.save(os.path.join(directory, "policy"))
        if self.value_engine is not None:
            self.value_engine.save(os.path.join(directory, "value"))

    def load(self, directory: str) -> None:
        self._resident()
        self.engine.load(os.path.join(directory, "policy"))
        if self.value_engine is not None:
            self.value_engine.load(os.path.join(directory, "value"))

    def export_hf(self, directory: str) -> None:
        """All ranks (the gather is collective); rank 0 writes the HF-format policy in model.dtype."""
        self._resident()
        self.engine.export_hf(directory, load_tokenizer(self.path) if self.rank == 0 else None,
                              DTYPES[self.cfg.model.dtype])

    def close(self) -> None:
        self.senders.close()
