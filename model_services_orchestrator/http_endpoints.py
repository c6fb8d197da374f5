"""Probes and metrics for the cluster: ``/healthz``, ``/readyz`` and ``/metrics`` on ``HTTP_PORT``.

A minimal HTTP/1.1 responder on the event loop itself, so that ``/healthz``
answering proves the loop is not blocked. Metrics are read at scrape time
from the counters the daemon keeps anyway, through a prometheus-client
collector, so counting costs the hot paths nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from model_services_orchestrator.logs import get_logger

__all__ = ["LatencyHistogram", "MetricsSnapshot", "OrchestratorCollector", "serve_http"]

_log = get_logger(__name__)
_MAX_REQUEST_BYTES = 8192


class LatencyHistogram:
    """Counts of durations in fixed buckets, cheap to update and read as Prometheus wants it."""

    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self._counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*map(str, self.BOUNDS), "+Inf"), self._counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What the daemon reports, read at scrape time."""

    active_simulations: int
    models_by_state: Mapping[str, int]
    pods_created: int
    models_restarted: int
    pod_create_latency_buckets: list[tuple[str, float]]
    pod_create_latency_sum: float
    api_errors: Mapping[int, int]
    mqtt_reconnects: int
    messages_received: Mapping[str, int]
    messages_sent: Mapping[str, int]
    watch_restarts: int
    watch_relists: int
    leader: tuple[str, bool] | None = None  # the Lease's name, and whether this replica holds it


class OrchestratorCollector(Collector):
    """Turns a ``MetricsSnapshot`` into Prometheus metric families."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        yield GaugeMetricFamily("mso_active_simulations", "Simulations the daemon tracks.", value=s.active_simulations)
        models = GaugeMetricFamily("mso_models", "Models by state.", labels=["state"])
        for state, count in sorted(s.models_by_state.items()):
            models.add_metric([state], count)
        yield models
        yield CounterMetricFamily("mso_pods_created", "Pods created (or found already there).", value=s.pods_created)
        yield CounterMetricFamily("mso_models_restarted",
                                  "Models whose pod was made again: their ReadyForProcessing was lost while away.",
                                  value=s.models_restarted)
        yield HistogramMetricFamily("mso_pod_create_seconds", "Time from asking to create a pod to the API's answer.",
                                    buckets=s.pod_create_latency_buckets, sum_value=s.pod_create_latency_sum)
        errors = CounterMetricFamily("mso_kubernetes_api_errors", "Failed Kubernetes API calls by HTTP status "
                                     "(0: no answer).", labels=["code"])
        for code, count in sorted(s.api_errors.items()):
            errors.add_metric([str(code)], count)
        yield errors
        yield CounterMetricFamily("mso_mqtt_connects", "MQTT sessions established (the first one included).",
                                  value=s.mqtt_reconnects)
        received = CounterMetricFamily("mso_messages_received", "MQTT messages received by type.", labels=["type"])
        for kind, count in sorted(s.messages_received.items()):
            received.add_metric([kind], count)
        yield received
        sent = CounterMetricFamily("mso_messages_sent", "MQTT messages acknowledged by the broker, by type.",
                                   labels=["type"])
        for kind, count in sorted(s.messages_sent.items()):
            sent.add_metric([kind], count)
        yield sent
        yield CounterMetricFamily("mso_watch_streams", "Pod watch streams opened.", value=s.watch_restarts)
        yield CounterMetricFamily("mso_watch_relists", "Full pod listings (start and 410 Gone).", value=s.watch_relists)
        if s.leader is not None:
            # controller-runtime's name, so the dashboards and alerts made for controllers fit.
            leader = GaugeMetricFamily("leader_election_master_status",
                                       "1 while this replica holds the leader Lease, 0 on standby.", labels=["name"])
            leader.add_metric([s.leader[0]], 1.0 if s.leader[1] else 0.0)
            yield leader


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


async def serve_http(
    *, host: str, port: int, ready_reasons: Callable[[], list[str]], snapshot: Callable[[], MetricsSnapshot],
) -> None:
    """Serve the probes and metrics until cancelled."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestratorCollector(snapshot))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5.0)
            with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                writer.write(_response("405 Method Not Allowed", b"GET only\n"))
            elif path == "/healthz":
                writer.write(_response("200 OK", b"ok\n"))
            elif path == "/readyz":
                reasons = ready_reasons()
                body = ("\n".join(reasons) or "ready").encode() + b"\n"
                writer.write(_response("503 Service Unavailable" if reasons else "200 OK", body))
            elif path == "/metrics":
                writer.write(_response("200 OK", generate_latest(registry),
                                       "text/plain; version=0.0.4; charset=utf-8"))
            else:
                writer.write(_response("404 Not Found", b"not found\n"))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_BYTES)
    _log.info("http endpoints listening", port=port)
    async with server:
        await server.serve_forever()
