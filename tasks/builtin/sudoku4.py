"""4x4 Sudoku: digits 1-4 once in every row, column and 2x2 box.

Grids are 16-character strings, row by row; "." marks a blank in a puzzle.
Row: {"question": ..., "puzzle": "1.3.....", "ground_truth_answer": "1234...", "solution":
"\\boxed{1234...}"}. Every generated puzzle has exactly one solution (ground_truth_answer); the
reward still accepts any valid grid that keeps the givens, so it also serves hand-made puzzles."""
from __future__ import annotations

import functools
import itertools
import random
import re

from rewards.extract import extract_boxed
from rewards.result import RewardResult

from ..schemas import Row

_UNITS = ([[4 * r + c for c in range(4)] for r in range(4)]  # rows
          + [[4 * r + c for r in range(4)] for c in range(4)]  # columns
          + [[4 * (br + r) + bc + c for r in range(2) for c in range(2)]
             for br in (0, 2) for bc in (0, 2)])  # 2x2 boxes
_SEPARATORS = re.compile(r"[\s,|]")


def _no_repeats(cells: str) -> bool:
    """No digit twice in a unit, over the first len(cells) cells of the grid."""
    for unit in _UNITS:
        digits = [cells[i] for i in unit if i < len(cells)]
        if len(set(digits)) != len(digits):
            return False
    return True


def is_valid_grid(grid: str) -> bool:
    return len(grid) == 16 and set(grid) <= set("1234") and _no_repeats(grid)


@functools.cache
def all_grids() -> tuple[str, ...]:
    """All 288 valid grids in a fixed order, built row by row (rows are permutations of 1234)."""
    rows = ["".join(p) for p in itertools.permutations("1234")]
    grids = [""]
    for _ in range(4):
        grids = [g + row for g in grids for row in rows if _no_repeats(g + row)]
    return tuple(grids)


def solutions(puzzle: str) -> list[str]:
    """Every grid that keeps the puzzle's givens (a puzzle is a regex: "." matches any digit)."""
    if not re.fullmatch(r"[1-4.]{16}", puzzle):
        raise ValueError(f"a puzzle is 16 characters of 1-4 and '.', got {puzzle!r}")
    pattern = re.compile(puzzle)
    return [g for g in all_grids() if pattern.fullmatch(g)]


def sample_sudoku4(rng: random.Random, min_blanks: int = 4, max_blanks: int = 10) -> Row:
    """Blank random cells of a random grid, one at a time, keeping only blanks that leave the
    solution unique, until the drawn number of blanks is reached."""
    if not 0 <= min_blanks <= max_blanks <= 12:  # a unique 4x4 puzzle needs >= 4 givens
        raise ValueError(f"need 0 <= min_blanks <= max_blanks <= 12, "
                         f"got {min_blanks}, {max_blanks}")
    blanks = rng.randint(min_blanks, max_blanks)
    for _ in range(1000):
        grid = rng.choice(all_grids())
        cells = list(grid)
        for i in rng.sample(range(16), 16):
            if cells.count(".") == blanks:
                break
            cells[i] = "."
            if len(solutions("".join(cells))) > 1:
                cells[i] = grid[i]
        if cells.count(".") == blanks:
            puzzle = "".join(cells)
            shown = ",".join(puzzle[r:r + 4] for r in range(0, 16, 4))
            question = ("Fill in the 4x4 sudoku so that each row, column and 2x2 box holds 1, 2, 3 "
                        "and 4. Blanks are dots, rows are separated by commas. Answer with the 16 "
                        f"digits row by row. Puzzle {shown}")
            return {"question": question, "puzzle": puzzle, "ground_truth_answer": grid,
                    "solution": f"\\boxed{{{grid}}}"}
    raise ValueError(f"could not blank {blanks} cells with a unique solution; lower max_blanks")


def generate_sudoku4(n: int, seed: int, min_blanks: int = 4, max_blanks: int = 10) -> list[Row]:
    rng = random.Random(seed)
    return [sample_sudoku4(rng, min_blanks, max_blanks) for _ in range(n)]


def reward(response: str, row: Row) -> dict:
    """1 if the last \\boxed{} holds a valid grid (separators allowed) that keeps every given.
    info.cell_accuracy: the fraction of blank cells filled as in ground_truth_answer."""
    answer = extract_boxed(response)
    if answer is None:
        return RewardResult.failure("no_answer", cell_accuracy=0.0).as_dict()
    grid = _SEPARATORS.sub("", answer)
    if not re.fullmatch(r"[1-4]{16}", grid):
        return RewardResult.failure("not_a_grid", answer=answer[:100], cell_accuracy=0.0).as_dict()
    puzzle, truth = row["puzzle"], row["ground_truth_answer"]
    blank = [i for i, p in enumerate(puzzle) if p == "."]
    info = {"answer": grid,
            "cell_accuracy": sum(grid[i] == truth[i] for i in blank) / len(blank) if blank else 1.0}
    if any(p not in (".", g) for p, g in zip(puzzle, grid)):
        return RewardResult.failure("changes_a_given", **info).as_dict()
    if not is_valid_grid(grid):
        return RewardResult.failure("invalid_grid", **info).as_dict()
    return RewardResult(1.0, True, info).as_dict()
