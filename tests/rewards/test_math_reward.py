"""Math reward: a labelled equivalence table, extraction fallbacks, adversarial inputs."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards import MathReward, get_reward
from tests.rewards.hostile_programs import ADVERSARIAL_MATH as ADVERSARIAL

CASES = [
    # (label, answer, ground truth, equivalent?)
    ("fraction vs decimal", "0.5", "\\frac{1}{2}", True),
    ("decimal vs fraction", "\\frac{3}{4}", "0.75", True),
    ("dfrac vs frac", "\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("tfrac vs frac", "\\tfrac{2}{3}", "\\frac{2}{3}", True),
    ("frac shorthand", "\\frac12", "\\frac{1}{2}", True),
    ("unsimplified fraction", "\\frac{2}{4}", "\\frac{1}{2}", True),
    ("wrong fraction", "\\frac{1}{3}", "\\frac{1}{2}", False),
    ("fraction vs rounded decimal", "0.33", "\\frac{1}{3}", False),
    ("open interval", "(1, 2)", "(1,2)", True),
    ("half-open interval", "(1,2]", "(1, 2]", True),
    ("open vs closed interval", "(1,2)", "[1,2]", False),
    ("infinite interval", "(-\\infty, 3]", "(-\\infty,3]", True),
    ("set order", "\\{2, 1\\}", "\\{1,2\\}", True),
    ("different sets", "\\{1, 3\\}", "\\{1,2\\}", False),
    ("degrees", "30^\\circ", "30", True),
    ("degrees braced", "45^{\\circ}", "45", True),
    ("wrong degrees", "60^\\circ", "30", False),
    ("units in text", "5\\text{ cm}", "5", True),
    ("text wrapper", "\\text{5}", "5", True),
    ("units wrong value", "6\\text{ cm}", "5", False),
    ("percent", "50\\%", "50", True),
    ("percent wrong", "40\\%", "50", False),
    ("negative integer", "-3", "-3", True),
    ("negative vs positive", "-3", "3", False),
    ("negative fraction", "-\\frac{1}{2}", "-0.5", True),
    ("negative fraction sign placement", "\\frac{-1}{2}", "-\\frac{1}{2}", True),
    ("equivalent radicals", "2\\sqrt{2}", "\\sqrt{8}", True),
    ("rationalised radical", "\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("different radicals", "\\sqrt{3}", "\\sqrt{2}", False),
    ("matrix equal", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
    ("matrix different", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("bmatrix vs pmatrix", "\\begin{bmatrix}1\\\\0\\end{bmatrix}", "\\begin{pmatrix}1\\\\0\\end{pmatrix}", True),
    ("integer vs float", "4.0", "4", True),
    ("thousands separator", "1,000", "1000", True),
    ("scientific notation", "1.5\\times 10^{3}", "1500", True),
    ("variable assignment", "x=3", "3", True),
    ("assignment vs ground truth assignment", "x = 3", "x=3", True),
    ("other variable", "y=3", "x=3", False),
    ("vertical vs horizontal asymptote", "x=3", "y=3", False),
    ("other line", "y=2x+1", "x=2x+1", False),
    ("pi expression", "\\frac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ("pi multiple", "2\\pi", "\\pi", False),
    ("algebraic expression", "2x+2", "2(x+1)", True),
    ("algebraic wrong", "2x+1", "2(x+1)", False),
    ("tuple", "(1, -2)", "(1,-2)", True),
    ("tuple order matters", "(-2, 1)", "(1,-2)", False),
    ("multiple choice", "\\text{(B)}", "B", True),
    ("multiple choice wrong", "\\text{(C)}", "B", False),
    ("dollar signs", "\\$5", "5", True),
    ("left right parens", "\\left(1,2\\right)", "(1,2)", True),
    ("exponent", "2^{10}", "1024", True),
    ("exponent wrong", "2^{10}", "1000", False),
    ("mixed sqrt", "\\sqrt{2}+1", "1+\\sqrt{2}", True),
]


@pytest.fixture(scope="module")
def math_reward() -> MathReward:
    return MathReward(timeout=5.0)


def test_table_is_big_and_balanced():
    assert len(CASES) >= 40
    assert sum(case[3] for case in CASES) >= 15 and sum(not case[3] for case in CASES) >= 15


@pytest.mark.parametrize("label, answer, truth, equivalent", CASES, ids=[case[0] for case in CASES])
def test_equivalence_table(math_reward, label, answer, truth, equivalent):
    result = math_reward(f"Reasoning... so the answer is \\boxed{{{answer}}}.", {"ground_truth_answer": truth})
    assert result["correct"] is equivalent, result["info"]
    assert result["reward"] == float(equivalent)
    assert result["info"]["answer"] == answer


def test_result_shape_and_fast_path(math_reward):
    result = math_reward("\\boxed{\\dfrac{1}{2}}", {"ground_truth_answer": "\\frac{1}{2}"})
    assert set(result) == {"reward", "correct", "info"}
    assert result["info"]["path"] == "string_match"
    assert result["info"]["extracted_by"] == "boxed"


def test_fallbacks_are_per_task():
    row = {"ground_truth_answer": "12"}
    assert get_reward("math")("The answer is 12", row)["info"]["reason"] == "no_answer"
    with_fallbacks = get_reward("math", fallbacks=("answer_tag", "last_number"))
    assert with_fallbacks("<answer>12</answer>", row)["info"]["extracted_by"] == "answer_tag"
    assert with_fallbacks("so it is 12", row)["correct"]
    with pytest.raises(ValueError, match="unknown answer fallback"):
        get_reward("math", fallbacks=("nope",))


def test_last_number_keeps_a_unicode_minus():
    reward = get_reward("math", fallbacks=("last_number",))
    result = reward("The temperature drops to \u22123 degrees.", {"ground_truth_answer": "3"})
    assert result["reward"] == 0.0 and result["correct"] is False and result["info"]["answer"] == "-3"
    assert reward("It drops to \u22123 degrees.", {"ground_truth_answer": "-3"})["reward"] == 1.0


def test_missing_ground_truth_names_the_field(math_reward):
    with pytest.raises(KeyError, match="ground_truth_answer"):
        math_reward("\\boxed{1}", {"question": "?"})


TIMEOUT_S = 1.0

def _check_adversarial(reward: MathReward, text: str) -> tuple[dict, float]:
    start = time.monotonic()
    result = reward(text, {"ground_truth_answer": "3"})
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def tight_reward() -> MathReward:
    # max_answer_chars lifted so that the 10k-deep braces really reach math_verify
    return MathReward(timeout=TIMEOUT_S, max_answer_chars=10**6)


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_is_bounded(tight_reward, name):
    result, elapsed = _check_adversarial(tight_reward, ADVERSARIAL[name])
    assert elapsed <= TIMEOUT_S + 1.0, (name, elapsed, result["info"])
    assert result["correct"] is False or result["info"]["answer"] == "3", result["info"]


def test_adversarial_inputs_from_a_worker_thread(tight_reward):
    """math_verify's own timeout needs the main thread; ours must not."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, text in ADVERSARIAL.items():
            result, elapsed = pool.submit(_check_adversarial, tight_reward, text).result()
            assert elapsed <= TIMEOUT_S + 1.0, (name, elapsed)
            assert result["correct"] is False or result["info"]["answer"] == "3"


