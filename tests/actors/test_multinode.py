"""Multi-node placement and the collective transport on a 3-node ray.cluster_utils.Cluster
(run in a subprocess: it needs a Ray session of its own)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_three_node_cluster(tmp_path):
    out = subprocess.run([sys.executable, str(HERE / "multinode_check.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=400, cwd=HERE.parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["learner_nodes"] == 2
    assert len(set(seen["rollout_nodes"])) == 1 and seen["rollout_nodes"][0] not in seen["learner_node_ids"]
    assert seen["transport"] == ["collective", "collective"]
    assert seen["equal"] and seen["versions"] == [1, 1]
