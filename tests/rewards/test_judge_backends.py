"""Judge backends on tiny causal LMs saved to disk with a real tokenizer (built offline): prompts
come from the templates, generation runs, verdicts are parsed; unparseable ones score 0 with the
reason. The vLLM backend runs only where vllm imports and a GPU is visible."""

import importlib.util

import pytest
import torch

from rewards.judge_backends import JudgeConfig, TransformersBackend, chat_prompt, make_backend
from rewards.judging import JudgeRequest, judge_responses
from tiny_judge import write_tiny_judge

IDS = [ord(c) - 25 for c in "231 \\boxed{132}"]  # the tiny tokenizer: printable ASCII at ord - 25
ROW = {"question": "47+85=", "ground_truth_answer": "132"}


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    return {"random": str(write_tiny_judge(root / "random")), "yes": str(write_tiny_judge(root / "yes", answer="1"))}


class Recording:
    """Wraps a backend and keeps the prompts it was given."""

    def __init__(self, inner):
        self.inner, self.prompts = inner, []

    def generate(self, prompts):
        self.prompts += prompts
        return self.inner.generate(prompts)


def decode(ids):
    return "".join(chr(i + 25) for i in ids)


def test_template_prompts_and_parsed_verdicts(judges):
    cfg = JudgeConfig(model=judges["yes"], max_new_tokens=4)
    backend = Recording(make_backend(cfg))
    [s] = judge_responses(backend, cfg.prompts, decode, [JudgeRequest("u", 0, IDS, ROW)], outcome=True, chunk_tokens=6)
    # one outcome prompt and one per chunk (15 tokens in chunks of 6: 3 prefixes), from the templates
    assert len(backend.prompts) == 4
    assert backend.prompts[0] == cfg.prompts.outcome_prompt("47+85=", "231 \\boxed{132}", "132")
    assert backend.prompts[1:] == cfg.prompts.process_prompts(
        "47+85=", ["231 \\b", "231 \\boxed{1", "231 \\boxed{132}"]
    )
    # the rigged judge answers "1" then EOS to everything: 1/10 on the outcome scale, 1 per step
    assert s.outcome == pytest.approx(0.1) and s.outcome_failure is None
    assert s.scores == [1.0, 1.0, 1.0] and s.failures == []


def test_unparseable_verdicts_score_zero_with_the_reason(judges):
    cfg = JudgeConfig(model=judges["random"], max_new_tokens=6)
    backend = TransformersBackend(cfg)
    raw = backend.generate(["Is 1+1=2 correct?"])
    assert isinstance(raw[0], str) and raw[0]  # generation ran and wrote something
    [s] = judge_responses(backend, cfg.prompts, decode, [JudgeRequest("u", 0, IDS, ROW)], outcome=True, chunk_tokens=8)
    assert s.outcome == 0.0 and s.outcome_failure in ("no_verdict", "not_a_number", "out_of_range", "unclosed_box")
    assert s.scores == [0.0, 0.0] and len(s.failures) == 2 and all(s.failures)


def test_a_backend_error_fails_verdicts_instead_of_raising():
    class Broken:
        def generate(self, prompts):
            raise RuntimeError("CUDA out of memory")

    [s] = judge_responses(Broken(), JudgeConfig().prompts, decode, [JudgeRequest("u", 0, IDS, ROW)], True, 8)
    assert s.outcome == 0.0 and "CUDA out of memory" in s.outcome_failure and len(s.failures) == 2


def test_batches_and_chat_template(judges):
    cfg = JudgeConfig(model=judges["yes"], max_new_tokens=4, batch_size=2)
    backend = TransformersBackend(cfg)
    prompts = ["a", "bb" * 40, "c", "dddd", "e"]  # different lengths: left padding in every batch
    assert backend.generate(prompts) == ["1"] * 5
    text = chat_prompt(backend.tokenizer, "hello", False)
    assert text.startswith("<|im_start|>user\nhello<|im_end|>\n") and text.endswith("<|im_start|>assistant\n")


def test_missing_model_is_named():
    with pytest.raises(ValueError, match="judge.model"):
        make_backend(JudgeConfig())


def _vllm_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install '.[vllm]' on a GPU machine)"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


@pytest.mark.skipif(_vllm_skip_reason() is not None, reason=str(_vllm_skip_reason()))
def test_vllm_backend_gives_the_same_verdicts_as_transformers(judges):
    """Same prompts, greedy: vLLM and transformers must parse to the same verdicts."""
    requests = [JudgeRequest("u", 0, IDS, ROW), JudgeRequest("v", 1, IDS[:5], ROW)]
    out = {}
    for backend, dtype in (("transformers", "float32"), ("vllm", "bfloat16")):
        cfg = JudgeConfig(
            backend=backend,
            model=judges["yes"],
            max_new_tokens=4,
            dtype=dtype,
            gpu_memory_utilization=0.3,
            max_model_len=2048,
        )
        out[backend] = judge_responses(make_backend(cfg, num_gpus=1), cfg.prompts, decode, requests, True, 6)
    assert [(s.outcome, s.scores) for s in out["vllm"]] == [(s.outcome, s.scores) for s in out["transformers"]]
    assert out["vllm"][0].scores == [1.0, 1.0, 1.0]
