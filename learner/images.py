"""The prompt images of a step's trajectories, as the learner feeds them to the model (docs/design.md §6).

The learner recomputes the image features in its own forward (vision tower, then the projector the
gradient reaches), from the same image the rollout worker encoded: each trajectory names its image,
each distinct image is opened and preprocessed once per step. A vision-language model gets images on
every micro-batch, none (zero images) where its rows have none, so that every forward of every learner
rank runs the same modules (models/vision.py: DiffusionVLM.row_image_features)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.config import ModelConfig
from models.vision import ImagePreprocessor, RowImages
from rollout.trajectory import Trajectory
from tasks.images import load_image


@dataclass(frozen=True)
class TrajectoryImages:
    pixels: RowImages   # the step's distinct images, preprocessed (row u shows image u)
    of: dict[int, int]  # trajectory index -> its image's row in `pixels`

    def for_rows(self, traj_index: list[int]) -> RowImages:
        """The images of rows from these trajectories, each image once (none when no row has one)."""
        used = sorted({self.of[i] for i in traj_index if i in self.of})
        at = {u: k for k, u in enumerate(used)}
        index = torch.tensor([at[self.of[i]] if i in self.of else -1 for i in traj_index])
        sizes = None if self.pixels.image_sizes is None else self.pixels.image_sizes[used]
        return RowImages(self.pixels.pixel_values[used], index, sizes)


def trajectory_images(trajs: list[Trajectory], cfg: ModelConfig) -> TrajectoryImages | None:
    """None for a text-only model (whose trajectories have no image). A prompt with image placeholders
    and no image is named."""
    for i, t in enumerate(trajs):
        if not t.image and t.prompt_ids and max(t.prompt_ids) >= cfg.vocab_size:
            raise ValueError(f"trajectory {i} ({t.prompt_uid or 'no uid'}/{t.sample_idx}) has image placeholder ids "
                             "in its prompt but names no image (Trajectory.image)")
    refs = {i: t.image for i, t in enumerate(trajs) if t.image}
    if cfg.vision is None and not refs:
        return None
    distinct = list(dict.fromkeys(refs.values()))
    preprocess = ImagePreprocessor(cfg)  # names a text-only model
    pixels = preprocess([load_image(ref) for ref in distinct]) if distinct else _no_image(preprocess.blank())
    at = {ref: k for k, ref in enumerate(distinct)}
    return TrajectoryImages(pixels, {i: at[ref] for i, ref in refs.items()})


def _no_image(blank: RowImages) -> RowImages:
    """Zero images, shaped as `blank`'s."""
    sizes = None if blank.image_sizes is None else blank.image_sizes[:0]
    return RowImages(blank.pixel_values[:0], blank.index[:0], sizes)
