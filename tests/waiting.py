"""Polling for the tests that drive real processes and containers."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.1) -> None:
    """Return once ``check()`` is true; fail with "WHAT: not within N s" after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)
