"""RolloutWorker: a model copy plus the block-diffusion sampler, in its own Ray actor process."""
from __future__ import annotations

from typing import Any

import ray
import torch

from models.checkpoint import load_model
from models.config import DTYPES
from models.transformer import DiffusionLM
from rollout.decode_forward import release_graphs
from rollout.images import encode_prompt_images
from rollout.params import SamplingParams
from rollout.requests import PromptRecord
from rollout.rng import row_seed
from rollout.sampler import generate
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import RowMeta, TrajectoryBatch
from tasks.images import load_image

from .config import ModelSection
from .device import device_for_actor
from .weight_sync.buckets import Sealed, WeightsHandle
from .weight_sync.planner import Placement
from .weight_sync.registry import Receivers, local_placement


def shard_result(trajs: list[Trajectory], shard: list[PromptRecord],
                 version: int) -> tuple[list[RowMeta], TrajectoryBatch]:
    """What `generate` returns for a decoded shard: its rows (stamped with their request and the
    weights version) as metadata and as one batch."""
    for t, r in zip(trajs, shard):
        t.policy_version, t.prompt_uid, t.sample_idx, t.image = version, r.uid, r.sample_idx, r.image
    batch = TrajectoryBatch.from_trajectories(trajs)
    return batch.metas(), batch


class RolloutWorker:
    def __init__(self, rank: int, model: ModelSection, path: str, threads: int = 1) -> None:
        self.device = device_for_actor()  # first: it may hide GPUs before CUDA initialises
        torch.set_num_threads(threads)
        self.rank = rank
        self.load_args: dict[str, Any] = dict(dtype=DTYPES[model.dtype], device=self.device, family=model.family,
                                              overrides=model.overrides())
        self.train_vision = model.train_vision
        self.model = self._load(path)
        self.weights_version = 0
        self.asleep = False  # colocated: weights released while the learner updates
        self.frozen_on_host: dict[str, torch.Tensor] = {}  # asleep: the frozen weights no sync brings back
        self.receivers = Receivers(self.device)
        self.loaded = ""  # the digest of the last Sealed handle loaded: a generate carrying it again binds nothing

    def _load(self, path: str) -> DiffusionLM:
        model = load_model(path, **self.load_args).eval()
        if model.config.image_tokens and not self.train_vision:  # as the learner: the sync leaves it out
            model.freeze_vision()
        return model

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def placement(self) -> Placement:
        return local_placement(self.device)

    def join_weight_group(self, kind: str, master_addr: str, port: int, rank: int, world_size: int) -> None:
        """Join learner rank 0's `kind` weight-sync group (called concurrently with the learner's join)."""
        self.receivers.join(kind, master_addr, port, rank, world_size)

    def sleep(self) -> int:
        """Colocated with a learner rank: release the weights (and cached device memory) while it
        updates; the sync after the update reallocates and fills them. The frozen ones (a frozen vision
        tower), which no sync carries, wait in host memory. Returns the device bytes freed."""
        if self.asleep:
            return 0
        state, frozen = self.model.state_dict(), self.model.frozen
        self.frozen_on_host = {k: t.to("cpu") for k, t in state.items() if frozen and k.startswith(frozen)}
        stays = self.frozen_on_host if self.device.type == "cpu" else {}  # held on, not copied
        freed = sum(t.numel() * t.element_size() for k, t in state.items() if k not in stays)
        self.model.to_empty(device="meta")
        self.loaded = ""
        release_graphs()  # a CUDA-graph pool outlives the weights; the next generate re-records
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.asleep = True
        return freed

    def wake(self) -> None:
        """Reallocate released weights: the synced ones uninitialised (the sync that follows overwrites
        every one), the frozen ones from host memory (no checkpoint read)."""
        if not self.asleep:
            return
        self.model.to_empty(device=self.device)
        self.model.restore_buffers()
        self.model.load_state_dict(self.frozen_on_host, strict=False)
        self.frozen_on_host = {}
        self.asleep = False

    def load_weights(self, handle: WeightsHandle | Sealed) -> int:
        self.loaded = handle.digest if isinstance(handle, Sealed) else ""
        handle = handle.open() if isinstance(handle, Sealed) else handle
        self.wake()
        self.receivers.load(handle, self.model)
        self.weights_version = handle.version
        return handle.version

    def load_from_disk(self, path: str, version: int) -> int:
        """Upstream's way (and a fallback when no transport fits): a fresh model from an HF
        export. Every weight is read here, as a first forward would, so its cost shows where it
        is paid: safetensors maps the file and reads lazily."""
        self.model = self._load(path)
        self.loaded = ""
        with torch.no_grad():
            for p in self.model.parameters():
                p.sum()
        self.weights_version = version
        return version

    @ray.method(num_returns=2)
    def generate(self, shard: list[PromptRecord], params: SamplingParams,
                 weights: Sealed | None = None) -> tuple[list[RowMeta], TrajectoryBatch]:
        """Decode a shard of the step's queue; the shard itself is the sampler's prompt queue
        (rows in flight: params.max_batch_rows). `weights`: the shared-memory version to bind first
        (weight_sync/publisher.py; nothing to do when it is the one bound). Two return values: the
        rows' metadata, which the driver fetches, and their trajectories as one batch, which stays
        in the object store."""
        if weights is not None and weights.digest != self.loaded:
            self.load_weights(weights)
        if self.asleep:
            raise RuntimeError(f"rollout-{self.rank} released its weights for the learner's update and has "
                               "not been synced since (its next load_weights wakes it)")
        seeds = [row_seed(params.seed, r.uid, r.sample_idx) for r in shard]
        pictures = {ref: load_image(ref) for ref in dict.fromkeys(r.image for r in shard if r.image)}
        images = encode_prompt_images(self.model, [pictures.get(r.image) for r in shard]) if pictures else None
        with self.receivers.reading(self.model, self.weights_version):  # shared weights: none written meanwhile
            trajs = generate(self.model, [r.prompt_ids for r in shard], params, seeds, images=images)  # may compile
        return shard_result(trajs, shard, self.weights_version)
