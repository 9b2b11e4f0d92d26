"""bench/gpu_check.py: every section prints its own JSON line as it ends, so a section that fails,
overruns the deadline or hangs costs its own figures only, and the summary line always comes."""
import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench import gpu_check
from bench.gpu_check_common import setup_for

REPO = Path(__file__).resolve().parents[2]
SMOKE = setup_for(True, 0, 0, 0)


def real(name):
    return dict(gpu_check.SECTIONS)[name]


def parse(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_smoke_prints_one_line_per_section_then_the_summary():
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = parse(done.stdout)  # stdout holds the JSON lines only (DeepSpeed's logger goes to stderr)
    names = [name for name, _ in gpu_check.SECTIONS]
    assert [line["section"] for line in lines] == names + ["summary"]
    by = {line["section"]: line for line in lines}
    cuda_only = ["flex", "weight_sync"]  # on a CPU: tests/learner/test_slot_flex.py, tests/actors/test_weight_sync*
    for line in lines[:-1]:
        if line["section"] in cuda_only:
            assert line["status"] == "skipped" and "no CUDA" in line["reason"], line
            continue
        assert line["status"] == "ok", line
        assert line["seconds"] >= 0 and isinstance(line["figures"], dict)
    summary = by["summary"]
    assert summary["ok"] == [n for n in names if n not in cuda_only] and summary["error"] == []
    assert summary["skipped"] == cuda_only
    for strategy in ("static", "dynamic", "entropy_bounded", "random", "sequential"):
        exact = by["exactness"]["figures"][strategy]
        assert exact["differing_tokens"] == exact["differing_steps"] == 0 and exact["tokens"] == 32
        assert exact["passes"][0] == exact["passes"][1] == exact["passes_compared"] > 0
        assert exact["max_abs_delta_logit"] < 1e-3
    for shape in SMOKE.shape_names:
        static, dynamic = (by["eager_decode"]["figures"][shape][s] for s in ("static", "dynamic"))
        # Prompts are whole blocks and EOS is ignored: static commits exactly B/K = 1 token per pass,
        # reading the device once per block (K = 4 passes); dynamic reads it after every pass.
        assert static["tokens_per_forward"] == 1.0 and static["host_syncs_per_pass"] == 0.25
        assert dynamic["host_syncs_per_pass"] == 1.0 and static["tokens_per_s"] > 0
    assert len(by["decode_profile"]["figures"]["top_ops"]) == 5
    assert by["memory_sizing"]["figures"]["rows_equal"] is True
    for step in ("first_step", "steady_step"):  # bf16 compute on the CPU too: the old log-probs match
        learner = by["learner"]["figures"][step]
        assert learner["ratio_min"] == learner["ratio_max"] == 1.0 and learner["clip_frac"] == 0.0
    group = by["process_group"]["figures"]
    assert "gloo" in group["backend"] and group["all_reduce_ok"] and group["host_all_reduce_ok"]
    for stage in ("zero2", "zero3"):
        zero = by["deepspeed"]["figures"][stage]
        assert zero["full_tensors_match_layout"] and zero["loss"][1] < zero["loss"][0]
    # A CPU falls back to eager passes: graphs=false and the same tokens.
    graphs = by["graphs_exactness"]["figures"]
    assert graphs["graphs"] is False
    assert graphs["differing_tokens_replayed"] == graphs["differing_tokens_first_call"] == 0
    assert summary["targets"]["static_tokens_per_forward_exactly_1"] is True
    assert summary["targets"]["graphs_fp32_greedy_tokens_identical"] is True


def boom(setup):
    raise RuntimeError("injected failure")


def test_a_failing_section_prints_its_error_and_the_others_still_run():
    out = io.StringIO()
    sections = (("environment", real("environment")), ("boom", boom), ("sdpa", real("sdpa")))
    gpu_check.run_checks(SMOKE, sections, 60.0, out)
    lines = parse(out.getvalue())
    assert [line["section"] for line in lines] == ["environment", "boom", "sdpa", "summary"]
    env, failed, sdpa, summary = lines
    assert env["status"] == sdpa["status"] == "ok" and sdpa["figures"]["decode_masked"]["math"]["ok"]
    assert failed["status"] == "error" and failed["error"] == "RuntimeError: injected failure"
    assert 'raise RuntimeError("injected failure")' in failed["traceback"] and "in boom" in failed["traceback"]
    assert "figures" not in failed
    assert summary["ok"] == ["environment", "sdpa"] and summary["error"] == ["boom"]


def slow(setup):
    time.sleep(30)
    return {}


def test_the_deadline_stops_the_running_section_and_skips_the_rest():
    out = io.StringIO()
    sections = (("environment", real("environment")), ("slow", slow), ("sdpa", real("sdpa")), ("last", boom))
    start = time.perf_counter()
    gpu_check.run_checks(SMOKE, sections, 1.0, out)
    assert time.perf_counter() - start < 10  # the alarm cut the 30 s sleep short
    env, stopped, skipped, last, summary = parse(out.getvalue())
    assert env["status"] == "ok"
    assert stopped["status"] == "error" and stopped["error"].startswith("DeadlineReached")
    assert "time.sleep(30)" in stopped["traceback"]
    assert skipped == {"section": "sdpa", "status": "skipped", "reason": "deadline"}
    assert last == {"section": "last", "status": "skipped", "reason": "deadline"}
    assert summary["section"] == "summary" and summary["skipped"] == ["sdpa", "last"]
    assert summary["targets"] == {"tiny_b_dynamic_tokens_per_s_at_least_5000": None,
                                  "static_tokens_per_forward_exactly_1": None,
                                  "graphs_fp32_greedy_tokens_identical": None}


def test_a_section_that_never_returns_still_gets_its_line_and_the_summary():
    # A call blocked in C++ never lets the alarm's exception through; here a loop swallows it.
    script = textwrap.dedent("""
        import sys, time
        from bench.gpu_check import run_checks
        from bench.gpu_check_common import setup_for

        def stuck(setup):
            while True:
                try:
                    time.sleep(60)
                except BaseException:
                    pass

        run_checks(setup_for(True, 0, 0, 0), (("first", lambda s: {"x": 1}), ("stuck", stuck),
                                               ("after", lambda s: {})), 0.5, sys.stdout, hang_grace_s=1.0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    first, stuck, after, summary = parse(done.stdout)
    assert first == {"section": "first", "status": "ok", "figures": {"x": 1}, "seconds": first["seconds"]}
    assert stuck["status"] == "error" and stuck["error"].startswith("Hung")
    assert stuck["traceback"].rstrip().endswith("in stuck")  # where the main thread is blocked
    assert after == {"section": "after", "status": "skipped", "reason": "deadline"}
    assert summary["ok"] == ["first"] and summary["error"] == ["stuck"] and summary["skipped"] == ["after"]
