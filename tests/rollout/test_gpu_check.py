"""bench/gpu_check.py --smoke: the prepared GPU script runs end to end on a CPU in seconds."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_prints_its_figures():
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cached_equals_uncached"] is True
    for shape in ("smoke_a", "smoke_b"):
        static, dynamic = out[shape]["static"], out[shape]["dynamic"]
        # Prompts are whole blocks and EOS is ignored: static commits exactly B/K = 1 token per pass,
        # reading the device once per block (K = 4 passes).
        assert static["tokens_per_forward"] == 1.0 and static["host_syncs_per_pass"] == 0.25
        assert dynamic["host_syncs_per_pass"] <= 1.0 and static["tokens_per_s"] > 0
    # rollout.cuda_graphs on the last shape; a CPU falls back to the eager pass, so tokens are equal.
    graphs = out["smoke_b"]["dynamic_cuda_graphs"]
    assert graphs["graphs"] is False and graphs["tokens_equal_dynamic"] is True and graphs["same_token_share"] == 1.0
    assert "dynamic_cuda_graphs" not in out["smoke_a"]
    if (REPO / "bench/gpu_check_learner.py").exists():
        assert "learner" in out
