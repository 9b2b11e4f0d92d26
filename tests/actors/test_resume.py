"""Resume: a run stopped after step 2 of 4 and resumed (resume=auto) logs the same metrics for
steps 3-4 as the uninterrupted run, on CPU. The uninterrupted run is colocated (rollout worker in
the learner's bundle, releasing its weights during each update): placement must not change a
single number."""
from __future__ import annotations

from actors.run import prompt_cursor
from support import SMALL, compose_config
from test_run import run_to_end

# Timings, what only colocation logs, and the bytes of the extra sync a resume makes.
TIMING = ("_s", "tokens_per_s", "rollout_freed_mb", "sync_bytes")


def _comparable(lines: list[dict]) -> dict[int, dict]:
    return {r["step"]: {k: v for k, v in r.items() if not k.endswith(TIMING)} for r in lines if "reward_mean" in r}


def test_resume_reproduces_uninterrupted_run(ray_session, tmp_path):
    base = SMALL + ["task.reward=tests.actors.digit_reward:reward", "engine.lr=1e-2", "trainer.checkpoint_every=2",
                    "cluster.rollout.num_workers=1"]
    full_lines = run_to_end(compose_config(base + [f"trainer.run_dir={tmp_path / 'full'}", "trainer.steps=4",
                                                   "cluster.colocate=true"]))
    steps = [r for r in full_lines if "reward_mean" in r]
    assert all(r["rollout_freed_mb"] > 0 for r in steps)  # the rollout copy was dropped for every update
    full = _comparable(full_lines)
    part = tmp_path / "part"
    run_to_end(compose_config(base + [f"trainer.run_dir={part}", "trainer.steps=2"]))
    resumed = _comparable(run_to_end(compose_config(base + [f"trainer.run_dir={part}", "trainer.steps=4"])))
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step].keys() == full[step].keys()
        for key, value in full[step].items():
            assert abs(resumed[step][key] - value) <= 1e-6 * max(1.0, abs(value)), (step, key)
    assert full[3]["reward_mean"] != full[1]["reward_mean"]  # the run really moved


def test_checkpoints_written_before_the_prompt_stream_key_was_renamed_still_resume():
    cursor = {"epoch": 1, "position": 5}
    assert prompt_cursor({"step": 2, "version": 2, "sampler": cursor}) == cursor
    assert prompt_cursor({"step": 2, "version": 2, "prompt_stream": cursor}) == cursor
