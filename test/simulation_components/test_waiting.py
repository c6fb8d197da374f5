"""The tooling's one wait: bounded, saying what it waited for, and scaled by progress when asked.

Why this exists: every test and benchmark waits through ``wait_for``; a wait on much work must not fail
on a slow machine while the work still moves, and must fail, naming itself, when it stops moving.
"""

from __future__ import annotations

import itertools

import pytest

from simulation_components.waiting import wait_for


def test_a_wait_that_sees_progress_outlasts_its_timeout() -> None:
    # Timing-sensitive by nature: six polls half a second apart take 3 s against a 2 s timeout. It fails
    # only if one poll came more than 1.5 s late (the timeout less the interval), which the suite's
    # other waits would not survive either.
    calls = itertools.count(1)
    done = {"calls": 0}

    def condition() -> str | None:
        done["calls"] = next(calls)
        return "done" if done["calls"] >= 6 else None

    assert wait_for(condition, timeout=2.0, interval=0.5, what="six calls", progress=lambda: done["calls"]) == "done"


def test_a_wait_without_progress_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"waiting for 3 running pods \(2 for 0.1s\)"):
        wait_for(lambda: None, timeout=0.1, interval=0.01, what="3 running pods", progress=lambda: 2)


def test_errors_named_as_not_yet_are_retried_and_reported_and_check_fails_early() -> None:
    attempts = itertools.count()

    def flaky() -> int:
        if next(attempts) < 3:
            raise ConnectionRefusedError("not up yet")
        return 7

    assert wait_for(flaky, timeout=5, interval=0.001, retry=(ConnectionRefusedError,)) == 7

    def refused() -> None:
        raise ConnectionRefusedError("still down")

    with pytest.raises(TimeoutError, match="last error: ConnectionRefusedError"):
        wait_for(refused, timeout=0.05, interval=0.001, what="x", retry=(OSError,))

    def died() -> None:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_for(lambda: None, timeout=5, check=died)
