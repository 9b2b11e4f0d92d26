"""Count the shapes of one colour in a drawn picture, asked as A/B/C/D: the built-in visual task (no download).

Row: {"question": "How many red shapes are there? A. 1 B. 2 C. 3 D. 4", "ground_truth_answer": "B",
"image": "data:image/png;base64,...", "choices": "ABCD"}. The picture (PIL) is a grid of cells on white;
each shape fills one cell, so with the tiny model's 8-pixel patches (32 pixels, a 4 x 4 grid) every patch
shows at most one shape. Distractors are shapes of the other colours."""
from __future__ import annotations

import random

from PIL import Image, ImageDraw

from rewards.choice_reward import choice_reward

from ..images import data_uri
from ..schemas import Row

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}
LETTERS = "ABCD"


def sample_shapes(rng: random.Random, size: int = 32, grid: int = 4, max_distractors: int = 3) -> Row:
    """One picture with 1-4 shapes of the asked colour and up to `max_distractors` of the others."""
    if size < 4 * grid or grid < 3:
        raise ValueError(f"need grid >= 3 and size >= 4 * grid pixels, got size={size}, grid={grid}")
    if not 0 <= max_distractors <= grid * grid - len(LETTERS):
        raise ValueError(f"max_distractors must be in [0, {grid * grid - len(LETTERS)}], got {max_distractors}")
    colour = rng.choice(sorted(COLOURS))
    count = rng.randint(1, len(LETTERS))
    others = [c for c in sorted(COLOURS) if c != colour]
    shapes = [colour] * count + [rng.choice(others) for _ in range(rng.randint(0, max_distractors))]
    cells = rng.sample(range(grid * grid), len(shapes))
    image = Image.new("RGB", (size, size), "white")
    draw, step = ImageDraw.Draw(image), size // grid
    for cell, c in zip(cells, shapes):
        x, y = cell % grid * step, cell // grid * step
        box = (x + 1, y + 1, x + step - 2, y + step - 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=COLOURS[c])
    options = " ".join(f"{letter}. {n}" for n, letter in enumerate(LETTERS, start=1))
    return {"question": f"How many {colour} shapes are there? {options}",
            "ground_truth_answer": LETTERS[count - 1], "image": data_uri(image), "choices": LETTERS}


def reward(response: str, row: Row) -> dict:
    """The multiple-choice verdict (rewards/choice_reward.py)."""
    return choice_reward(response, row).as_dict()
