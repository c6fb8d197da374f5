"""What the daemon counts for ``/metrics``, kept as plain numbers that the scrape reads.

Why this exists: the hot paths (ten thousand pod events, creates and messages
per simulation) must pay almost nothing for being measured. These holders are
ints, dicts of ints keyed by closed sets of values, and fixed-bucket histograms
updated in place; ``prometheus_export`` turns them into metric families only
when Prometheus scrapes. Everything here is updated in the event loop's
thread, except ``RestClientStats``, which the API client's threads update
under its lock.

Pure: no I/O, no clock (durations are measured by the callers), no
``prometheus_client``. The bucket bounds and the label values are
controller-runtime's and client-go's where the metric is theirs.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "API_BUCKETS",
    "CREATE_BUCKETS",
    "FAILURE_CODES",
    "LIFECYCLE_RESULTS",
    "LIFECYCLE_TYPES",
    "RECONCILE_BUCKETS",
    "RECONCILE_RESULTS",
    "START_BUCKETS",
    "WORKQUEUE_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "LifecycleStats",
    "ReconcileStats",
    "RestClientStats",
    "failure_code",
]

# controller-runtime's workqueue buckets: ExponentialBuckets(10e-9, 10, 12), 10 ns to 1,000 s.
WORKQUEUE_BUCKETS: tuple[float, ...] = tuple(float(f"1e{exponent}") for exponent in range(-8, 4))
# controller-runtime's controller_runtime_reconcile_time_seconds buckets.
RECONCILE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0,
    50.0, 60.0,
)
# client-go's rest_client_request_duration_seconds buckets.
API_BUCKETS: tuple[float, ...] = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
# Pod creation: the API server's answer, under the client-side rate limit.
CREATE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A model's start (scheduling, image pull, container start) and a simulation's ModelsReady: seconds to minutes.
START_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# controller_runtime_reconcile_total's results (controller-runtime also has requeue_after, which a sync never asks).
RECONCILE_RESULTS = ("success", "error", "requeue")
LIFECYCLE_TYPES = ("ModelsReady", "ModelHasTerminated", "AllModelsHaveTerminated")
LIFECYCLE_RESULTS = ("success", "failed")
# The daemon's own FAILED codes (docs/protocol.md, section 5), exported at 0 from the start; a model's own
# non-zero exit code is its own label value, from 1 to 255 (signals are 128 + n), "other" beyond.
FAILURE_CODES = ("-1", "-2", "-3", "-4")


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram as Prometheus wants it: cumulative counts per upper bound (``+Inf`` last), and the sum."""

    buckets: list[tuple[float, float]]
    total: float


class Histogram:
    """Counts of values in fixed buckets: an update is one bisect and two additions."""

    __slots__ = ("_counts", "bounds", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        self._counts[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def count(self) -> int:
        return sum(self._counts)

    def snapshot(self) -> HistogramSnapshot:
        running = 0
        buckets: list[tuple[float, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            buckets.append((bound, running))
        return HistogramSnapshot(buckets, self.total)


class ReconcileStats:
    """controller-runtime's reconcile metrics for the syncs of simulations: results, and how long each took."""

    def __init__(self) -> None:
        self.results: dict[str, int] = dict.fromkeys(RECONCILE_RESULTS, 0)
        self.time = Histogram(RECONCILE_BUCKETS)

    def observe(self, result: str, seconds: float) -> None:
        self.results[result] += 1  # a KeyError for a result outside RECONCILE_RESULTS: a bug, not a new label
        self.time.observe(seconds)

    @property
    def errors(self) -> int:
        return self.results["error"]


def failure_code(exit_code: int) -> str:
    """The ``code`` label of a failed model: a bounded set of values, never an id."""
    return str(exit_code) if -4 <= exit_code <= 255 else "other"


class LifecycleStats:
    """Lifecycle messages the broker confirmed, by type and result; failures by code; start latencies."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str], int] = {
            (kind, result): 0 for kind in LIFECYCLE_TYPES for result in LIFECYCLE_RESULTS}
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_CODES, 0)
        self.model_start = Histogram(START_BUCKETS)  # DeployModels to the container seen running
        self.models_ready = Histogram(START_BUCKETS)  # DeployModels to ModelsReady confirmed by the broker

    def delivered(self, kind: str, exit_code: int = 0) -> None:
        """A lifecycle message of ``kind`` reached the broker; ``exit_code`` for a ModelHasTerminated."""
        result = "failed" if exit_code else "success"
        self.messages[kind, result] += 1
        if exit_code:
            code = failure_code(exit_code)
            self.failures[code] = self.failures.get(code, 0) + 1


class RestClientStats:
    """client-go's ``rest_client_*`` metrics: every request to the API server, by method and status, timed.

    Updated from the API client's threads (the gateway's pool, the pod watch, the Lease), hence the lock;
    ``code`` is the HTTP status, or ``<error>`` when no answer came (client-go's value).
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Histogram] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        with self._lock:
            key = (code, method)
            self._requests[key] = self._requests.get(key, 0) + 1
            if (histogram := self._durations.get(method)) is None:
                histogram = self._durations[method] = Histogram(API_BUCKETS)
            histogram.observe(seconds)

    def snapshot(self) -> tuple[Mapping[tuple[str, str], int], Mapping[str, HistogramSnapshot]]:
        """Requests by (code, method), and durations by verb (the HTTP method)."""
        with self._lock:
            return dict(self._requests), {verb: h.snapshot() for verb, h in self._durations.items()}
