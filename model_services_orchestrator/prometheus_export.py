"""The daemon's metrics as Prometheus metric families, built at scrape time from one ``MetricsSnapshot``.

Why this exists: an operator who runs the daemon beside other controllers
expects their metrics. Where the concept is the same, the names and labels
are controller-runtime's and client-go's (``workqueue_*``,
``controller_runtime_reconcile_*``, ``rest_client_*``,
``leader_election_master_status``), so the dashboards and alerts made for
controllers fit; the rest is ``mso_*``. No label carries a simulation or
model id: every label value comes from a small closed set.

The numbers themselves are kept by the runtime, the work queue, the gateway
and the MQTT sessions (``metrics``); the daemon gathers them into a snapshot,
and ``registry`` adds prometheus-client's own process and platform
collectors, and the build's version, to one registry per daemon (never the
global default one).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from model_services_orchestrator import __version__
from model_services_orchestrator.metrics import START_BUCKETS, Histogram, HistogramSnapshot

__all__ = ["CONTROLLER", "MetricsSnapshot", "OrchestratorCollector", "QueueSnapshot", "registry"]

# The controller's name in controller-runtime's labels (``controller``, and the work queue's ``name``).
CONTROLLER = "simulation"


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The work queue of simulation ids, as client-go's workqueue metrics see it."""

    depth: int = 0
    adds: int = 0
    retries: int = 0
    queue_duration: HistogramSnapshot = field(default_factory=lambda: HistogramSnapshot([], 0.0))
    work_duration: HistogramSnapshot = field(default_factory=lambda: HistogramSnapshot([], 0.0))
    unfinished_work_seconds: float = 0.0
    longest_running_processor_seconds: float = 0.0
    active_workers: int = 0
    max_workers: int = 0


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What the daemon reports, read at scrape time."""

    active_simulations: int
    models_by_state: Mapping[str, int]
    pods_created: int
    models_restarted: int
    pod_create_latency: HistogramSnapshot
    api_errors: Mapping[int, int]
    mqtt_reconnects: int
    messages_received: Mapping[str, int]
    messages_sent: Mapping[str, int]
    watch_restarts: int
    watch_relists: int
    leader: tuple[str, bool] | None = None  # the Lease's name, and whether this replica holds it
    simulations_by_phase: Mapping[str, int] = field(default_factory=dict)
    queue: QueueSnapshot = field(default_factory=QueueSnapshot)
    reconciles: Mapping[str, int] = field(default_factory=dict)  # by result
    reconcile_time: HistogramSnapshot = field(default_factory=lambda: HistogramSnapshot([], 0.0))
    api_host: str = ""
    api_requests: Mapping[tuple[str, str], int] = field(default_factory=dict)  # by (code, method)
    api_durations: Mapping[str, HistogramSnapshot] = field(default_factory=dict)  # by verb
    lifecycle_messages: Mapping[tuple[str, str], int] = field(default_factory=dict)  # by (type, result)
    model_failures: Mapping[str, int] = field(default_factory=dict)  # by code
    model_start: HistogramSnapshot = field(default_factory=lambda: HistogramSnapshot([], 0.0))
    models_ready_latency: HistogramSnapshot = field(default_factory=lambda: HistogramSnapshot([], 0.0))
    mqtt_connected: Mapping[str, bool] = field(default_factory=dict)  # by session
    outbox_depth: Mapping[str, int] = field(default_factory=dict)  # by session
    admission_queue_depth: int = 0  # simulations waiting for the namespace's quota
    admission_wait: HistogramSnapshot = field(default_factory=lambda: Histogram(START_BUCKETS).snapshot())


def _histogram(name: str, documentation: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=list(labels))


def _bound(bound: float) -> str:
    """An ``le`` value as prometheus-client writes it (``+Inf``, ``0.005``, ``1e-08``, ``1.0``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


def _add(family: HistogramMetricFamily, values: list[str], histogram: HistogramSnapshot) -> None:
    family.add_metric(values, [(_bound(bound), count) for bound, count in histogram.buckets], histogram.total)


def _by(name: str, documentation: str, label: str, values: Mapping[str, int] | Mapping[str, bool],
        kind: type[CounterMetricFamily] | type[GaugeMetricFamily]) -> Metric:
    family = kind(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], float(count))
    return family


