"""A client-side rate limit for the Kubernetes API (``KUBERNETES_QPS``, ``KUBERNETES_BURST``).

A simulation of ten thousand models must not take a shared API server down;
this is client-go's token bucket: ``burst`` requests at once, then ``qps``
a second on average.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Hands out at most ``burst`` tokens at once, refilled at ``rate`` a second."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    async def take(self) -> None:
        """Wait until a token is free and take it; waiters are served in order."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0