def test_a_timeout_costs_the_check_not_the_checker(tight_reward):
    result, _ = _check_adversarial(tight_reward, ADVERSARIAL["exponent tower"])
    assert result["info"]["failure"] == "timeout" and result["correct"] is False
    result, elapsed = _check_adversarial(tight_reward, "\\boxed{\\frac{6}{2}}")
    assert result["correct"] and elapsed < TIMEOUT_S, (elapsed, result["info"])


# Equivalent pairs that the string fast path cannot decide: each needs math_verify.
NEEDS_MATH_VERIFY = [
    ("\\frac{3}{4}", "0.75", True), ("2\\sqrt{2}", "\\sqrt{8}", True), ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("x^2+2x+1", "(x+1)^2", True), ("\\frac{2}{4}", "\\frac{1}{2}", True), ("2^{10}", "1024", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True), ("1.5\\times 10^{3}", "1500", True),
    ("\\sqrt{2}+1", "1+\\sqrt{2}", True), ("2x+2", "2(x+1)", True), ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{3}", "\\frac{1}{2}", False), ("2x+1", "2(x+1)", False), ("\\{1,3\\}", "\\{1,2\\}", False),
]

UNGUARDED_SCRIPT = """
import json, threading
print("module body ran", flush=True)  # must print once: workers never re-import this script
from rewards import get_reward
reward = get_reward("math")
cases = json.loads({cases!r})
out = []
def check():
    for answer, truth, _ in cases:
        out.append(reward("so \\\\boxed{{" + answer + "}}", {{"ground_truth_answer": truth}}))
thread = threading.Thread(target=check)
thread.start()
thread.join()
print(json.dumps(out))
"""


