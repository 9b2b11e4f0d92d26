import pytest

from rewards.extract import extract_answer, extract_answer_tag, extract_boxed, extract_code, extract_last_number


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{42}.", "42"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{1} and finally \\fbox{x^{2}}", "x^{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\boxed 5 apples", "5"),
    ("\\boxed\n{5}", "5"),  # whitespace of any kind may sit between the command and its brace
    ("\\boxed \t{5}", "5"),
    ("\\boxed{1+", None),
    ("no answer here", None),
    ("\\boxed{" + "{" * 10000 + "1" + "}" * 10000 + "}", "{" * 10000 + "1" + "}" * 10000),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_whitespace_before_the_brace_stays_linear():
    assert extract_boxed("\\boxed" + " \n" * 500000 + "{5}") == "5"


def test_other_extractors():
    assert extract_answer_tag("<answer> 12 </answer>") == "12"
    assert extract_answer_tag("<answer>so \\boxed{3}</answer>") == "3"
    assert extract_answer_tag("<answer>unclosed") is None
    assert extract_last_number("it costs 1,250 dollars, not -3.5") == "-3.5"
    assert extract_last_number("total: 1,250") == "1250"
    assert extract_last_number("none") is None


@pytest.mark.parametrize("text, expected", [
    ("it drops to \u22123 degrees", "-3"),  # U+2212, the minus sign of typeset text
    ("it drops to \u22121,250.5 degrees", "-1250.5"),
    ("pages 3-5", "5"),  # a hyphen after a digit is a range or a subtraction, not a sign
    ("so x=-5", "-5"),
    ("10 - 7 = 3", "3"),
])
def test_last_number_sign(text, expected):
    assert extract_last_number(text) == expected


def test_fallbacks_are_ordered_and_validated():
    text = "<answer>7</answer> maybe 9"
    assert extract_answer(text) == (None, None)
    assert extract_answer(text, ("answer_tag", "last_number")) == ("7", "answer_tag")
    assert extract_answer(text, ("last_number",)) == ("9", "last_number")
    assert extract_answer("\\boxed{1} 9", ("last_number",)) == ("1", "boxed")
    with pytest.raises(ValueError, match="unknown answer fallback 'guess'"):
        extract_answer(text, ("guess",))


def test_extract_code():
    text = "```python\na = 1\n```\ntext\n```python\nb = 2\n```\n```\nplain\n```"
    assert extract_code(text) == "b = 2\n"
    assert extract_code(text, language=None) == "plain\n"
    assert extract_code("```\nx = 3\n```") == "x = 3\n"
    assert extract_code("```python\nunterminated") is None
    assert extract_code("no code") is None
