"""Run in its own process by test_multinode.py: bench/chaos_nodes.py's node faults on a simulated
cluster during one run, against the same run without them — the run starts with one of its two
rollout nodes (the pool at 1 of 2, its minimum), a rollout node added (step 1), a node holding a
step's only batch copies removed after collect (step 2), a rollout node added (step 3), the
learner's node drained with a deadline (step 4) and removed when step 5 starts, every learner node
drained (step 6: the run checkpoints and stops). Prints one JSON line with what it saw."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.chaos_nodes import run_node_chaos  # noqa: E402

if __name__ == "__main__":
    print(json.dumps(run_node_chaos(Path(sys.argv[1]), {1: "add", 2: "kill", 3: "add", 4: "preempt", 6: "drain_all"}, 7,
                                    short_start=True)))
