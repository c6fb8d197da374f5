"""Health pings and pongs, ending a simulation early, model health, and the HTTP probes and metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

import kubernetes.client
from prometheus_client.parser import text_string_to_metric_families

from model_services_orchestrator.messages import PingHealthSOToMSO, PongHealthMSOToSO, UnhealthyModel
from model_services_orchestrator.protocol import PROTOCOL_VERSION
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    fake_model_env,
    ready,
    running_pods,
    set_terminated,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"


def ping(so: SimulatorRecorder, instance: str, *active: str) -> PongHealthMSOToSO:
    topic = f"/healthcheck/mso/dots-so/{instance}/PongHealthMSOToSO"
    so.client.subscribe(topic, 1)
    before = len([m for m in so.messages if m.topic == topic])
    so.publish(f"/healthcheck/dots-so/mso/{instance}/PingHealthSOToMSO",
               PingHealthSOToMSO(activeSimulations=list(active)).SerializeToString())
    answer = wait_for(lambda: [m for m in so.messages if m.topic == topic][before:], timeout=5, what="a pong")
    pong = PongHealthMSOToSO()
    pong.ParseFromString(answer[0].payload)
    return pong


def test_pings_are_answered_healthy_or_with_reasons(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(status_kube)
    so.deploy("sim-known", [("m1", IMAGE, [("A", "1")])])
    running_pods(core_api(status_kube), 1)
    healthy = ping(so, "i1", "sim-known")
    assert healthy.healthy == 0 and list(healthy.reasons) == []
    assert healthy.protocol_version == PROTOCOL_VERSION  # field 3, since protocol 1.1 (section 7)

    unknown = ping(so, "i2", "sim-known", "sim-nobody-knows")
    assert unknown.healthy == 1 and any("sim-nobody-knows" in r for r in unknown.reasons)

    status_kube.stop()
    def unhealthy_for_kubernetes() -> list[str]:
        pong = ping(so, "i3")
        return [r for r in pong.reasons if "Kubernetes" in r or "watch" in r] if pong.healthy == 1 else []
    reasons = wait_for(unhealthy_for_kubernetes, timeout=20, interval=0.5, what="an UNHEALTHY pong")
    assert reasons


def test_simulation_done_stops_running_models_after_the_grace_period_and_keeps_their_logs(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kube, model_stop_grace_seconds=2)
    sim = "sim-early"
    models = ["m1", "m2", "m3"]
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m, run_seconds=600)) for m in models],
              keep_logs_hours=1)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="all three running and ready")
    so.publish(f"/lifecycle/dots-so/mso/{sim}/SimulationDone")
    so.wait_all_terminated(sim, timeout=2 + 8)
    assert so.terminations(sim) == {m: ("FAILED", -4) for m in models}
    assert so.of(sim, "ErrorOccurred") == [], "the SO asked for it: not an error"
    # Stopped in place, not deleted: keepLogsHours is 1, so the pods and their logs stay.
    api = core_api(kube)
    def stopped_in_place() -> list[kubernetes.client.V1Pod]:
        pods = api.list_namespaced_pod(NAMESPACE).items
        found = [p for p in pods if p.status and p.status.phase == "Failed" and p.status.reason == "DeadlineExceeded"]
        return found if len(found) == len(pods) == 3 else []

    stopped = wait_for(stopped_in_place, timeout=20, what="three pods stopped in place")
    for pod in stopped:
        assert pod.metadata is not None and pod.metadata.name is not None
        assert "ReadyForProcessing sent" in api.read_namespaced_pod_log(pod.metadata.name, NAMESPACE)


def test_the_sos_simulation_done_to_each_model_lets_it_finish_its_work(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # Today's SO ends a simulation with SimulationDone to every model, which then writes its results
    # (minutes, for large ones) and exits 0. A grace of 1 s must not cut a model that takes 6 s.
    make_daemon(kube, model_stop_grace_seconds=1)
    sim = "sim-normal-end"
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m, run_seconds=6)) for m in ("m1", "m2")])
    wait_for(lambda: so.of(sim, "ModelsReady"), what="both running and ready")
    for model in ("m1", "m2"):
        so.publish(f"/lifecycle/dots-so/model/{sim}/{model}/SimulationDone")
    so.wait_all_terminated(sim, timeout=30)
    assert so.terminations(sim) == {"m1": ("SUCCESSFULL", 0), "m2": ("SUCCESSFULL", 0)}


def test_a_model_without_progress_is_reported_once(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(kube, model_healthcheck_interval_seconds=1)
    sim = "sim-health"
    env = {"stuck": [("FAKE_MODEL_ANSWER_PINGS", "1"), ("FAKE_MODEL_STALL", "1")],
           "busy": [("FAKE_MODEL_ANSWER_PINGS", "1")], "mute": []}
    so.deploy(sim, [(m, IMAGE, [*fake_model_env(broker, sim, m, run_seconds=8), *extra])
                    for m, extra in env.items()])
    so.wait_all_terminated(sim, timeout=40)
    unhealthy = so.of(sim, "UnhealthyModel")
    assert [m.model_id for m in unhealthy] == ["stuck"]
    message = UnhealthyModel()
    message.ParseFromString(unhealthy[0].payload)
    assert message.status == 0  # NOPROGRESS
    assert [e["model_id"] for e in daemon.logged("model unhealthy")] == ["stuck"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a test's own loopback URL)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_and_metrics(status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory,
                            unused_tcp_port: int) -> None:
    make_daemon(status_kube, http_port=unused_tcp_port)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    assert get(f"{base}/healthz")[0] == 200
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, what="ready")
    sim = "sim-metrics"
    so.deploy(sim, [(f"m{i}", IMAGE, [("A", "1")]) for i in range(3)], keep_logs_hours=1)
    api = core_api(status_kube)
    names = running_pods(api, 3)
    ready(so, sim, "m0", "m1", "m2")
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")
    for name, code in zip(names, (0, 1, 0), strict=True):
        set_terminated(api, name, code)
    so.wait_all_terminated(sim)
    wait_for(lambda: "ErrorOccurred" in get(f"{base}/metrics")[1], what="metrics of the finished simulation")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(get(f"{base}/metrics")[1]) for s in family.samples}
    assert samples[("mso_pods_created_total", ())] == 3
    assert samples[("mso_messages_sent_total", (("type", "ModelHasTerminated"),))] == 3
    assert samples[("mso_messages_sent_total", (("type", "ModelsReady"),))] == 1
    assert samples[("mso_messages_sent_total", (("type", "AllModelsHaveTerminated"),))] == 1
    assert samples[("mso_messages_received_total", (("type", "ReadyForProcessing"),))] == 3
    assert samples[("mso_models", (("state", "failed"),))] == 1
    assert samples[("mso_models", (("state", "succeeded"),))] == 2
    assert samples[("mso_pod_create_seconds_count", ())] == 3
    assert samples[("mso_watch_relists_total", ())] >= 1
    status_kube.stop()
    wait_for(lambda: get(f"{base}/readyz")[0] == 503, timeout=20, what="not ready")
    body = get(f"{base}/readyz")[1]
    assert "Kubernetes" in body or "watch" in body
