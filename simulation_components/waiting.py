"""The tooling's one way to wait: poll a condition until it holds, with a deadline that says what was awaited.

Tests, the control plane's start-up, the benchmarks and the demo all wait for something another process
does. Each wait is bounded (a busy machine makes things slow, never endless) and its failure names what
did not happen; ``check`` fails early (a process that died), ``retry`` names errors that only mean "not yet".
A wait on much work (a thousand pods to run) passes ``progress``: its timeout then counts from the last
time the work moved, so it scales with the work and the machine's pace instead of being a fixed wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

_T = TypeVar("_T")


def wait_for(condition: Callable[[], _T | None], *, timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition", check: Callable[[], object] | None = None,
             retry: tuple[type[Exception], ...] = (), progress: Callable[[], object] | None = None) -> _T:
    """Call ``condition`` until it returns something truthy, and return that; ``TimeoutError`` naming ``what``
    (and the last ``retry`` error) after ``timeout`` seconds, or, with ``progress``, after ``timeout`` seconds
    in which what ``progress()`` returns did not change. ``check`` is called before each try."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    moved: object = None
    while True:
        if check is not None:
            check()
        if progress is not None and (now := progress()) != moved:
            moved = now
            deadline = time.monotonic() + timeout
        try:
            value = condition()
        except retry as error:
            last_error = error
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            still = f" ({moved!r} for {timeout:g}s)" if progress is not None else f" after {timeout:g}s"
            raise TimeoutError(f"timed out waiting for {what}{still}{detail}")
        time.sleep(interval)