class OrchestratorCollector(Collector):
    """Turns a ``MetricsSnapshot`` into Prometheus metric families."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        yield from self._controller(s)
        yield from self._rest_client(s)
        yield from self._domain(s)
        if s.leader is not None:
            leader = GaugeMetricFamily("leader_election_master_status",
                                       "1 while this replica holds the leader Lease, 0 on standby.", labels=["name"])
            leader.add_metric([s.leader[0]], 1.0 if s.leader[1] else 0.0)
            yield leader

    @staticmethod
    def _controller(s: MetricsSnapshot) -> Iterable[Metric]:
        """client-go's workqueue and controller-runtime's reconcile metrics, for the syncs of simulations."""
        q, name = s.queue, [CONTROLLER]
        for metric_name, documentation, value, kind in (
            ("workqueue_depth", "Current depth of workqueue.", q.depth, GaugeMetricFamily),
            ("workqueue_adds", "Total number of adds handled by workqueue.", q.adds, CounterMetricFamily),
            ("workqueue_retries", "Total number of retries handled by workqueue.", q.retries, CounterMetricFamily),
            ("workqueue_unfinished_work_seconds", "How many seconds of work has been done that is in progress and "
             "hasn't been observed by work_duration.", q.unfinished_work_seconds, GaugeMetricFamily),
            ("workqueue_longest_running_processor_seconds", "How many seconds has the longest running processor "
             "for workqueue been running.", q.longest_running_processor_seconds, GaugeMetricFamily),
        ):
            family = kind(metric_name, documentation, labels=["name"])
            family.add_metric(name, value)
            yield family
        for metric_name, documentation, histogram in (
            ("workqueue_queue_duration_seconds", "How long in seconds an item stays in workqueue before being "
             "requested.", q.queue_duration),
            ("workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes.",
             q.work_duration),
        ):
            durations = _histogram(metric_name, documentation, ["name"])
            _add(durations, name, histogram)
            yield durations
        reconciles = CounterMetricFamily("controller_runtime_reconcile", "Total number of reconciliations per "
                                         "controller (a sync of one simulation).", labels=["controller", "result"])
        for result, count in sorted(s.reconciles.items()):
            reconciles.add_metric([CONTROLLER, result], count)
        yield reconciles
        errors = CounterMetricFamily("controller_runtime_reconcile_errors", "Total number of reconciliation "
                                     "errors per controller.", labels=["controller"])
        errors.add_metric(name, s.reconciles.get("error", 0))
        yield errors
        time = _histogram("controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per "
                          "controller.", ["controller"])
        _add(time, name, s.reconcile_time)
        yield time
        for metric_name, documentation, value in (
            ("controller_runtime_active_workers", "Number of currently used workers per controller.",
             q.active_workers),
            ("controller_runtime_max_concurrent_reconciles", "Maximum number of concurrent reconciles per "
             "controller.", q.max_workers),
        ):
            gauge = GaugeMetricFamily(metric_name, documentation, labels=["controller"])
            gauge.add_metric(name, value)
            yield gauge

    @staticmethod
    def _rest_client(s: MetricsSnapshot) -> Iterable[Metric]:
        """client-go's metrics of the requests to the API server."""
        requests = CounterMetricFamily("rest_client_requests", "Number of HTTP requests, partitioned by status "
                                       "code, method, and host.", labels=["code", "host", "method"])
        for (code, method), count in sorted(s.api_requests.items()):
            requests.add_metric([code, s.api_host, method], count)
        yield requests
        durations = _histogram("rest_client_request_duration_seconds", "Request latency in seconds. Broken down by "
                               "verb, and host.", ["host", "verb"])
        for verb, histogram in sorted(s.api_durations.items()):
            _add(durations, [s.api_host, verb], histogram)
        yield durations

    @staticmethod
    def _domain(s: MetricsSnapshot) -> Iterable[Metric]:
        yield GaugeMetricFamily("mso_active_simulations", "Simulations the daemon tracks.", value=s.active_simulations)
        yield _by("mso_simulations", "Simulations by phase: starting (no ModelsReady yet), running, ended (every "
                  "model's end decided, kept until the cleanup).", "phase", s.simulations_by_phase, GaugeMetricFamily)
        yield _by("mso_models", "Models by state.", "state", s.models_by_state, GaugeMetricFamily)
        yield CounterMetricFamily("mso_pods_created", "Pods created (or found already there).", value=s.pods_created)
        yield CounterMetricFamily("mso_models_restarted",
                                  "Models whose pod was made again: their ReadyForProcessing was lost while away.",
                                  value=s.models_restarted)
        create = _histogram("mso_pod_create_seconds", "Time from asking to create a pod to the API's answer.")
        _add(create, [], s.pod_create_latency)
        yield create
        start = _histogram("mso_model_start_seconds", "Time from a model's DeployModels (or restart) to its "
                           "container seen running.")
        _add(start, [], s.model_start)
        yield start
        ready = _histogram("mso_models_ready_seconds", "Time from a simulation's DeployModels to its ModelsReady "
                           "confirmed by the broker (simulations deployed in this daemon's life).")
        _add(ready, [], s.models_ready_latency)
        yield ready
        yield GaugeMetricFamily("mso_admission_queue_depth", "Simulations waiting, no pod created, for the "
                                "namespace's ResourceQuota to hold all of their pods.", value=s.admission_queue_depth)
        wait = _histogram("mso_admission_wait_seconds", "Time a simulation waited for admission by the namespace's "
                          "ResourceQuota, until admitted, refused (it can never fit) or ADMISSION_TIMEOUT_SECONDS.")
        _add(wait, [], s.admission_wait)
        yield wait
        lifecycle = CounterMetricFamily("mso_lifecycle_messages", "Lifecycle messages confirmed by the broker, by "
                                        "type and result (failed: a ModelHasTerminated with a non-zero code).",
                                        labels=["type", "result"])
        for (kind, result), count in sorted(s.lifecycle_messages.items()):
            lifecycle.add_metric([kind, result], count)
        yield lifecycle
        yield _by("mso_model_failures", "Failed models reported, by exit code (-1 rejected, -2 did not start in "
                  "time, -3 pod lost, -4 stopped by the daemon; others: the model's own).", "code",
                  s.model_failures, CounterMetricFamily)
        errors = CounterMetricFamily("mso_kubernetes_api_errors", "Failed Kubernetes API calls by HTTP status "
                                     "(0: no answer); a 404 of something already gone is no error.", labels=["code"])
        for code, count in sorted(s.api_errors.items()):
            errors.add_metric([str(code)], count)
        yield errors
        yield _by("mso_mqtt_connected", "1 while the MQTT session is connected (subscriber: the subscriptions; "
                  "outbox: every lifecycle session). 0 on a standby, which does not connect.", "session",
                  s.mqtt_connected, GaugeMetricFamily)
        yield _by("mso_outbox_depth", "MQTT messages waiting or in flight, by session.", "session", s.outbox_depth,
                  GaugeMetricFamily)
        yield CounterMetricFamily("mso_mqtt_connects", "MQTT sessions established (the first one included).",
                                  value=s.mqtt_reconnects)
        yield _by("mso_messages_received", "MQTT messages received by type.", "type", s.messages_received,
                  CounterMetricFamily)
        yield _by("mso_messages_sent", "MQTT messages acknowledged by the broker, by type.", "type",
                  s.messages_sent, CounterMetricFamily)
        yield CounterMetricFamily("mso_watch_streams", "Pod watch streams opened.", value=s.watch_restarts)
        yield CounterMetricFamily("mso_watch_relists", "Full pod listings (start and 410 Gone).", value=s.watch_relists)


def registry(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry of its own for one daemon: its metrics, ``process_*``, ``python_*`` and ``mso_build_info``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestratorCollector(snapshot))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_BuildInfo())
    return registry


class _BuildInfo(Collector):
    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("mso_build_info", "The daemon's version and its Python's, as labels; always 1.",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
