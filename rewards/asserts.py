"""Function tests as trusted comparisons: what of an assert the sandbox computes, what the host does.

A test whose last statement is its only top-level `assert EXPR` (`assert f(1) == 2`, or
`r = f(1)\nassert r == 2`: the statements before it run first) has that assert split into
*operations*, done here in the host on plain data, and *values*: the sub-expressions between
them, which the sandbox evaluates (in a fresh namespace, see harness.py) and sends back as plain
data (exact built-in types; anything else fails the test). Operations: comparisons (== != < <= > >= is,
is not, in, not in, chained), and/or/not,
arithmetic, subscripts, constants and displays, if-else, math.isclose / math.fabs, and the
builtins below when they combine several arguments or an operation's result (`abs(f(x) - 0.5)`).
A one-argument builtin of a value (`sorted(f(x))`, `len(f(x))`) is part of the value: it cannot
see what its result will be compared with. So the program never sees what its values are
compared against, and no object, subclass, shadowed or patched function of it decides a verdict;
the final truth value is the host's too. Any other test (several asserts, asserts inside a def
or a loop) runs as a statement in the sandbox's fresh namespace, judged there as before.
"""
from __future__ import annotations

import ast
import marshal
import math
import operator
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .harness import plain_data_error

# Builtins the host applies itself; in a test these names always mean the builtin.
_BUILTINS: dict[str, Callable] = {f.__name__: f for f in (
    abs, all, any, bool, complex, dict, divmod, float, frozenset, int, len, list, max, min, round,
    set, sorted, str, sum, tuple)}
_MATH = {"isclose": math.isclose, "fabs": math.fabs}
_KEYWORDS = {"isclose": {"rel_tol", "abs_tol"}, "sorted": {"reverse"}}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_RESULT = 10**7  # items or bits an operation on untrusted values may produce here
_MAX_DIVISION = 10**12  # quotient bits x divisor bits: about a second of CPython's long division
# A printf-style conversion's width and precision ("%0900000000d" is a 900 MB string); "%%" has none.
_CONVERSION = re.compile(r"%(?:%|(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?)")


class Value(ast.expr):
    """Placeholder for the sandbox's j-th value."""
    _fields = ("index",)


class TestFailed(Exception):
    pass


@dataclass(frozen=True)
class TestPlan:
    source: str
    expression: ast.expr | None  # None: run the source as a statement in the sandbox
    values: tuple[str, ...]  # what the sandbox evaluates, in order
    modules: tuple[str, ...]  # standard modules the test names (bound fresh in its namespace)
    setup: str = ""  # statements before the assert (`r = f(1)`), run first in the same namespace

    def request(self) -> tuple:
        if self.expression is None:
            return ("exec", self.source, list(self.modules), "")
        return ("eval", list(self.values), list(self.modules), self.setup)

    def verdict(self, values: dict[int, tuple[str, bytes]]) -> str | None:
        """None when the test passed, else why not. values[j] = ("=", hex of marshal data) | ("!", reason)."""
        try:
            if not _evaluate(self.expression, values, {}):
                return "AssertionError"
            return None
        except TestFailed as exc:
            return str(exc)
        except Exception as exc:  # the host's own operation failed on plain data: a failed test
            return f"{type(exc).__name__}: {exc}"[:200]


def plan_test(source: str) -> TestPlan:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # the sandbox reports it as the test's failure
        return TestPlan(source, None, (), ())
    # Names the test uses as `name.attr` that are standard modules: `math` in math.floor(x).
    modules = tuple(sorted({node.value.id for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                            and isinstance(node.value, ast.Name) and node.value.id in sys.stdlib_module_names}))
    *setup, last = tree.body or [None]
    if not isinstance(last, ast.Assert) or any(isinstance(node, ast.Assert) for node in setup):
        return TestPlan(source, None, (), modules)
    values: list[str] = []
    expression = _split(last.test, values)
    return TestPlan(source, expression, tuple(values), modules, ast.unparse(ast.Module(setup, [])) if setup else "")


def _is_operation(node: ast.expr) -> bool:
    return not isinstance(node, (Value, ast.Constant)) and not (
        isinstance(node, (ast.Tuple, ast.List, ast.Set)) and not any(map(_is_operation, node.elts)))


def _host_function(call: ast.Call) -> str | None:
    """The name of the builtin or math function `call` calls, if the host may apply it."""
    func = call.func
    if isinstance(func, ast.Name) and func.id in _BUILTINS:
        name = func.id
    elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math"
          and func.attr in _MATH):
        name = func.attr
    else:
        return None
    plain_args = all(not isinstance(a, ast.Starred) for a in call.args)
    if not plain_args or any(k.arg not in _KEYWORDS.get(name, ()) for k in call.keywords):
        return None
    return name


