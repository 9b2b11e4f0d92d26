"""One Ray session for the whole tests/actors run (tests that need their own cluster start it in
a subprocess or a separate head node)."""
from __future__ import annotations

import shutil
import tempfile

import pytest

from support import RUNTIME_ENV


@pytest.fixture(scope="session")
def ray_session():
    import ray

    temp = tempfile.mkdtemp(prefix="ray-actors-")
    ray.init(num_cpus=8, include_dashboard=False, runtime_env=RUNTIME_ENV, _temp_dir=temp)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
