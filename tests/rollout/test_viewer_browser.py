"""trajectories.html in a real browser (headless Chromium; skipped where none is installed), as
bench/viewer_check.py checks it: the real sampler's static and dynamic decodings rendered, every
token in its step's colour class and the legend's colour, the toggle buttons really clicked."""
from __future__ import annotations

import pytest

from bench.viewer_check import check_page, check_tokens, find_browser
from helpers import params, prompts_mixed, tiny_model
from rollout.sampler import generate
from rollout.viewer import render_html

BROWSER = find_browser()
VOCAB = ["<pad>", "<eos>", "a", "b", "c", "d", "<", "&", "e", "f", "g", "<mask>"]


def _page(tmp_path):
    model = tiny_model(4)
    decodings = {name: generate(model, prompts_mixed(4), params(strategy=name, max_new_tokens=16, temperature=1.0))
                 for name in ("static", "dynamic")}
    assert any(len(set(t.step_map)) < len(t.step_map) for t in decodings["dynamic"])  # steps that commit several
    page = render_html("check", {f"{name} decoding": [(t, f"row {i}") for i, t in enumerate(trajs)]
                                 for name, trajs in decodings.items()}, lambda ids: "".join(VOCAB[i] for i in ids))
    (tmp_path / "trajectories.html").write_text(page)
    return tmp_path / "trajectories.html", decodings


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_viewer_renders_every_step_in_its_colour_and_toggles(tmp_path):
    html, decodings = _page(tmp_path)
    result = check_page(html, tmp_path / "viewer.png", BROWSER)
    assert result["problems"] == []
    trajs = decodings["static"] + decodings["dynamic"]
    assert result["responses"] == len(trajs) and result["tokens"] == sum(len(t.step_map) for t in trajs)
    assert result["steps"] == max(s for t in trajs for s in t.step_map)
    assert result["toggles"]["dynamic"] == {"static": False, "dynamic": True}
    assert (tmp_path / "viewer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_token_check_catches_a_wrong_or_shared_colour():
    """The checker itself, on DOM readings a broken page would give."""
    legend = {"s1": "rgb(1, 1, 1)", "s2": "rgb(2, 2, 2)"}
    good = [{"classes": ["s1"], "step": "1", "colour": "rgb(1, 1, 1)"},
            {"classes": ["s2"], "step": "2", "colour": "rgb(2, 2, 2)"}]
    assert check_tokens({"legend": legend, "responses": [good]}) == []
    two_classes = [{**good[0], "classes": ["s1", "s2"]}]
    wrong_colour = [{**good[1], "colour": "rgb(1, 1, 1)"}]
    shared = [good[0], {**good[1], "colour": "rgb(1, 1, 1)"}]
    assert "classes ['s1', 's2']" in check_tokens({"legend": legend, "responses": [two_classes]})[0]
    assert "not the legend's" in check_tokens({"legend": legend, "responses": [wrong_colour]})[0]
    assert check_tokens({"legend": {**legend, "s2": "rgb(1, 1, 1)"}, "responses": [shared]}) == \
        ["steps ['1', '2'] share the colour rgb(1, 1, 1)"]
