"""Prompt images as rows carry them: a file path or a `data:image/...;base64,` URI (PIL only, no torch).

Rows keep a reference, never pixels: the driver ships it in a PromptRecord, the rollout worker and the
learner open it (models/vision.py preprocesses), the viewer shows it as a thumbnail."""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

DATA_URI = "data:image/"


class ImageError(ValueError):
    """An image reference that does not open as an image."""


def load_image(ref: str) -> Image.Image:
    """The RGB image `ref` names (a path or a data URI), fully read; ImageError says why not."""
    try:
        with Image.open(_source(ref)) as image:
            # Upright as viewers (and transformers' load_image) show it: a phone photo is often stored
            # sideways with an EXIF orientation tag.
            ImageOps.exif_transpose(image, in_place=True)
            if image.mode in ("I", "F"):  # converting clips to 0..255, and these samples have no fixed range
                raise ImageError(f"image {shown(ref)!r} has 32-bit samples (mode {image.mode}); save it with 8 "
                                 "or 16 bits per sample")
            if image.mode.startswith("I;16"):  # 16-bit grey: scaled to 8 bits, not clipped to white
                image = image.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
            return _rgb(image)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"image {shown(ref)!r} does not exist") from exc
    except (OSError, UnidentifiedImageError, binascii.Error, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {shown(ref)!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def _rgb(image: Image.Image) -> Image.Image:
    """`image` in RGB as a viewer shows it: transparent parts over white. Dropping the alpha instead showed
    the colour stored under it, mostly black (RGBA, LA, a palette or PNG with a transparent colour)."""
    if not image.has_transparency_data:
        return image.convert("RGB")
    return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA")).convert("RGB")


def _source(ref: str) -> io.BytesIO | Path:
    """What Image.open reads for `ref`: a data URI's bytes, or the file itself. Pillow reads a file only as
    far as its format needs; reading it whole first let /dev/zero (or any huge file that is no image)
    exhaust memory before Pillow could refuse it."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if not (header.startswith(DATA_URI) and header.endswith(";base64")):  # else it read as a missing file
            raise ImageError(f"image {shown(ref)!r} is a data URI but not data:image/...;base64,...")
        return io.BytesIO(base64.b64decode(payload, validate=True))
    path = Path(ref)
    if path.exists() and not path.is_file():
        raise ImageError(f"image {ref!r} is not a regular file")
    return path


def shown(ref: str) -> str:
    """`ref` for a message: a path whole, a data URI cut short."""
    return ref[:48] + "..." if ref.startswith("data:") and len(ref) > 48 else ref


def data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """`image` as a PNG data URI (shrunk to `max_side` pixels first, for thumbnails)."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return DATA_URI + "png;base64," + base64.b64encode(out.getvalue()).decode("ascii")
