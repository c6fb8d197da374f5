"""The client-side rate limit holds: a burst at once, then no faster than the rate.

Only lower bounds are asserted (a limiter can be slowed by a busy machine,
never sped up), so the test cannot flake on a loaded CI runner.
"""

from __future__ import annotations

import asyncio
import time

from model_services_orchestrator.rate_limit import TokenBucket


def test_a_burst_passes_at_once_and_the_rest_waits_for_the_rate() -> None:
    async def run() -> tuple[float, float]:
        bucket = TokenBucket(rate=50.0, burst=10)
        started = time.monotonic()
        for _ in range(10):
            await bucket.take()
        burst_done = time.monotonic() - started
        await asyncio.gather(*(bucket.take() for _ in range(25)))
        return burst_done, time.monotonic() - started

    burst_done, total = asyncio.run(run())
    assert burst_done < 0.5  # ten tokens were there already: no waiting (generous bound)
    assert total >= 25 / 50.0 * 0.95  # 25 more at 50 a second take half a second at least
