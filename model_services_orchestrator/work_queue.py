"""The keyed work queue of the runtime, after client-go's workqueue.

Inputs only say *which* simulation changed; the queue holds each key at most
once, so a burst of ten thousand messages about one simulation costs a few
syncs of it, not ten thousand. A key being processed that changes again is
processed again once the current sync is done, never twice at once. A sync
that fails comes back after a per-key exponential backoff (its rate limit),
reset by the next success.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["WorkQueue"]

K = TypeVar("K")


class WorkQueue(Generic[K]):
    """Deduplicating, with per-key backoff for retries."""

    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._again: set[K] = set()  # added while being processed
        self._failures: dict[K, int] = {}
        self._later: dict[K, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()

    def add(self, key: K) -> None:
        """Have ``key`` processed (once, however often it is added before that)."""
        if key in self._processing:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Have ``key`` processed in ``delay`` seconds (or sooner, if it is added meanwhile)."""
        if (pending := self._later.pop(key, None)) is not None:
            pending.cancel()

        def due() -> None:
            self._later.pop(key, None)
            self.add(key)

        self._later[key] = asyncio.get_running_loop().call_later(delay, due)

    def add_rate_limited(self, key: K) -> float:
        """Have a failed ``key`` processed again after its backoff; the delay chosen."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay: float = min(self._max_delay, self._base_delay * 2.0 ** (failures - 1))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key; the caller processes it and then calls ``done``."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def idle(self) -> bool:
        """Nothing queued and nothing being processed (keys waiting for their backoff do not count)."""
        return not self._queue and not self._processing

    def close(self) -> None:
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