def test_unguarded_script_calling_from_a_thread(tmp_path, project_dir):
    """Issue 15: a script without a __main__ guard, the reward called from a worker thread."""
    import json
    import os
    import subprocess
    import sys

    from rewards.math_reward import normalize

    assert len(NEEDS_MATH_VERIFY) >= 10
    assert all(normalize(a) != normalize(t) for a, t, _ in NEEDS_MATH_VERIFY)
    script = tmp_path / "user_script.py"
    script.write_text(UNGUARDED_SCRIPT.format(cases=json.dumps(NEEDS_MATH_VERIFY)))
    env = {**os.environ, "PYTHONPATH": str(project_dir)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "module body ran" and lines.count("module body ran") == 1
    results = json.loads(lines[-1])
    for (answer, truth, equivalent), result in zip(NEEDS_MATH_VERIFY, results, strict=True):
        assert "failure" not in result["info"], (answer, truth, result["info"])
        assert result["info"]["path"] == "math_verify"
        assert result["correct"] is equivalent, (answer, truth, result["info"])


@pytest.mark.parametrize("how", ["no interpreter", "worker dies at start", "preload fails"])
def test_unavailable_checker_is_an_explicit_failure(monkeypatch, how):
    """A checker that cannot start gives no verdict, never a confident "not equivalent"."""
    import sys

    import rewards.math_reward as math_reward
    import rewards.timeout_pool as timeout_pool

    monkeypatch.setattr(math_reward, "_pools", {})  # a pool of its own, started under the fault
    if how == "no interpreter":
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    elif how == "worker dies at start":
        monkeypatch.setattr(timeout_pool, "_BOOT", "import os; os._exit(3)")
    else:
        monkeypatch.setattr(math_reward, "CHECKER_MODULES", ("no_such_module",))
    reward = MathReward(timeout=5.0, workers=1)
    for _ in range(3):  # every call, also those while the pool waits before retrying a start
        result = reward("\\boxed{\\frac{3}{4}}", {"ground_truth_answer": "0.75"})
        assert result["info"]["failure"] == "checker_unavailable", result["info"]
        assert result["reward"] == 0.0 and result["correct"] is False and "reason" not in result["info"]
    expected = {"no interpreter": "nonexistent", "worker dies at start": "exit code 3",
                "preload fails": "no_such_module"}[how]
    assert expected in result["info"]["error"] or how == "worker dies at start" and "retried" in result["info"]["error"]
    # The string fast path needs no checker: its verdicts stay real.
    assert reward("\\boxed{0.75}", {"ground_truth_answer": "0.75"})["correct"] is True
    math_reward._pools[1].close()


@pytest.mark.parametrize("response", ["so \\boxed\n{5}", "so \\boxed {5}", "$\\boxed\t{5}$"])
def test_boxed_with_whitespace_before_its_brace(math_reward, response):
    assert math_reward(response, {"ground_truth_answer": "5"})["reward"] == 1.0


@pytest.mark.parametrize("answer, truth, reward", [
    ("1 2", "12", 0.0),  # two numbers, not twelve: the fast path must not glue digits together
    ("3\n4", "34", 0.0),
    ("2 1/2", "21/2", 0.0),
    ("1\\,000", "1000", 1.0),  # LaTeX thin space as a thousands separator
    ("x = 3", "x=3", 1.0),
])
def test_fast_path_keeps_digits_apart(math_reward, answer, truth, reward):
    result = math_reward(f"so \\boxed{{{answer}}}", {"ground_truth_answer": truth})
    assert result["reward"] == reward, result["info"]


@pytest.mark.parametrize("answer, truth, reward", [
    ("\\rightarrow", "\\leftarrow", 0.0),  # not a \left/\right sizing command: must not be dropped
    ("\\left[1, 2\\right)", "[1,2)", 1.0),
])
def test_only_sizing_left_right_are_dropped(math_reward, answer, truth, reward):
    assert math_reward(f"so \\boxed{{{answer}}}", {"ground_truth_answer": truth})["reward"] == reward
