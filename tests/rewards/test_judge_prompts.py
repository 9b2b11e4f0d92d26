"""The verdict parser on a table of judge outputs (well-formed and malformed), and the templates."""
import time

import pytest

from rewards.judge_prompts import JudgePromptConfig, parse_verdict

# (judge output, scale, expected score or None for a failed verdict, expected failure reason)
TABLE = [
    ("\\boxed{1}", 1, 1.0, ""),
    ("\\boxed{0}", 1, 0.0, ""),
    ("The step is right. \\boxed{1}", 1, 1.0, ""),
    ("<think>first 3+4=7, fine</think>\n\\boxed{1}", 1, 1.0, ""),
    ("<think>is it \\boxed{0}? no</think> \\boxed{1}", 1, 1.0, ""),
    ("\\boxed{7}", 10, 0.7, ""),
    ("Final: \\boxed{ 10 }", 10, 1.0, ""),
    ("\\boxed{Yes}", 1, 1.0, ""),
    ("\\boxed{incorrect}", 1, 0.0, ""),
    ("<score>7</score>", 10, 0.7, ""),
    ("Reasoning...\n<score> 3 </score>", 10, 0.3, ""),
    ("<SCORE>0</SCORE>", 10, 0.0, ""),
    ("Yes", 1, 1.0, ""),
    ("No.", 1, 0.0, ""),
    ("yes, the step is correct", 1, 1.0, ""),
    ("**No**", 1, 0.0, ""),
    ("7", 10, 0.7, ""),
    ("8/10", 10, 0.8, ""),
    ("Score: 6", 10, 0.6, ""),
    ("0.5", 1, 0.5, ""),
    # malformed
    ("", 10, None, "empty"),
    ("   \n", 10, None, "empty"),
    ("<think>let me check the carry", 1, None, "unfinished_thinking"),
    ("\\boxed{7", 10, None, "unclosed_box"),
    ("\\boxed{seven}", 10, None, "not_a_number"),
    ("\\boxed{11}", 10, None, "out_of_range"),
    ("\\boxed{2}", 1, None, "out_of_range"),
    ("<score>-1</score>", 10, None, "out_of_range"),
    ("Yes and no", 1, None, "ambiguous"),
    ("I think the answer is plausible but I cannot verify every step of it here.", 10, None, "no_verdict"),
    ("12/10", 10, None, "out_of_range"),
    ("aaaa####!!!!", 10, None, "no_verdict"),
    # a short answer is yes/no only when it opens with one that nothing after it takes back
    ("No, the step is not correct", 1, 0.0, ""),
    ("Not yes", 1, None, "ambiguous"),
    ("Yes? Not sure.", 1, None, "ambiguous"),
    ("Yes, it is wrong", 1, None, "ambiguous"),
    ("Yes, 3/10", 10, None, "ambiguous"),
    ("No errors found.", 1, None, "ambiguous"),
]


@pytest.mark.parametrize("text, scale, score, reason", TABLE)
def test_parser_table(text, scale, score, reason):
    v = parse_verdict(text, scale)
    if score is None:
        assert not v.ok and v.score == 0.0 and v.reason.startswith(reason), v
    else:
        assert v.ok and v.reason == "" and v.score == pytest.approx(score), v


def test_table_is_large_and_mixed():
    assert len(TABLE) >= 20
    assert sum(s is None for _, _, s, _ in TABLE) >= 8


def test_parser_never_raises_on_hostile_input():
    for text in [None, 123, "\\boxed{" * 10_000, "<score>" * 1000, "\\boxed{\\boxed{1}}", "9" * 500]:
        v = parse_verdict(text, 10)
        assert isinstance(v.score, float) and 0.0 <= v.score <= 1.0


def test_templates_fill_fields_and_split_prefixes_into_steps():
    cfg = JudgePromptConfig()
    out = cfg.outcome_prompt("2+2=", "4 \\boxed{4}", "4")
    assert "2+2=" in out and "4 \\boxed{4}" in out and "\\boxed{}" in out
    steps = cfg.process_prompts("12+9=", ["12", "12 +", "12 + 9"])
    assert len(steps) == 3
    assert "Steps so far:\n(none)" in steps[0] and "New step:\n12\n" in steps[0]
    assert "Steps so far:\n12\n" in steps[1] and "New step:\n +\n" in steps[1]
    assert "New step:\n 9\n" in steps[2]
    custom = JudgePromptConfig(process_template="Q={question} P={previous} S={step}")
    assert custom.process_prompts("q", ["ab", "abc"]) == ["Q=q P=(none) S=ab", "Q=q P=ab S=c"]


@pytest.mark.parametrize("text", ["<think>" * 20_000, "<score>" * 20_000, "Score" + " " * 20_000 + "x",
                                  "<score>" + " " * 20_000 + "x</score>"])
def test_parser_is_linear_on_repeated_tags(text):
    # A judge stuck repeating a tag must cost milliseconds, not minutes (lazy tag regexes were quadratic).
    start = time.perf_counter()
    v = parse_verdict(text, 10)
    assert time.perf_counter() - start < 0.5
    assert not v.ok and v.reason in {"unfinished_thinking", "no_verdict", "not_a_number"}, v
