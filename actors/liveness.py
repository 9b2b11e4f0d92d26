"""Waiting on actors' life: one deadline-polling helper, and what the driver waits for with it
(an actor Ray is restarting, a killed actor's name being released)."""
from __future__ import annotations

import time
from typing import Callable

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError


def poll(ready: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    """Call `ready` until it returns True; TimeoutError naming `what` after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:.0f} s")
        time.sleep(every_s)


def wait_restarted(actor: ActorHandle, timeout_s: float = 300.0) -> None:
    """Block until Ray has restarted `actor` (calls fail with ActorUnavailableError meanwhile)."""
    def answers() -> bool:
        try:
            ray.get(actor.node_id.remote())
            return True
        except ActorUnavailableError:
            return False

    poll(answers, timeout_s, f"actor {actor} was not restarted")


def wait_name_free(name: str, namespace: str, timeout_s: float = 60.0) -> None:
    """Block until a killed actor's name is released (Ray does it asynchronously)."""
    def free() -> bool:
        try:
            ray.get_actor(name, namespace=namespace)
            return False
        except ValueError:
            return True

    poll(free, timeout_s, f"actor {namespace}/{name} still registered after it was killed", every_s=0.1)
