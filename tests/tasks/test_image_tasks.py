"""Tasks with images: the built-in drawn `shapes` task, the `image_json` file task (reference multimodal JSON)
with its bad rows named by file and row, and image prompts encoded with the model's placeholders."""
import json

import numpy as np
import pytest
from PIL import Image

from models.tokenizer import build_tiny_tokenizer
from tasks.images import ImageError, load_image
from tasks.loaders import RowValidationError
from tasks.prompts import IMAGE_MARK, build_prompt, encode_prompt
from tasks.registry import get_task


def test_shapes_rows_are_drawn_answerable_and_split_by_image():
    task = get_task("shapes")
    rows = task.train_rows(40, seed=0)
    for row in rows:
        image = load_image(row["image"])
        colour = row["question"].split()[2]
        count = "ABCD".index(row["ground_truth_answer"]) + 1
        # Count the asked colour's shapes from the pixels: one per 8x8 cell, read at the cell centre.
        rgb = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}[colour]
        assert sum(image.getpixel((x * 8 + 4, y * 8 + 4)) == rgb for x in range(4) for y in range(4)) == count
        assert task.reward(row["ground_truth_answer"], row)["correct"]
    evals = task.eval_rows(40, seed=0)
    key = {(r["question"], r["image"]) for r in rows}
    assert not key & {(r["question"], r["image"]) for r in evals}
    assert task.kind == "choice" and task.reward_path == "tasks.builtin.shapes:reward"


def write_rows(tmp_path, rows, images):
    root = tmp_path / "images"
    root.mkdir()
    for name, size in images.items():
        Image.new("RGB", size, "red").save(root / name)
    (root / "broken.png").write_bytes(b"not a png")
    data = tmp_path / "seed.json"
    data.write_text(json.dumps(rows))
    return data, root


ROWS = [
    {"image": "ok.png", "question": "Colour? A. red B. blue", "ground_truth_answer": "A"},
    {"image": "missing.png", "question": "q2", "ground_truth_answer": "B"},
    {"image": "broken.png", "question": "q3", "ground_truth_answer": "C"},
    {"image": "tiny.png", "question": "q4", "ground_truth_answer": "D"},
    {"question": "q5", "ground_truth_answer": "A"},
]


def test_image_json_names_bad_rows_and_skips_or_stops(tmp_path):
    data, root = write_rows(tmp_path, ROWS, {"ok.png": (40, 30), "tiny.png": (3, 40)})
    task = get_task("image_json", path=str(data), image_root=str(root), on_error="skip", eval_fraction=0.0)
    assert [r["question"] for r in task.train_rows(None, 0)] == [ROWS[0]["question"]]
    assert task.train_rows(None, 0)[0]["image"] == str(root / "ok.png")  # resolved under the image root
    skipped = task.skipped_rows
    assert len(skipped) == 4
    assert skipped[0].startswith(f"{data}[1]: ") and "does not exist" in skipped[0]
    assert skipped[1].startswith(f"{data}[2]: ") and "cannot be read" in skipped[1]
    assert skipped[2].startswith(f"{data}[3]: ") and "3x40 pixels" in skipped[2] and "min_image_side=8" in skipped[2]
    assert skipped[3].startswith(f"{data}[4]: ") and "no image" in skipped[3]
    with pytest.raises(RowValidationError, match=r"seed.json\[1\]: image .*missing.png.* does not exist"):
        get_task("image_json", path=str(data), image_root=str(root))


def test_image_prompts_take_the_models_placeholders():
    tok = build_tiny_tokenizer()
    row = {"question": "How many?", "ground_truth_answer": "A", "image": "x.png"}
    assert build_prompt(row, tok, "plain", "choice") == f"{IMAGE_MARK}\nHow many?"
    placeholders = [len(tok), len(tok) + 1, len(tok) + 2]
    ids = encode_prompt(row, tok, "chat", "choice", placeholders)
    start = ids.index(placeholders[0])
    assert ids[start:start + 3] == placeholders and sum(i >= len(tok) for i in ids) == 3
    assert tok.decode(ids[:start]).endswith("<|im_start|>user\n")
    assert tok.decode(ids[start + 3:]).startswith("\nHow many?\nAnswer with the option's letter")
    with pytest.raises(ValueError, match="takes no images"):
        encode_prompt(row, tok, "chat", "choice")


