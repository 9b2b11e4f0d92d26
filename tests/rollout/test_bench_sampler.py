"""bench/sampler.py --model: a saved checkpoint, real prompts, the chosen strategy, one JSON line."""
import json
import subprocess
import sys
from pathlib import Path

from models.tiny import write_tiny_checkpoint
from rollout.params import SamplingParams

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> dict:
    done = subprocess.run([sys.executable, "bench/sampler.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_on_a_tiny_checkpoint_uses_arith_prompts_and_the_dynamic_default(tmp_path):
    write_tiny_checkpoint(tmp_path / "hf")
    out = run_bench("--model", str(tmp_path / "hf"), "--strategy", "dynamic", "--batch", "6")
    assert out["cached_equals_uncached"] and out["model"] == str(tmp_path / "hf")
    assert out["batch"] == 6 and out["new_tokens"] == 24 and out["block"] == 4
    assert out["strategy"] == "dynamic" and out["threshold"] == SamplingParams().threshold
    assert 0.0 <= out["accuracy"] <= 1.0  # held-out arith prompts are scored
    assert 1 <= out["ar_new_tokens"] <= 24 and out["tokens_per_forward"] > 0
    assert out["over_hf_ar"] > 0


def test_bench_threshold_option_reaches_the_sampler(tmp_path):
    write_tiny_checkpoint(tmp_path / "hf")
    # τ = 1 commits only the floor (one token per pass with K = B), τ tiny commits a block per pass.
    slow = run_bench("--model", str(tmp_path / "hf"), "--strategy", "dynamic", "--threshold", "1.0", "--batch", "4")
    fast = run_bench("--model", str(tmp_path / "hf"), "--strategy", "dynamic", "--threshold", "1e-6", "--batch", "4")
    assert slow["threshold"] == 1.0 and fast["threshold"] == 1e-6
    assert fast["tokens_per_forward"] > slow["tokens_per_forward"]
