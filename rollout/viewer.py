"""A self-contained HTML page showing in which denoising step each response token was committed."""
from __future__ import annotations

import colorsys
import html
from typing import Callable

from .trajectory import Trajectory


def _colour(step: int, last: int) -> str:
    """Early steps blue, late steps red."""
    r, g, b = colorsys.hsv_to_rgb(0.66 * (1 - (step - 1) / max(last - 1, 1)), 0.45, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _trajectory_html(t: Trajectory, decode: Callable[[list[int]], str], note: str,
                     thumbnail: Callable[[str], str] | None) -> str:
    last = max(t.step_map, default=1)
    spans = "".join(
        f'<span class="tok" style="background:{_colour(s, last)}" title="step {s}">'
        f"{html.escape(decode([tok])) or '&#9251;'}<sub>{s}</sub></span>"
        for tok, s in zip(t.response_ids, t.step_map))
    stats = (f"{len(t.response_ids)} tokens, {t.num_forwards} forwards, "
             f"{t.tokens_per_forward:.2f} tokens/forward, finish: {t.finish_reason}")
    image = (f'<img class="thumb" src="{html.escape(thumbnail(t.image))}" alt="prompt image">'
             if t.image and thumbnail is not None else "")
    return (f'<div class="traj">{image}<div class="prompt">{html.escape(decode(t.prompt_ids))}</div>'
            f'<div class="resp">{spans}</div><div class="stats">{html.escape(note)} · {stats}</div></div>')


def render_html(title: str, sections: dict[str, list[tuple[Trajectory, str]]],
                decode: Callable[[list[int]], str], thumbnail: Callable[[str], str] | None = None) -> str:
    """sections: heading → [(trajectory, note)], e.g. {"static": [...], "dynamic": [...]}. `thumbnail`:
    a prompt image's reference → the src of its thumbnail, shown beside the response."""
    body = "".join(
        f"<section><h2>{html.escape(name)}</h2>" + "".join(_trajectory_html(t, decode, n, thumbnail) for t, n in items)
        + "</section>" for name, items in sections.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
section {{ display: inline-block; vertical-align: top; width: 46%; margin-right: 2%; }}
.traj {{ margin: 0.8em 0; padding: 0.5em; border: 1px solid #ddd; border-radius: 6px; }}
.prompt {{ color: #555; font-family: monospace; margin-bottom: 0.3em; }}
.tok {{ font-family: monospace; padding: 1px 2px; margin: 0 1px; border-radius: 3px; white-space: pre; }}
.tok sub {{ font-size: 0.6em; color: #333; }}
.stats {{ font-size: 0.8em; color: #666; margin-top: 0.3em; }}
.thumb {{ float: left; width: 64px; height: 64px; margin: 0 0.6em 0.3em 0; image-rendering: pixelated; }}
.traj::after {{ content: ""; display: block; clear: both; }}
</style></head><body><h1>{html.escape(title)}</h1>
<p>Each response token is coloured by the denoising step that committed it (blue = early, red = late);
the subscript is the step number.</p>{body}</body></html>"""
