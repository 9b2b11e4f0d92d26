from pathlib import Path

import pytest

from rewards import CodeReward, Sandbox, SandboxUnavailable


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox()
    try:
        print(f"sandbox backend: {box.backend}")
    except SandboxUnavailable as exc:  # only where the kernel forbids user namespaces
        pytest.skip(f"no sandbox backend can start here: {exc}")
    return box


@pytest.fixture(scope="session")
def code_reward(sandbox: Sandbox) -> CodeReward:
    return CodeReward(default_time_limit=1.0)


def as_response(program: str) -> str:
    return f"Here is my solution.\n```python\n{program}\n```\nDone."


@pytest.fixture
def fenced():
    """Wraps a program the way a model answers: prose around a ```python block."""
    return as_response
