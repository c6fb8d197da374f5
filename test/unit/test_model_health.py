"""Model health verdicts: no progress over two intervals, or silence after answering; each reported once."""

from __future__ import annotations

from model_services_orchestrator.model_health import ModelHealth

RUNNING = [("s", "a")]


def test_a_model_that_never_answers_is_left_alone() -> None:
    health = ModelHealth(interval_seconds=10)
    assert health.check(RUNNING, 0) == [] and health.check(RUNNING, 1000) == []


def test_progress_keeps_a_model_healthy() -> None:
    health = ModelHealth(interval_seconds=10)
    for step in range(10):
        health.pong("s", "a", bids=step, allocations=step, now=step * 10.0)
        assert health.check(RUNNING, step * 10.0 + 1) == []


def test_counts_that_stay_the_same_for_two_intervals_are_reported_once() -> None:
    health = ModelHealth(interval_seconds=10)
    health.pong("s", "a", bids=3, allocations=1, now=0)
    health.pong("s", "a", bids=3, allocations=1, now=10)
    assert health.check(RUNNING, 19) == []
    health.pong("s", "a", bids=3, allocations=1, now=20)
    verdicts = health.check(RUNNING, 20)
    assert [(v.model_id, v.reason.startswith("no progress")) for v in verdicts] == [("a", True)]
    health.pong("s", "a", bids=3, allocations=1, now=30)
    assert health.check(RUNNING, 40) == []


def test_silence_after_answering_is_reported() -> None:
    health = ModelHealth(interval_seconds=10)
    health.pong("s", "a", bids=1, allocations=1, now=0)
    health.pong("s", "a", bids=2, allocations=2, now=10)
    verdicts = health.check(RUNNING, 30)
    assert len(verdicts) == 1 and "stopped answering" in verdicts[0].reason


def test_models_that_ended_are_forgotten() -> None:
    health = ModelHealth(interval_seconds=10)
    health.pong("s", "a", bids=1, allocations=1, now=0)
    assert health.check([], 100) == []
    assert health.check(RUNNING, 200) == []
