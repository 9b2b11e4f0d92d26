"""Issue 13 item 5 end to end: one run over a data file with malformed rows, a prompt holding the
mask token and one longer than the context (skipped and counted), and a reward that hangs, raises
or returns NaN on some rows (failed verdicts counted, never trained on, never a pool crash);
the same data with on_error=raise stops before any worker starts, naming the row."""

from __future__ import annotations

import json

import pytest

from actors import driver
from actors.metrics import read_jsonl
from support import SMALL, compose_config
from tasks.screen import PromptError

MODES = ["ok", "hang", "ok", "raise", "nan", "ok"]


def write_rows(path) -> None:
    rows = [
        json.dumps({"question": f"{i}+{i}=", "ground_truth_answer": str(2 * i), "mode": MODES[i % len(MODES)]})
        for i in range(24)
    ]
    rows += [
        "{broken json",
        json.dumps({"question": "no answer field"}),
        json.dumps({"question": "what is <|MASK|>?", "ground_truth_answer": "1"}),
        json.dumps({"question": "9" * 600, "ground_truth_answer": "1"}),
    ]
    path.write_text("\n".join(rows) + "\n")


def config(tmp_path, on_error: str):
    data = tmp_path / "rows.jsonl"
    write_rows(data)
    return compose_config(
        SMALL
        + [
            f"trainer.run_dir={tmp_path / 'run'}",
            "trainer.steps=1",
            "task=math_jsonl",
            f"task.params.path={data}",
            f"task.params.on_error={on_error}",
            "task.params.eval_fraction=0.0",
            "task.params.template=plain",
            "task.reward=tests.actors.broken_reward:flaky",
            "reward.timeout_s=1.0",
            "reward.max_failed_fraction=1.0",
            "trainer.prompts_per_step=12",
            "trainer.responses_per_prompt=2",
        ]
    )


def test_bad_rows_and_a_bad_reward_are_counted_not_fatal(ray_session, tmp_path):
    with pytest.warns(UserWarning, match="skipped"):
        run = driver.run_to_end(config(tmp_path, "skip"))
    lines = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["data/skipped_rows"] for r in lines if "data/skipped_rows" in r] == [4.0]  # 2 malformed + 2 prompts
    [step] = [r for r in lines if "samples" in r]
    # 12 prompts drawn from 24 good rows, 2 samples each: every failed verdict has its kind.
    failed = {k.split("/")[1]: v for k, v in step.items() if k.startswith("reward_failed/")}
    assert (
        set(failed) <= {"timeout", "reward_error", "invalid_reward"} and sum(failed.values()) == step["reward_failed"]
    )
    assert step["reward_failed"] > 0 and step["reward_failed"] % 2 == 0  # both samples of a bad row fail
    assert step["samples"] == 24 and step["reissued"] == 0  # no reward worker crashed
    assert step["rollout_s"] < 30  # a hung reward costs reward.timeout_s, not the step


def test_on_error_raise_names_the_row_before_any_worker_starts(tmp_path):
    cfg = config(tmp_path, "raise")
    with pytest.raises(ValueError, match=r"rows.jsonl:25: bad JSON"):
        driver.start_run(cfg)
    rows = [
        line
        for line in (tmp_path / "rows.jsonl").read_text().splitlines()
        if "broken" not in line and "no answer" not in line
    ]
    problems = {"what is <|MASK|>?": "contains the mask token (id 2)", "9" * 60: "has 600 tokens, more than the 492"}
    for _ in problems:  # the first bad prompt in the split's order stops the run; then the other one
        (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
        with pytest.raises(PromptError, match=r"train row \d+ \(question '") as err:
            driver.start_run(cfg)
        question = str(err.value).split("'")[1]
        assert problems[question] in str(err.value)
        rows = [line for line in rows if question not in line]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    # A reward that cannot load fails here too (each reward worker would fail to start, forever).
    with pytest.raises(ValueError, match=r"task.reward='no_such_module:fn' cannot be loaded"):
        driver.start_run(cfg.model_copy(update={"task": cfg.task.model_copy(update={"reward": "no_such_module:fn"})}))
