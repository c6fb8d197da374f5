"""The keyed work queue of the runtime, after client-go's workqueue.

Inputs only say *which* simulation changed; the queue holds each key at most
once, so a burst of ten thousand messages about one simulation costs a few
syncs of it, not ten thousand. A key being processed that changes again is
processed again once the current sync is done, never twice at once. A sync
that fails comes back after a per-key exponential backoff (its rate limit),
reset by the next success.

It keeps client-go's workqueue metrics (controller-runtime exports them as
``workqueue_*``): adds, retries, how long keys wait and how long their
processing takes, and what is being processed now, all updated in place.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from model_services_orchestrator.metrics import WORKQUEUE_BUCKETS, Histogram

__all__ = ["WorkQueue"]

K = TypeVar("K")


class WorkQueue(Generic[K]):
    """Deduplicating, with per-key backoff for retries."""

    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._again: set[K] = set()  # added while being processed
        self._failures: dict[K, int] = {}
        self._later: dict[K, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()
        # client-go's workqueue metrics.
        self._clock = clock
        self.adds = 0  # keys that were not queued yet (client-go counts no add of a key already waiting)
        self.retries = 0  # add_rate_limited
        self.queue_duration = Histogram(WORKQUEUE_BUCKETS)  # from its add to its get
        self.work_duration = Histogram(WORKQUEUE_BUCKETS)  # from its get to its done
        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}

    def add(self, key: K) -> None:
        """Have ``key`` processed (once, however often it is added before that)."""
        if key in self._processing:
            if key not in self._again:
                self._again.add(key)
                self._added(key)
        elif key not in self._queued:
            self._enqueue(key)
            self._added(key)

    def _enqueue(self, key: K) -> None:
        self._queued.add(key)
        self._queue.append(key)
        self._ready.set()

    def _added(self, key: K) -> None:
        self.adds += 1
        self._added_at.setdefault(key, self._clock())

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
        self.retries += 1
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
        now = self._clock()
        if (added := self._added_at.pop(key, None)) is not None:
            self.queue_duration.observe(now - added)
        self._started_at[key] = now
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if (started := self._started_at.pop(key, None)) is not None:
            self.work_duration.observe(self._clock() - started)
        if key in self._again:
            # Added while it was processed: queued now, counted (and timed) as added then.
            self._again.discard(key)
            self._enqueue(key)

    def idle(self) -> bool:
        """Nothing queued and nothing being processed (keys waiting for their backoff do not count)."""
        return not self._queue and not self._processing

    def depth(self) -> int:
        """Keys waiting to be processed (client-go's depth: those added again while processed included)."""
        return len(self._queue) + len(self._again)

    def processing(self) -> int:
        return len(self._processing)

    def unfinished_work_seconds(self) -> float:
        """How long the keys being processed have been at it, together (client-go's unfinished work)."""
        now = self._clock()
        return sum(now - started for started in self._started_at.values())

    def longest_running_processor_seconds(self) -> float:
        now = self._clock()
        return max((now - started for started in self._started_at.values()), default=0.0)

    def close(self) -> None:
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
