"""A decode's prompt images, encoded once per distinct image on the rollout worker (docs/design.md §5).

The features go into the slot table beside the prompt's ids (rollout/slot_table.py): a pass embeds
them like token ids, so a decode pass costs what a text prompt of the same length costs."""
from __future__ import annotations

import torch
from PIL import Image

from models.transformer import DiffusionLM
from models.vision import ImagePreprocessor


def encode_prompt_images(model: DiffusionLM, images: list[Image.Image | None]) -> list[torch.Tensor | None]:
    """Per prompt, its image features [image_tokens, H] for `generate(images=...)`, or None. Each
    distinct image object is preprocessed and encoded once (a prompt's samples share theirs)."""
    distinct = list({id(im): im for im in images if im is not None}.values())
    if not distinct:
        return [None] * len(images)
    pixels = ImagePreprocessor(model.config)(distinct).to(model.embed_tokens.weight.device)  # names a text-only model
    with torch.no_grad():
        features = model.encode_images(pixels.pixel_values, pixels.image_sizes)
    at = {id(im): k for k, im in enumerate(distinct)}
    return [None if im is None else features[at[id(im)]] for im in images]
