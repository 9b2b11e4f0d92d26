"""Tiny random models and prompts shared by the sampler and learner tests."""
import torch

from models.tiny import synthetic_config
from models.transformer import DiffusionLM
from rollout.params import SamplingParams

STRATEGIES = ["static", "dynamic", "entropy_bounded", "random", "sequential"]
MASK, EOS, PAD = 11, 1, 0


def tiny_model(block_size: int = 4, family: str = "tiny", vocab: int = 12, seed: int = 0,
               sharpen: float = 8.0) -> DiffusionLM:
    torch.manual_seed(seed)
    cfg = synthetic_config(vocab, family=family, block_size=block_size, max_position_embeddings=256,
                           mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD)
    model = DiffusionLM(cfg).eval()
    with torch.no_grad():  # sharper distributions, so dynamic/entropy strategies commit several per pass
        model.lm_head.weight.mul_(sharpen)
    return model


def prompts_mixed(block: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    lengths = [block * 2, block * 3 + 1, 3, block + block - 1]  # multiples and non-multiples of B
    return [torch.randint(2, 10, (n,), generator=g).tolist() for n in lengths]


def params(**kw) -> SamplingParams:
    base = dict(block_size=4, steps_per_block=2, max_new_tokens=24, threshold=0.5, entropy_bound=0.8, seed=3)
    base.update(kw)
    return SamplingParams(**base)




def tiny_vlm(block_size: int = 4, family: str = "llada_v", vocab: int = 12, seed: int = 0,
             sharpen: float = 8.0, views: str = "square"):
    """tiny_model's decoder behind the tiny SigLIP tower and projector (models/vision.py); any family.
    views="anyres": TINY_ANYRES views (base + tiles, image_newline)."""
    from models.tiny import TINY_ANYRES, TINY_VISION
    from models.vision import DiffusionVLM

    torch.manual_seed(seed)
    cfg = synthetic_config(vocab, family=family, block_size=block_size, max_position_embeddings=256,
                           mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD, vision=dict(TINY_VISION),
                           **(TINY_ANYRES if views == "anyres" else {}))
    model = DiffusionVLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
        model.mm_projector[2].weight.mul_(4.0)  # image features as large as token embeddings: they matter
    return model


def image_prompts(model, block: int) -> tuple[list[list[int]], list]:
    """prompts_mixed with an image spliced into prompts 0 and 2 (two different random images), and each
    prompt's PIL image or None. Anyres models get a wide 50 x 20 picture (a 1 x 2 tile grid, unpadded) and a
    90 x 70 one (3 x 3 tiles, shrunk for anyres_max_2): different placeholder counts."""
    import numpy as np
    from PIL import Image

    from models.vision import image_placeholders

    rng = np.random.default_rng(5)
    sizes = [(50, 20), (90, 70)] if model.config.max_tiles else [(32, 32)] * 2  # (width, height)
    pictures = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    prompts = prompts_mixed(block)
    prompts[0] = prompts[0][:1] + image_placeholders(model.config, pictures[0]) + prompts[0][1:]
    prompts[2] = image_placeholders(model.config, pictures[1]) + prompts[2]
    return prompts, [pictures[0], None, pictures[1], None]


def sampled_image_rollouts(model, p: SamplingParams) -> list:
    """image_prompts twice over (eight trajectories, seeds 0-7), each stamped with its picture's data URI
    as the rollout worker stamps it ("" for a text prompt)."""
    from rollout.images import encode_prompt_images
    from rollout.sampler import generate
    from tasks.images import data_uri

    prompts, pictures = image_prompts(model, 4)
    trajs = generate(model, prompts * 2, p, seeds=list(range(8)), images=encode_prompt_images(model, pictures * 2))
    for t, picture in zip(trajs, pictures * 2):
        t.image = "" if picture is None else data_uri(picture)
    return trajs