def test_a_path_that_is_no_regular_file_is_refused_unread(tmp_path):
    # Read whole before Pillow looked at it, /dev/zero grew until memory ran out.
    for ref in ("/dev/zero", str(tmp_path)):
        with pytest.raises(ImageError, match="is not a regular file"):
            load_image(ref)


def close(pixel, want, tol=8):
    return all(abs(a - b) <= tol for a, b in zip(pixel, want))


def test_a_sideways_phone_photo_loads_upright(tmp_path):
    upright = Image.new("RGB", (32, 64), "red")
    upright.paste((0, 0, 255), (0, 0, 32, 16))  # a blue top
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view, as phones store portrait photos
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "photo.jpg", exif=exif)
    image = load_image(str(tmp_path / "photo.jpg"))
    assert image.size == (32, 64) and close(image.getpixel((16, 4)), (0, 0, 255))
    assert close(image.getpixel((16, 60)), (255, 0, 0))


def test_transparent_parts_load_over_white(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (5, 5, 15, 15))
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (5, 5, 15, 15))
    for name, image, kw in [("rgba.png", rgba, {}), ("la.png", rgba.convert("LA"), {}),
                            ("p.png", palette, {"transparency": 0}), ("p.gif", palette, {"transparency": 0})]:
        image.save(tmp_path / name, **kw)
        loaded = load_image(str(tmp_path / name))
        assert loaded.getpixel((0, 0)) == (255, 255, 255), name  # dropping alpha showed black
        assert loaded.getpixel((10, 10)) == ((76,) * 3 if name == "la.png" else (255, 0, 0)), name
    opaque = Image.effect_noise((20, 20), 60).convert("RGBA")
    opaque.save(tmp_path / "opaque.png")
    assert load_image(str(tmp_path / "opaque.png")).tobytes() == opaque.convert("RGB").tobytes()


def test_16_bit_grey_scales_to_8_bits_and_32_bit_samples_are_named(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # opens as I;16
    loaded = load_image(str(tmp_path / "deep.png"))  # converting clipped every sample above 255 to white
    assert loaded.tobytes() == Image.fromarray(grey).convert("RGB").tobytes()
    Image.new("F", (16, 16), 0.5).save(tmp_path / "float.tiff")
    with pytest.raises(ImageError, match=r"float.tiff' has 32-bit samples \(mode F\)"):
        load_image(str(tmp_path / "float.tiff"))


def test_image_json_keeps_paths_under_the_image_root(tmp_path):
    rows = [{"image": ref, "question": f"q{i}", "ground_truth_answer": "A"}
            for i, ref in enumerate(["sub/../ok.png", "link.png", "../outside.png", "sub/../../outside.png",
                                     str(tmp_path / "outside.png"), "/etc/passwd"])]
    data, root = write_rows(tmp_path, rows, {"ok.png": (40, 30)})
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "outside.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")  # a link inside the root is the user's choice
    task = get_task("image_json", path=str(data), image_root=str(root), on_error="skip", eval_fraction=0.0)
    assert sorted(r["image"] for r in task.train_rows(None, 0)) == [str(root / "link.png"), str(root / "ok.png")]
    assert [e.split(": ", 1)[1] for e in task.skipped_rows] == [
        f"image {ref!r} lies outside task.params.image_root={str(root)!r}" for ref in [r["image"] for r in rows[2:]]]


def test_a_data_uri_of_no_base64_image_is_named_as_such(tmp_path):
    rows = [{"image": ref, "question": f"q{i}", "ground_truth_answer": "A"}
            for i, ref in enumerate(["ok.png", "data:text/plain;base64,aGVsbG8=", "data:image/png,abc"])]
    data, root = write_rows(tmp_path, rows, {"ok.png": (40, 30)})
    task = get_task("image_json", path=str(data), image_root=str(root), on_error="skip", eval_fraction=0.0)
    assert [e.split(": ", 1)[1] for e in task.skipped_rows] == [  # the first read as a missing file
        f"image {r['image']!r} is a data URI but not data:image/...;base64,..." for r in rows[1:]]
