"""The metrics: what the work queue, the runtime and the API client count, and the names ``/metrics`` exports.

The names are a contract with every dashboard and alert made for controllers (controller-runtime's and
client-go's) and with ours (k8s_cluster_configuration/monitoring): ``EXPORTED`` lists them, and a name
missing from a scrape fails here before it fails in Prometheus (test/integration/test_monitoring.py).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from model_services_orchestrator.k8s_api import measure_requests
from model_services_orchestrator.kube_errors import ServerError
from model_services_orchestrator.metrics import (
    WORKQUEUE_BUCKETS,
    Histogram,
    LifecycleStats,
    ReconcileStats,
    RestClientStats,
    failure_code,
)
from model_services_orchestrator.prometheus_export import MetricsSnapshot, QueueSnapshot, registry
from model_services_orchestrator.testing import FakeBroker, FakeCluster, running, wait_until
from model_services_orchestrator.work_queue import WorkQueue

# Every sample name /metrics must carry (histograms by their _bucket), with the labels it may have.
EXPORTED: dict[str, set[str]] = {
    "workqueue_depth": {"name"},
    "workqueue_adds_total": {"name"},
    "workqueue_retries_total": {"name"},
    "workqueue_queue_duration_seconds_bucket": {"name", "le"},
    "workqueue_work_duration_seconds_bucket": {"name", "le"},
    "workqueue_unfinished_work_seconds": {"name"},
    "workqueue_longest_running_processor_seconds": {"name"},
    "controller_runtime_reconcile_total": {"controller", "result"},
    "controller_runtime_reconcile_errors_total": {"controller"},
    "controller_runtime_reconcile_time_seconds_bucket": {"controller", "le"},
    "controller_runtime_active_workers": {"controller"},
    "controller_runtime_max_concurrent_reconciles": {"controller"},
    "rest_client_requests_total": {"code", "host", "method"},
    "rest_client_request_duration_seconds_bucket": {"host", "verb", "le"},
    "leader_election_master_status": {"name"},
    "mso_simulations": {"phase"},
    "mso_models": {"state"},
    "mso_model_start_seconds_bucket": {"le"},
    "mso_models_ready_seconds_bucket": {"le"},
    "mso_admission_queue_depth": set(),
    "mso_admission_wait_seconds_bucket": {"le"},
    "mso_pod_create_seconds_bucket": {"le"},
    "mso_lifecycle_messages_total": {"type", "result"},
    "mso_model_failures_total": {"code"},
    "mso_kubernetes_api_errors_total": {"code"},
    "mso_mqtt_connected": {"session"},
    "mso_outbox_depth": {"session"},
    "mso_mqtt_connects_total": set(),
    "mso_build_info": {"version", "python"},
    "process_cpu_seconds_total": set(),
    "process_resident_memory_bytes": set(),
}


def _snapshot(**overrides: Any) -> MetricsSnapshot:
    histogram = Histogram((1.0, 2.0))
    histogram.observe(1.5)
    values: dict[str, Any] = {
        "active_simulations": 1, "models_by_state": {"running": 2}, "pods_created": 2, "models_restarted": 0,
        "pod_create_latency": histogram.snapshot(), "api_errors": {429: 3}, "mqtt_reconnects": 1,
        "messages_received": {}, "messages_sent": {}, "watch_restarts": 1, "watch_relists": 1,
        "leader": ("mso-dots-so-leader", True), "simulations_by_phase": {"running": 1},
        "queue": QueueSnapshot(depth=2, adds=5, retries=1, queue_duration=histogram.snapshot(),
                               work_duration=histogram.snapshot(), max_workers=4),
        "reconciles": dict(ReconcileStats().results), "reconcile_time": histogram.snapshot(),
        "api_host": "10.96.0.1:443", "api_requests": {("201", "POST"): 2},
        "api_durations": {"POST": histogram.snapshot()},
        "lifecycle_messages": dict(LifecycleStats().messages), "model_failures": dict(LifecycleStats().failures),
        "model_start": histogram.snapshot(), "models_ready_latency": histogram.snapshot(),
        "mqtt_connected": {"subscriber": True, "outbox": False}, "outbox_depth": {"subscriber": 0, "outbox": 3},
    }
    values.update(overrides)
    return MetricsSnapshot(**values)


def _samples(snapshot: MetricsSnapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry(lambda: snapshot)).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# ---------------------------------------------------------------- the export


def test_every_standard_name_is_exported_with_its_labels_and_no_other() -> None:
    samples = _samples(_snapshot())
    labels_by_name: dict[str, set[str]] = {}
    for name, labels in samples:
        labels_by_name.setdefault(name, set()).update(key for key, _ in labels)
    missing = sorted(set(EXPORTED) - set(labels_by_name))
    assert not missing, f"not exported: {missing}"
    for name, expected in EXPORTED.items():
        assert labels_by_name[name] == expected, name


def test_no_label_carries_an_id() -> None:
    # Label values come from closed sets; an id of a simulation or model would make one series per model.
    allowed = {"name", "le", "controller", "result", "code", "host", "method", "verb", "phase", "state", "type",
               "session", "version", "python", "implementation", "major", "minor", "patchlevel", "generation"}
    labels = {key for _, sample_labels in _samples(_snapshot()) for key, _ in sample_labels}
    assert labels <= allowed, labels - allowed


def test_values_reach_the_samples() -> None:
    samples = _samples(_snapshot())
    assert samples[("workqueue_depth", (("name", "simulation"),))] == 2
    assert samples[("workqueue_adds_total", (("name", "simulation"),))] == 5
    assert samples[("controller_runtime_reconcile_total", (("controller", "simulation"), ("result", "error")))] == 0
    assert samples[("rest_client_requests_total",
                    (("code", "201"), ("host", "10.96.0.1:443"), ("method", "POST")))] == 2
    assert samples[("rest_client_request_duration_seconds_bucket",
                    (("host", "10.96.0.1:443"), ("le", "2.0"), ("verb", "POST")))] == 1
    assert samples[("mso_mqtt_connected", (("session", "outbox"),))] == 0
    assert samples[("mso_outbox_depth", (("session", "outbox"),))] == 3
    assert samples[("leader_election_master_status", (("name", "mso-dots-so-leader"),))] == 1
    assert samples[("mso_model_failures_total", (("code", "-2"),))] == 0
    assert samples[("mso_kubernetes_api_errors_total", (("code", "429"),))] == 3
    assert samples[("mso_pod_create_seconds_bucket", (("le", "+Inf"),))] == 1
    assert samples[("mso_pod_create_seconds_sum", ())] == 1.5


def test_without_leader_election_there_is_no_leader_gauge() -> None:
    assert not any(name == "leader_election_master_status" for name, _ in _samples(_snapshot(leader=None)))


def test_each_daemon_has_a_registry_of_its_own() -> None:
    first, second = registry(_snapshot), registry(_snapshot)
    assert first is not second  # two in one process would otherwise clash on the process collector


# ---------------------------------------------------------------- the holders


def test_a_histogram_counts_cumulatively_with_an_inf_bucket() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.buckets == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert snapshot.total == pytest.approx(7.65)
    assert histogram.count == 4


def test_workqueue_buckets_are_controller_runtimes() -> None:
    assert WORKQUEUE_BUCKETS[0] == 1e-8
    assert WORKQUEUE_BUCKETS[-1] == 1e3
    assert len(WORKQUEUE_BUCKETS) == 12


def test_lifecycle_counts_results_and_failure_codes() -> None:
    stats = LifecycleStats()
    stats.delivered("ModelsReady")
    stats.delivered("ModelHasTerminated", 0)
    stats.delivered("ModelHasTerminated", -2)
    stats.delivered("ModelHasTerminated", 137)
    stats.delivered("ModelHasTerminated", 70000)
    assert stats.messages["ModelsReady", "success"] == 1
    assert stats.messages["ModelHasTerminated", "success"] == 1
    assert stats.messages["ModelHasTerminated", "failed"] == 3
    assert stats.failures == {"-1": 0, "-2": 1, "-3": 0, "-4": 0, "137": 1, "other": 1}
    assert failure_code(-9) == "other"


def test_reconcile_results_are_a_closed_set() -> None:
    stats = ReconcileStats()
    stats.observe("error", 0.2)
    assert stats.errors == 1
    with pytest.raises(KeyError):
        stats.observe("requeue_after", 0.1)


def test_work_queue_counts_like_client_go() -> None:
    async def body() -> None:
        now = [100.0]
        queue: WorkQueue[str] = WorkQueue(clock=lambda: now[0])
        queue.add("a")
        queue.add("a")  # already waiting: not an add
        assert (queue.adds, queue.depth()) == (1, 1)
        now[0] += 2.0
        key = await queue.get()
        assert queue.queue_duration.snapshot().total == pytest.approx(2.0)
        assert queue.depth() == 0
        queue.add(key)  # changed while processed: an add, and depth
        queue.add(key)
        assert (queue.adds, queue.depth(), queue.processing()) == (2, 1, 1)
        now[0] += 3.0
        assert queue.unfinished_work_seconds() == pytest.approx(3.0)
        assert queue.longest_running_processor_seconds() == pytest.approx(3.0)
        queue.done(key)
        assert queue.work_duration.snapshot().total == pytest.approx(3.0)
        assert (queue.adds, queue.depth(), queue.processing()) == (2, 1, 0), "requeued, not added again"
        assert queue.unfinished_work_seconds() == 0.0
        now[0] += 1.0
        await queue.get()
        assert queue.queue_duration.snapshot().total == pytest.approx(2.0 + 4.0), "waited since its add"
        queue.add_rate_limited(key)
        assert queue.retries == 1
        queue.close()

    asyncio.run(body())


class _FakeRest:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def request(self, method: str, url: str, **_options: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status


def test_every_request_of_the_client_is_counted_and_timed() -> None:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration())
    client.rest_client = cast(Any, _FakeRest([_Answer(201), ApiException(status=429),
                                              ApiException(status=0, reason="TLS"), _Answer(404)]))
    stats = RestClientStats(host="api:6443")
    measure_requests(client, stats)
    client.rest_client.request("POST", "https://api/x")
    for _ in range(2):
        with pytest.raises(ApiException):
            client.rest_client.request("POST", "https://api/x")
    client.rest_client.request("GET", "https://api/x")
    requests, durations = stats.snapshot()
    assert requests == {("201", "POST"): 1, ("429", "POST"): 1, ("<error>", "POST"): 1, ("404", "GET"): 1}
    assert durations["POST"].buckets[-1][1] == 3
    assert durations["GET"].buckets[-1][1] == 1


def test_rest_client_stats_hold_under_threads() -> None:
    stats = RestClientStats(host="api")

    def hammer() -> None:
        for _ in range(2000):
            stats.observe("GET", "200", 0.01)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.snapshot()[0] == {("200", "GET"): 8000}


# ---------------------------------------------------------------- the runtime


def test_the_runtime_counts_syncs_lifecycle_messages_failures_and_latencies() -> None:
    from test_runtime import deploy, pod_of, pods_created, ready  # noqa: PLC0415 (the runtime tests' helpers)

    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            cluster.fail("create_pod", ServerError("busy", status=503), times=1)
            deploy(runtime, "sim", "m1", "m2")
            await pods_created(cluster, 2)
            assert runtime.reconciles.results["error"] >= 1, "the 503 failed a sync"
            assert runtime.queue.retries >= 1
            assert runtime.simulations_by_phase() == {"starting": 1, "running": 0, "ended": 0}
            for model in ("m1", "m2"):
                cluster.set_container(pod_of(cluster, model), "running")
            await wait_until(lambda: runtime.lifecycle.model_start.count == 2, what="two starts observed")
            ready(runtime, "sim", "m1", "m2")
            await wait_until(lambda: runtime.lifecycle.messages["ModelsReady", "success"] == 1, what="ModelsReady")
            assert runtime.lifecycle.models_ready.count == 1
            assert runtime.simulations_by_phase()["running"] == 1
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            cluster.set_container(pod_of(cluster, "m2"), "terminated", exit_code=3)
            await wait_until(lambda: runtime.lifecycle.messages["AllModelsHaveTerminated", "success"] == 1,
                             what="AllModelsHaveTerminated")
        assert runtime.lifecycle.messages["ModelHasTerminated", "success"] == 1
        assert runtime.lifecycle.messages["ModelHasTerminated", "failed"] == 1
        assert runtime.lifecycle.failures["3"] == 1
        assert runtime.reconciles.results["success"] >= 1
        assert runtime.reconciles.time.count == sum(runtime.reconciles.results.values())
        assert runtime.queue.adds >= 1
        assert runtime.queue.work_duration.count == sum(runtime.reconciles.results.values())

    asyncio.run(asyncio.wait_for(body(), 30))
