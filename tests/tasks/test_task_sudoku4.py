"""4x4 Sudoku generator and its reward."""
import pytest

from tasks.builtin.sudoku4 import all_grids, generate_sudoku4, is_valid_grid, reward, solutions

SOLUTION = "1234341221434321"
PUZZLE = "1.3.3..2.1..4..1"  # unique solution: SOLUTION
ROW = {"puzzle": PUZZLE, "ground_truth_answer": SOLUTION}


def test_grids():
    assert len(all_grids()) == 288 and all(map(is_valid_grid, all_grids()))
    assert solutions(PUZZLE) == [SOLUTION]
    assert not is_valid_grid("1234123412341234") and not is_valid_grid("123")


@pytest.mark.parametrize("response, reason", [
    (f"\\boxed{{{SOLUTION}}}", None),
    ("\\boxed{1234,3412,2143,4321} done", None),
    ("\\boxed{1234 3412\n2143 4321}", None),
    ("\\boxed{2143432112343412}", "changes_a_given"),  # a valid grid, but not this puzzle's
    ("\\boxed{1234341221344321}", "invalid_grid"),  # keeps the givens, breaks two columns
    ("\\boxed{123434122143432}", "not_a_grid"),
    ("\\boxed{1234341221434325}", "not_a_grid"),
    (SOLUTION, "no_answer"),
])
def test_reward(response, reason):
    result = reward(response, ROW)
    assert result["correct"] is (reason is None)
    assert result["info"].get("reason") == reason


def test_cell_accuracy_counts_blank_cells():
    assert reward(f"\\boxed{{{SOLUTION}}}", ROW)["info"]["cell_accuracy"] == 1.0
    blanks = [i for i, c in enumerate(PUZZLE) if c == "."]
    wrong = list(SOLUTION)
    wrong[blanks[0]], wrong[blanks[1]] = wrong[blanks[1]], wrong[blanks[0]]
    result = reward("\\boxed{" + "".join(wrong) + "}", ROW)
    assert not result["correct"]
    assert result["info"]["cell_accuracy"] == pytest.approx((len(blanks) - 2) / len(blanks))
    assert reward("nothing", ROW)["info"]["cell_accuracy"] == 0.0


def test_generator_is_seeded_with_unique_solutions():
    rows = generate_sudoku4(100, seed=3, min_blanks=6, max_blanks=10)
    assert rows == generate_sudoku4(100, seed=3, min_blanks=6, max_blanks=10)
    for row in rows:
        assert 6 <= row["puzzle"].count(".") <= 10
        assert solutions(row["puzzle"]) == [row["ground_truth_answer"]]
        assert reward(row["solution"], row)["correct"]
    with pytest.raises(ValueError, match="max_blanks"):
        generate_sudoku4(1, seed=0, max_blanks=13)
