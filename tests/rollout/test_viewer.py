"""The trajectory viewer shows every response token with its commit step."""
from rollout.trajectory import Trajectory
from rollout.viewer import render_html


def test_viewer_marks_each_token_with_its_step_and_escapes_text():
    t = Trajectory(prompt_ids=[1, 2], response_ids=[3, 4, 5], step_map=[2, 1, 2], logprobs=[0.0] * 3,
                   entropies=[0.0] * 3, block_size=4, finish_reason="eos", num_forwards=2)
    vocab = {1: "<", 2: "q", 3: "a", 4: "&", 5: " "}
    page = render_html("demo", {"static": [(t, "seed 0")], "dynamic": [(t, "seed 1")]},
                       lambda ids: "".join(vocab[i] for i in ids))
    assert page.count('title="step 2"') == 4 and page.count('title="step 1"') == 2
    assert "&amp;<sub>1</sub>" in page and "&lt;q" in page  # decoded text is escaped
    assert "&#9251;<sub>2</sub>" in page  # a space is shown as ␣
    assert "1.50 tokens/forward" in page and page.index("static") < page.index("dynamic")
