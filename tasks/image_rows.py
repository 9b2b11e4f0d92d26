"""Rows with images (the reference's multimodal JSON: `image`, `question`, `ground_truth_answer`): each
row's image resolved against the image root and opened once when the rows load, so a missing,
unreadable or too small image is named by file and row before the run starts (tasks/loaders.py)."""
from __future__ import annotations

import os
from pathlib import Path

from .images import ImageError, load_image
from .schemas import Row


def image_checker(root: str | Path | None, min_side: int):
    """check(row) for load_rows: resolves row["image"] in place (a path under `root`, or a data URI kept
    as it is) and says what is wrong with the image, or None. With no `root`, paths are taken as given."""
    if min_side < 1:
        raise ValueError(f"task.params.min_image_side must be >= 1, got {min_side}")
    base = Path(os.path.normpath(root)) if root is not None else None
    if base is not None and not base.is_dir():
        raise ValueError(f"task.params.image_root={str(root)!r} is not a directory")

    def check(row: Row) -> str | None:
        ref = row.get("image")
        if not ref:
            return "the row has no image"
        if not ref.startswith("data:") and base is not None:  # any data URI: load_image names a bad one
            # Rows name images under the root: "../../etc/passwd" or an absolute path elsewhere is a row
            # error, not a file to open. Lexical (the path as it will be opened), so symlinks inside the
            # root may point anywhere, as a dataset cache's links to its blobs do.
            path = Path(os.path.normpath(base / ref))
            if not path.is_relative_to(base):
                return f"image {ref!r} lies outside task.params.image_root={str(root)!r}"
            row["image"] = str(path)
        try:
            image = load_image(row["image"])
        except ImageError as exc:
            return str(exc)
        if min(image.size) < min_side:
            return (f"image {ref!r} is {image.size[0]}x{image.size[1]} pixels, smaller than "
                    f"task.params.min_image_side={min_side}")
        return None

    return check
