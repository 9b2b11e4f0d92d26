"""The prompt images of a step's trajectories, as the learner feeds them to the model (docs/design.md §6).

The learner recomputes the image features in its own forward (vision tower, then the projector the
gradient reaches), from the same image the rollout worker encoded: each trajectory names its image,
each distinct image is opened and preprocessed once per step."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.config import ModelConfig
from models.vision import ImagePreprocessor, RowImages
from rollout.trajectory import Trajectory
from tasks.images import load_image


@dataclass(frozen=True)
class TrajectoryImages:
    pixels: torch.Tensor  # [U, C, S, S] the step's distinct images, preprocessed
    of: dict[int, int]    # trajectory index -> its image's row in `pixels`

    def for_rows(self, traj_index: list[int]) -> RowImages | None:
        """The images of rows from these trajectories (None when none has one); each image once."""
        used = sorted({self.of[i] for i in traj_index if i in self.of})
        if not used:
            return None
        at = {u: k for k, u in enumerate(used)}
        index = torch.tensor([at[self.of[i]] if i in self.of else -1 for i in traj_index])
        return RowImages(self.pixels[used], index)


def trajectory_images(trajs: list[Trajectory], cfg: ModelConfig) -> TrajectoryImages | None:
    """None when no trajectory has an image. A prompt with image placeholders and no image is named."""
    for i, t in enumerate(trajs):
        if not t.image and t.prompt_ids and max(t.prompt_ids) >= cfg.vocab_size:
            raise ValueError(f"trajectory {i} ({t.prompt_uid or 'no uid'}/{t.sample_idx}) has image placeholder ids "
                             "in its prompt but names no image (Trajectory.image)")
    refs = {i: t.image for i, t in enumerate(trajs) if t.image}
    if not refs:
        return None
    distinct = list(dict.fromkeys(refs.values()))
    pixels = ImagePreprocessor(cfg)([load_image(ref) for ref in distinct])
    at = {ref: k for k, ref in enumerate(distinct)}
    return TrajectoryImages(pixels, {i: at[ref] for i, ref in refs.items()})
