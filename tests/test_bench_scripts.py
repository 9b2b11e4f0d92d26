"""Every bench script loads as a user runs it (`python bench/X.py`, from the repository root, outside
pytest's import path): bench/learner.py once imported an oracle under tests/ whose sibling import only
resolved inside pytest, and nothing but a manual run noticed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOAD_ALL = """
import runpy, sys
from pathlib import Path
for path in sorted(Path("bench").glob("*.py")):
    saved = list(sys.path)
    sys.path[0] = str(path.parent.resolve())  # what `python bench/X.py` puts first
    runpy.run_path(str(path), run_name="bench_load")  # top level only: no script's main block runs
    sys.path[:] = saved
"""


def test_every_bench_script_loads_outside_pytest():
    out = subprocess.run([sys.executable, "-c", LOAD_ALL], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
