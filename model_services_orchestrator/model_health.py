"""Opt-in health of running models: who answers pings, and whose work stopped moving.

Pure: pongs and the clock come in, the models to report come out, each
once. A model that answers but whose bid and allocation counts stay the same
over two intervals makes no progress; a model that answered before and has
not for two intervals stopped answering. Models that never answered are left
alone: today's models do not implement the pings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ModelHealth", "Unhealthy"]


@dataclass(slots=True)
class _Answers:
    bids: int
    allocations: int
    unchanged_since: float
    last_answer: float
    reported: bool = False


@dataclass(frozen=True, slots=True)
class Unhealthy:
    simulation_id: str
    model_id: str
    reason: str


class ModelHealth:
    """What running models answered to our pings, and the verdicts drawn from it."""

    def __init__(self, *, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._answers: dict[tuple[str, str], _Answers] = {}

    def pong(self, simulation_id: str, model_id: str, *, bids: int, allocations: int, now: float) -> None:
        key = (simulation_id, model_id)
        seen = self._answers.get(key)
        if seen is None:
            self._answers[key] = _Answers(bids, allocations, unchanged_since=now, last_answer=now)
            return
        seen.last_answer = now
        if (bids, allocations) != (seen.bids, seen.allocations):
            seen.bids, seen.allocations, seen.unchanged_since = bids, allocations, now

    def check(self, running: Iterable[tuple[str, str]], now: float) -> list[Unhealthy]:
        """The running models to report now; each model is reported at most once."""
        window = 2 * self._interval
        verdicts: list[Unhealthy] = []
        alive = set(running)
        for key in list(self._answers):
            if key not in alive:
                del self._answers[key]  # ended, or its simulation is gone
        for key in alive:
            seen = self._answers.get(key)
            if seen is None or seen.reported:
                continue
            if now - seen.last_answer >= window:
                reason = f"stopped answering health pings {now - seen.last_answer:.0f}s ago"
            elif now - seen.unchanged_since >= window:
                reason = f"no progress: {seen.bids} bids and {seen.allocations} allocations for " \
                         f"{now - seen.unchanged_since:.0f}s"
            else:
                continue
            seen.reported = True
            verdicts.append(Unhealthy(key[0], key[1], reason))
        return verdicts
