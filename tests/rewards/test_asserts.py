"""The host's part of a compared test gives Python's own verdict on plain data, and the split
leaves it every operation that could see what a value is compared with."""
import ast
import marshal
import math

import pytest

from canonical_problems import PROBLEMS
from rewards.asserts import plan_test

NAMESPACE = {"f": lambda x: x * 2, "g": lambda: [3, 1, 2], "h": lambda: None, "d": lambda: {"a": 1, "b": [1, 2]},
             "fl": lambda x: x / 3, "t": lambda: (1, "x", b"y"), "s": lambda: {1, 2}, "c": lambda: 1 + 2j,
             "boom": lambda: 1 / 0, "math": math}

FORMS = ["assert f(2) == 4", "assert f(2) != 4", "assert f(2) < 5 <= f(3)", "assert 1 < f(1) < 2",
         "assert f(2) is not None", "assert h() is None", "assert h() is not None", "assert 3 in g()",
         "assert 4 not in g()", "assert sorted(g()) == [1, 2, 3]", "assert len(g()) == 3 and g()[0] == 3",
         "assert math.isclose(fl(1), 0.3333333333)", "assert math.isclose(fl(1), 0.333, rel_tol=1e-3)",
         "assert abs(fl(1) - 1 / 3) < 1e-9", "assert math.fabs(fl(2) - 0.6) < 0.1", "assert round(fl(1), 2) == 0.33",
         "assert d() == {'a': 1, 'b': [1, 2]}", "assert d()['b'][1:] == [2]", "assert t() == (1, 'x', b'y')",
         "assert s() == {2, 1}", "assert s() >= {1}", "assert c() == complex(1, 2)", "assert f(1) or boom()",
         "assert h() is None or boom()", "assert not h()", "assert g()", "assert h()", "assert f(0)",
         "assert boom() == 1", "assert max(f(1), 3) == 3", "assert min(g()) == 1", "assert sum(g()) - 6 == 0",
         "assert -f(1) == -2", "assert f(1) ** 2 == 4", "assert (f(1), f(2)) == (2, 4)", "assert [f(1)] * 2 == [2, 2]",
         "assert f(1) if h() else f(2) == 4", "assert set(g()) == set([1, 2, 3])", "assert g()[f(0)] == 3",
         "assert 'x' in t() and b'y' in t()", "assert f(1) == 2, 'message'"]


def local_verdict(source: str) -> str | None:
    """What the host decides when the values are those Python computes here."""
    plan = plan_test(source)
    values = {}
    for j, expression in enumerate(plan.values):
        try:
            values[j] = ("=", marshal.dumps(eval(expression, dict(NAMESPACE))).hex().encode())
        except Exception as exc:
            values[j] = ("!", str(exc).encode())
    return plan.verdict(values)


@pytest.mark.parametrize("source", FORMS)
def test_host_verdict_equals_python_on_plain_data(source):
    try:
        exec(source, dict(NAMESPACE))
        expected = True
    except (AssertionError, ZeroDivisionError):
        expected = False
    assert plan_test(source).expression is not None
    assert (local_verdict(source) is None) == expected


@pytest.mark.parametrize("source, host_part, values", [
    ("assert f(1) == 2", "Compare(Value(0), 2)", ["f(1)"]),
    ("assert abs(f(1) - 0.5) < 1e-6", "Compare(abs(BinOp(Value(0), 0.5)), 1e-06)", ["f(1)"]),
    ("assert math.isclose(f(1), 0.5, rel_tol=1e-3)", "isclose(Value(0), 0.5, rel_tol=0.001)", ["f(1)"]),
    ("assert sorted(f(1)) == [1]", "Compare(Value(0), [1])", ["sorted(f(1))"]),
    ("assert f(1)", "Value(0)", ["f(1)"]),
    ("assert not f(1) in g()", "not(Compare(Value(0), Value(1)))", ["f(1)", "g()"]),
])
def test_operations_stay_in_the_host(source, host_part, values):
    plan = plan_test(source)
    assert list(plan.values) == values
    assert describe(plan.expression) == host_part


