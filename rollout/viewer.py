"""A self-contained HTML page showing in which denoising step each response token was committed:
one colour class per step (`s1`, `s2`, …, shared by the whole page and shown in a legend), and
buttons that show the static or the dynamic decodings alone or side by side."""
from __future__ import annotations

import colorsys
import html
from typing import Callable

from .trajectory import Trajectory

# The page's fixed style; the per-step colour classes .s1 … .sN follow it.
STYLE = """body { font-family: system-ui, sans-serif; margin: 1.5em 2em; }
.controls { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ddd; }
button { font: inherit; margin-right: 0.4em; padding: 0.2em 0.8em; border: 1px solid #888; border-radius: 4px;
          background: #f4f4f4; cursor: pointer; }
button.on { background: #333; color: #fff; }
.legend { margin-top: 0.5em; font-size: 0.85em; }
.legend .tok { display: inline-block; min-width: 1.6em; text-align: center; }
section { display: inline-block; vertical-align: top; width: 47%; margin-right: 2%; }
body.single section { width: 96%; }
section.hidden { display: none; }
.traj { margin: 0.8em 0; padding: 0.5em; border: 1px solid #ddd; border-radius: 6px; }
.prompt { color: #555; font-family: monospace; margin-bottom: 0.3em; }
.resp { line-height: 2; }
.tok { font-family: monospace; padding: 1px 2px; margin: 0 1px; border-radius: 3px; white-space: pre; }
.tok sub { font-size: 0.6em; color: #333; }
.stats { font-size: 0.8em; color: #666; margin-top: 0.3em; }
.thumb { float: left; width: 64px; height: 64px; margin: 0 0.6em 0.3em 0; image-rendering: pixelated; }
.traj::after { content: ""; display: block; clear: both; }
"""

# The toggle buttons: show every section side by side, or one alone.
SCRIPT = """for (const b of document.querySelectorAll("button[data-show]")) {
  b.addEventListener("click", () => {
    const show = b.dataset.show;
    for (const s of document.querySelectorAll("section"))
      s.classList.toggle("hidden", show !== "all" && s.dataset.mode !== show);
    for (const o of document.querySelectorAll("button[data-show]")) o.classList.toggle("on", o === b);
    document.body.classList.toggle("single", show !== "all");
  });
}
"""


def step_colour(step: int, last: int) -> str:
    """Early steps blue, late steps red, on one scale for the whole page."""
    r, g, b = colorsys.hsv_to_rgb(0.66 * (1 - (step - 1) / max(last - 1, 1)), 0.45, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _token_text(text: str) -> str:
    """The token as shown: whitespace (and an empty decode) made visible, the rest escaped."""
    if not text.strip():
        return "".join("&#8629;" if c == "\n" else "&#9251;" for c in text) or "&#9251;"
    return html.escape(text)


def _trajectory_html(t: Trajectory, decode: Callable[[list[int]], str], note: str,
                     thumbnail: Callable[[str], str] | None) -> str:
    spans = "".join(
        f'<span class="tok s{s}" title="step {s}">{_token_text(decode([tok]))}<sub>{s}</sub></span>'
        for tok, s in zip(t.response_ids, t.step_map))
    stats = (f"{len(t.response_ids)} tokens, {t.num_forwards} forwards, "
             f"{t.tokens_per_forward:.2f} tokens/forward, finish: {t.finish_reason}")
    image = (f'<img class="thumb" src="{html.escape(thumbnail(t.image))}" alt="prompt image">'
             if t.image and thumbnail is not None else "")
    return (f'<div class="traj">{image}<div class="prompt">{html.escape(decode(t.prompt_ids))}</div>'
            f'<div class="resp">{spans}</div><div class="stats">{html.escape(note)} · {stats}</div></div>')


def _legend(last: int) -> str:
    """One swatch per step (every k-th labelled when there are many)."""
    every = max(1, last // 16)
    swatches = "".join(f'<span class="tok s{s}">{s if (s - 1) % every == 0 or s == last else "&nbsp;"}</span>'
                       for s in range(1, last + 1))
    return f'<div class="legend">denoising step: {swatches}</div>'


def render_html(title: str, sections: dict[str, list[tuple[Trajectory, str]]],
                decode: Callable[[list[int]], str], thumbnail: Callable[[str], str] | None = None) -> str:
    """sections: heading → [(trajectory, note)], e.g. {"static …": [...], "dynamic …": [...]}; a
    heading's first word names its toggle button. `thumbnail`: a prompt image's reference → the src of its
    thumbnail, shown beside the response."""
    last = max((s for items in sections.values() for t, _ in items for s in t.step_map), default=1)
    classes = "\n".join(f".s{s} {{ background: {step_colour(s, last)}; }}" for s in range(1, last + 1))
    modes = [name.split()[0] if name.split() else f"section{i}" for i, name in enumerate(sections)]
    buttons = "".join(f'<button data-show="{html.escape(m)}">{html.escape(m)} only</button>' for m in modes)
    body = "".join(
        f'<section data-mode="{html.escape(mode)}"><h2>{html.escape(name)}</h2>'
        + "".join(_trajectory_html(t, decode, n, thumbnail) for t, n in items) + "</section>"
        for mode, (name, items) in zip(modes, sections.items()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{STYLE}{classes}
</style></head><body><h1>{html.escape(title)}</h1>
<p>Each response token is coloured by the denoising step that committed it (blue = early, red = late);
the subscript is the step number. Tokens of one colour were committed in the same forward pass.</p>
<div class="controls"><button data-show="all" class="on">side by side</button>{buttons}{_legend(last)}</div>
{body}
<script>
{SCRIPT}</script></body></html>"""
