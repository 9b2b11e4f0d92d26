"""Small HumanEval/MBPP/LiveCodeBench-style problems: a canonical solution and its assert list each.

Written for these tests. The asserts use the forms such test lists use (==, !=, <, is, in,
math.isclose, abs(a - b) < tol, sorted/set/len of a result, bare truthiness, a class method),
so a correct solution must score 1.0 whichever way each form is judged.
"""

PROBLEMS: dict[str, tuple[str, list[str]]] = {
    "has_close_elements": ("""
def has_close_elements(numbers, threshold):
    ordered = sorted(numbers)
    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))
""", ["assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True",
      "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False",
      "assert not has_close_elements([1.0, 2.0, 3.0], 0.5)",
      "assert has_close_elements([1.1, 2.2, 3.1, 4.1, 5.1], 1.0)"]),
    "truncate_number": ("""
def truncate_number(number):
    return number % 1.0
""", ["assert truncate_number(3.5) == 0.5",
      "assert abs(truncate_number(1.33) - 0.33) < 1e-6",
      "assert math.fabs(truncate_number(123.456) - 0.456) < 1e-6"]),
    "mean_absolute_deviation": ("""
def mean_absolute_deviation(numbers):
    mean = sum(numbers) / len(numbers)
    return sum(abs(x - mean) for x in numbers) / len(numbers)
""", ["assert math.isclose(mean_absolute_deviation([1.0, 2.0, 3.0]), 2.0 / 3.0)",
      "assert math.isclose(mean_absolute_deviation([1.0, 2.0, 3.0, 4.0]), 1.0, rel_tol=1e-9)",
      "assert abs(mean_absolute_deviation([1.0, 2.0, 3.0, 4.0, 5.0]) - 6.0 / 5.0) < 1e-6"]),
    "parse_nested_parens": ("""
def parse_nested_parens(text):
    def depth(group):
        deepest = level = 0
        for char in group:
            level += 1 if char == "(" else -1
            deepest = max(deepest, level)
        return deepest
    return [depth(group) for group in text.split() if group]
""", ["assert parse_nested_parens('(()()) ((())) () ((())()())') == [2, 3, 1, 3]",
      "assert parse_nested_parens('() (()) ((())) (((())))') == [1, 2, 3, 4]",
      "assert parse_nested_parens('') == []"]),
    "sum_product": ("""
from functools import reduce
def sum_product(numbers):
    return sum(numbers), reduce(lambda a, b: a * b, numbers, 1)
""", ["assert sum_product([]) == (0, 1)",
      "assert sum_product([3, 5, 7]) == (3 + 5 + 7, 3 * 5 * 7)",
      "assert sum_product([10]) == (10, 10)",
      "assert sum_product([1, 1, 1])[1] == 1"]),
    "rolling_max": ("""
def rolling_max(numbers):
    result, best = [], None
    for n in numbers:
        best = n if best is None else max(best, n)
        result.append(best)
    return result
""", ["assert rolling_max([]) == []",
      "assert rolling_max([4, 3, 2, 1]) == [4, 4, 4, 4]",
      "assert rolling_max([3, 2, 3, 100, 3]) == [3, 3, 3, 100, 100]",
      "assert len(rolling_max([1, 2, 3])) == 3"]),
    "find_first_negative": ("""
def find_first_negative(numbers):
    for n in numbers:
        if n < 0:
            return n
    return None
""", ["assert find_first_negative([1, -2, 3]) == -2",
      "assert find_first_negative([1, 2, 3]) is None",
      "assert find_first_negative([-5]) is not None",
      "assert find_first_negative([]) == None"]),
    "count_chars": ("""
from collections import Counter
def count_chars(text):
    return dict(Counter(text))
""", ["assert count_chars('abca') == {'a': 2, 'b': 1, 'c': 1}",
      "assert count_chars('') == {}",
      "assert 'z' not in count_chars('abc')",
      "assert count_chars('xx')['x'] == 2"]),
    "common_elements": ("""
def common_elements(a, b):
    return set(a) & set(b)
""", ["assert common_elements([1, 2, 3], [2, 3, 4]) == {2, 3}",
      "assert set(common_elements((1, 2), (3, 4))) == set()",
      "assert common_elements('abc', 'cde') == {'c'}",
      "assert 2 in common_elements([1, 2], [2])"]),
    "unique_sorted": ("""
def unique_sorted(values):
    return sorted(set(values))
""", ["assert unique_sorted([5, 3, 5, 2, 3, 3, 9, 0, 123]) == [0, 2, 3, 5, 9, 123]",
      "assert sorted(unique_sorted([3, 1, 2]), reverse=True) == [3, 2, 1]",
      "assert unique_sorted([]) == []"]),
    "is_palindrome": ("""
def is_palindrome(text):
    return text == text[::-1]
""", ["assert is_palindrome('')", "assert is_palindrome('aba')", "assert not is_palindrome('zbcd')",
      "assert is_palindrome('xywyx') is True", "assert is_palindrome('ab') is False"]),
    "fib": ("""
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
""", ["assert fib(10) == 55", "assert fib(1) == 1", "assert fib(12) == 144",
      "assert fib(100) == 354224848179261915075", "assert 0 <= fib(5) < 10"]),
    "triangle_area": ("""
def triangle_area(a, b, c):
    if a + b <= c or a + c <= b or b + c <= a:
        return -1
    s = (a + b + c) / 2
    return round((s * (s - a) * (s - b) * (s - c)) ** 0.5, 2)
""", ["assert triangle_area(3, 4, 5) == 6.00", "assert triangle_area(1, 2, 10) == -1",
      "assert abs(triangle_area(4, 8, 5) - 8.18) < 0.01", "assert math.isclose(triangle_area(2, 2, 2), 1.73)"]),
    "split_words": ("""
import re
def split_words(text):
    return tuple(word for word in re.split(r"[ ,]+", text) if word)
""", ["assert split_words('Hi, my name is John') == ('Hi', 'my', 'name', 'is', 'John')",
      "assert split_words('One, two') == ('One', 'two')",
      "assert split_words('') == ()",
      "assert list(split_words('a b')) == ['a', 'b']"]),
    "min_path_grid": ("""
import heapq
class Grid:
    def __init__(self, rows):
        self.rows = rows
    def neighbours(self, r, c):
        for dr, dc in ((1, 0), (0, 1), (-1, 0), (0, -1)):
            if 0 <= r + dr < len(self.rows) and 0 <= c + dc < len(self.rows[0]):
                yield r + dr, c + dc
def min_path_grid(rows):
    grid = Grid(rows)
    best = {(0, 0): rows[0][0]}
    queue = [(rows[0][0], 0, 0)]
    while queue:
        cost, r, c = heapq.heappop(queue)
        if cost > best[(r, c)]:
            continue
        for nr, nc in grid.neighbours(r, c):
            if cost + rows[nr][nc] < best.get((nr, nc), float("inf")):
                best[(nr, nc)] = cost + rows[nr][nc]
                heapq.heappush(queue, (cost + rows[nr][nc], nr, nc))
    return best[(len(rows) - 1, len(rows[0]) - 1)]
""", ["assert min_path_grid([[1, 3, 1], [1, 5, 1], [4, 2, 1]]) == 7",
      "assert min_path_grid([[5]]) == 5",
      "assert min_path_grid([[1, 2], [1, 1]]) == 3"]),
    "two_sum_class": ("""
class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, n in enumerate(nums):
            if target - n in seen:
                return [seen[target - n], i]
            seen[n] = i
        return []
""", ["assert Solution().twoSum([2, 7, 11, 15], 9) == [0, 1]",
      "assert Solution().twoSum([3, 2, 4], 6) == [1, 2]",
      "assert Solution().twoSum([1], 5) == []"]),
    "complex_roots": ("""
import cmath
def complex_roots(a, b, c):
    d = cmath.sqrt(b * b - 4 * a * c)
    return ((-b + d) / (2 * a), (-b - d) / (2 * a))
""", ["assert complex_roots(1, 0, 1) == (1j, -1j)",
      "assert abs(complex_roots(1, -3, 2)[0] - 2) < 1e-9",
      "assert complex_roots(1, -2, 1)[0] == complex_roots(1, -2, 1)[1]"]),
    "encode_bytes": ("""
def encode_bytes(text):
    return text.encode("utf-8"), frozenset(text)
""", ["assert encode_bytes('hé') == (b'h\\xc3\\xa9', frozenset('hé'))",
      "assert encode_bytes('')[0] == b''",
      "assert isinstance(encode_bytes('a')[0], bytes)",
      "result = encode_bytes('abc')\nassert result[1] == {'a', 'b', 'c'}"]),
    "grade_matrix": ("""
def grade_matrix(scores):
    letters = []
    for row in scores:
        letters.append(["A" if s >= 90 else "B" if s >= 80 else "C" for s in row])
    return letters
""", ["assert grade_matrix([[95, 85], [70, 90]]) == [['A', 'B'], ['C', 'A']]",
      "assert grade_matrix([]) == []",
      "assert [len(row) for row in grade_matrix([[1, 2, 3]])] == [3]"]),
}