def describe(node) -> str:
    """A compact view of the host's part, for the test above."""
    if type(node).__name__ == "Value":
        return f"Value({node.index})"
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.Compare):
        return f"Compare({', '.join(describe(n) for n in [node.left, *node.comparators])})"
    if isinstance(node, ast.BinOp):
        return f"BinOp({describe(node.left)}, {describe(node.right)})"
    if isinstance(node, ast.UnaryOp):
        return f"not({describe(node.operand)})"
    if isinstance(node, ast.List):
        return f"[{', '.join(map(describe, node.elts))}]"
    if isinstance(node, ast.Call):
        args = [describe(a) for a in node.args] + [f"{k.arg}={describe(k.value)}" for k in node.keywords]
        return f"{node.func.id}({', '.join(args)})"
    raise AssertionError(ast.dump(node))


def test_statements_before_the_assert_run_first_and_others_run_as_statements():
    plan = plan_test("x = f(1)\nassert x == 2")
    assert plan.setup == "x = f(1)" and plan.values == ("x",)
    assert plan_test("def check(c):\n    assert c(1) == 2\ncheck(f)").expression is None
    assert plan_test("assert f(1) == 2\nassert f(2) == 4").expression is None
    assert plan_test("assert (").expression is None
    assert plan_test("import math\nassert math.isclose(f(1), 2)").modules == ("math",)


def test_host_refuses_operations_that_untrusted_values_could_make_huge():
    plan = plan_test("assert 'a' * f(1) == ''")
    assert "too large" in plan.verdict({0: ("=", marshal.dumps(10**12).hex().encode())})
    plan = plan_test("assert 3 ** f(1) > 0")
    assert "too large" in plan.verdict({0: ("=", marshal.dumps(10**9).hex().encode())})


def test_canonical_problem_tests_are_mostly_compared_in_the_host():
    plans = [plan_test(test) for _, tests in PROBLEMS.values() for test in tests]
    assert sum(p.expression is not None for p in plans) >= len(plans) - 2


def _verdict(source: str, *values) -> str | None:
    return plan_test(source).verdict({j: ("=", marshal.dumps(v).hex().encode()) for j, v in enumerate(values)})


@pytest.mark.parametrize("source, values", [
    ("assert f(1) % 2 == 0", ("%0900000000d",)),  # printf-style formatting: a 900 MB string here
    ("assert f(1) % 2 == 0", (b"%.900000000f",)),
    ("assert f(1) % (2, 3) == ''", ("%%%0900000000d%d",)),
    ("assert '%*d' % (f(1), 1) == ''", (900_000_000,)),
    ("assert f(1) % g() == 0", (1 << 4_000_000, (1 << 2_000_000) + 1)),  # long division: quadratic
    ("assert f(1) // g() == 0", (1 << 4_000_000, (1 << 2_000_000) + 1)),
    ("assert divmod(f(1), g()) == (0, 0)", (1 << 4_000_000, (1 << 2_000_000) + 1)),
])
def test_host_refuses_formats_and_divisions_that_untrusted_values_make_huge(source, values):
    """Each took the host seconds and hundreds of MB, or more with larger values (up to the
    16 MiB of values a run may send)."""
    assert "too large" in _verdict(source, *values)


def test_host_still_formats_and_divides_plain_sizes():
    assert _verdict("assert f(1) % (7, 7.5) == '   7 7.50 %'", "%4d %.2f %%") is None
    assert _verdict("assert '%*d' % (f(1), 7) == '   7'", 4) is None
    assert _verdict("assert f(1) % 7 == 4 and f(1) // 7 == 10**100 // 7", 10**100, 10**100) is None
    assert _verdict("assert divmod(f(1), g()) == (3, 1)", 10, 3) is None