def _split(node: ast.expr, values: list[str]) -> ast.expr:
    """node with every sub-expression the sandbox must compute replaced by a Value."""
    def value() -> Value:
        values.append(ast.unparse(node))
        return Value(index=len(values) - 1)

    def split(child: ast.expr) -> ast.expr:
        return _split(child, values)

    if isinstance(node, ast.Constant):
        return node
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        return ast.Compare(split(node.left), node.ops, [split(c) for c in node.comparators])
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(node.op, [split(v) for v in node.values])
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return ast.UnaryOp(node.op, split(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return ast.BinOp(split(node.left), node.op, split(node.right))
    if isinstance(node, ast.IfExp):
        return ast.IfExp(split(node.test), split(node.body), split(node.orelse))
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and not any(isinstance(e, ast.Starred) for e in node.elts):
        return type(node)([split(e) for e in node.elts])
    if isinstance(node, ast.Dict) and None not in node.keys:
        return ast.Dict([split(k) for k in node.keys], [split(v) for v in node.values])
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Slice):
            parts = (index.lower, index.upper, index.step)
            index = ast.Slice(*(None if part is None else split(part) for part in parts))
        else:
            index = split(index)
        return ast.Subscript(split(node.value), index)
    if isinstance(node, ast.Call) and (name := _host_function(node)) is not None:
        # One argument and no operation in it: a conversion of a value, part of that value.
        # `math.` functions and several arguments: the host's, so isclose sees only plain data.
        mark = len(values)
        args = [split(a) for a in node.args]
        keywords = [ast.keyword(k.arg, split(k.value)) for k in node.keywords]
        if name in _MATH or len(args) > 1 or any(map(_is_operation, args + [k.value for k in keywords])):
            return ast.Call(ast.Name(name), args, keywords)
        del values[mark:]  # one value instead of the arguments' values
        return value()
    return value()


def _evaluate(node: ast.expr | None, values: dict[int, tuple[str, bytes]], cache: dict[int, Any]) -> Any:
    """The host's part of the test, on the sandbox's values; raises TestFailed."""
    def ev(child: ast.expr) -> Any:
        return _evaluate(child, values, cache)

    if isinstance(node, Value):
        return _value(node.index, values, cache)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Compare):
        left = ev(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            right = ev(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        result = None
        for operand in node.values:
            result = ev(operand)
            if bool(result) == isinstance(node.op, ast.Or):
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](ev(node.operand))
    if isinstance(node, ast.BinOp):
        return _binary(type(node.op), ev(node.left), ev(node.right))
    if isinstance(node, ast.IfExp):
        return ev(node.body) if ev(node.test) else ev(node.orelse)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](ev(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Slice):
            index = slice(*(None if part is None else ev(part) for part in (index.lower, index.upper, index.step)))
        else:
            index = ev(index)
        return ev(node.value)[index]
    if isinstance(node, ast.Call):
        function = _BUILTINS.get(node.func.id) or _MATH[node.func.id]
        args = list(map(ev, node.args))
        if function is divmod and len(args) == 2:
            _check_division(*args)
        return function(*args, **{k.arg: ev(k.value) for k in node.keywords})
    raise AssertionError(f"not a host operation: {ast.dump(node)}")


def _value(index: int, values: dict[int, tuple[str, bytes]], cache: dict[int, Any]) -> Any:
    if index not in cache:
        if index not in values:
            raise TestFailed(f"value {index} never arrived")
        kind, data = values[index]
        if kind != "=":
            raise TestFailed(data.decode(errors="replace"))
        value = marshal.loads(bytes.fromhex(data.decode()))  # signed by the harness, so its own
        why = plain_data_error(value)
        if why is not None:
            raise TestFailed(why)
        cache[index] = value
    return cache[index]


def _binary(op: type, left: Any, right: Any) -> Any:
    """One arithmetic operation, refused where untrusted operands could make it huge or slow."""
    if op is ast.Mult:
        sequence = (str, bytes, list, tuple)
        if isinstance(left, sequence) or isinstance(right, sequence):
            count = right if isinstance(left, sequence) else left
            size = len(left if isinstance(left, sequence) else right) * count if isinstance(count, int) else 0
        else:
            size = sum(v.bit_length() for v in (left, right) if isinstance(v, int))
        if size > _MAX_RESULT:
            raise TestFailed("product too large to compute")
    if (op is ast.Pow and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
            and right * left.bit_length() > _MAX_RESULT):
        raise TestFailed("power too large to compute")
    if op is ast.Mod and isinstance(left, (str, bytes)):
        _check_format(left, right)
    elif op in (ast.Mod, ast.FloorDiv):
        _check_division(left, right)
    return _BINARY[op](left, right)


def _check_format(template: str | bytes, args: Any) -> None:
    """Refuses `template % args` when a width or precision (written or `*`) is too large."""
    text = template if isinstance(template, str) else template.decode("latin-1")
    starred = [arg for arg in (args if isinstance(args, tuple) else (args,)) if isinstance(arg, int)]
    for width, precision in _CONVERSION.findall(text):
        sizes = [int(size) for size in (width, precision) if size.isdigit()]
        if "*" in (width, precision):
            sizes += [abs(arg) for arg in starred]
        if any(size > _MAX_RESULT for size in sizes):
            raise TestFailed("formatted string too large to compute")


def _check_division(left: Any, right: Any) -> None:
    """Refuses an integer division whose schoolbook cost (CPython's) is too large: it holds the GIL."""
    if isinstance(left, int) and isinstance(right, int):
        divisor = right.bit_length()
        if max(left.bit_length() - divisor, 0) * divisor > _MAX_DIVISION:
            raise TestFailed("division too large to compute")
