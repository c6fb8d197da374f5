"""Ordinary cluster events give no false answers: re-lists, an API server's 403s, ids that collide, ids no
topic may carry. Each ran against the real control plane and a real Mosquitto, where the daemon before these
rules answered -3, -1 or nothing at all.
"""

from __future__ import annotations

import time

from model_services_orchestrator.pod_specs import label_value
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    ready,
    running_pods,
    set_terminated,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"


def pods_by_model(kube: ControlPlane) -> dict[str, str]:
    """Pod names by the exact model id in their annotations."""
    pods = [pod.to_dict()["metadata"] for pod in core_api(kube).list_namespaced_pod(NAMESPACE).items]
    return {str(metadata["annotations"]["dots.mso/model-id"]): str(metadata["name"]) for metadata in pods}


def test_re_lists_during_creates_take_no_running_pod_for_lost(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    """A list is a snapshot: a pod created after it was requested is missing from it, and runs."""
    # Slow enough that the creates (15 s at 40 a second) span every re-list (each a fraction of a second, a few
    # on a loaded machine); 410 on the watch that resumes a cut stream is what a compaction past the watch's
    # resourceVersion gives.
    daemon = make_daemon(status_kube, KUBERNETES_QPS=40, KUBERNETES_BURST=20, MODEL_START_TIMEOUT_SECONDS=600)
    sim = "sim-relists"
    models = [f"m{index:03d}" for index in range(600)]
    so.deploy(sim, [(model, IMAGE, []) for model in models])
    api = core_api(status_kube)
    wait_for(lambda: api.list_namespaced_pod(NAMESPACE).items, timeout=30, what="the first pods")

    def relisted() -> int:
        return len(daemon.logged("pod watch expired, listing again"))

    while (before := relisted()) < 15:
        status_kube.inject_fault(410, count=1, methods=["WATCH"], path_contains="/pods")  # the pod watch's
        deadline = time.monotonic() + 30
        while relisted() == before:
            # Again every 2 s: a stream that opened as the last one was closed may sit idle, not failed.
            status_kube.close_watches()
            wait_until = time.monotonic() + 2
            while relisted() == before and time.monotonic() < wait_until:
                time.sleep(0.01)
            assert time.monotonic() < deadline, "no re-list in 30 s"
    created = len(api.list_namespaced_pod(NAMESPACE).items)
    assert created < len(models), f"the re-lists must fall among the creates (all {created} were made before)"
    running_pods(api, len(models), timeout=120)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=60, what="ModelsReady")
    assert so.of(sim, "ModelHasTerminated") == [], "no model taken for lost"
    assert so.of(sim, "ErrorOccurred") == []


def test_creates_refused_403_for_three_seconds_are_retried(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    """kube-apiserver answers 403 for about 2 s after a restart, until its RBAC caches are filled."""
    make_daemon(status_kube)
    sim = "sim-forbidden"
    models = [f"m{index}" for index in range(20)]
    status_kube.inject_fault(403, seconds=3, methods=["POST"], path_contains="/pods")
    so.deploy(sim, [(model, IMAGE, []) for model in models])
    running_pods(core_api(status_kube), len(models), timeout=60)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=30, what="ModelsReady")
    assert so.of(sim, "ModelHasTerminated") == [] and so.of(sim, "ErrorOccurred") == []


def test_creates_refused_403_past_the_start_deadline_fail_minus_two_with_the_reason(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(status_kube, MODEL_START_TIMEOUT_SECONDS=2)
    sim = "sim-forbidden-long"
    status_kube.inject_fault(403, seconds=120, methods=["POST"], path_contains="/pods")
    so.deploy(sim, [("m1", IMAGE, [])])
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {"m1": ("FAILED", -2)}
    [error] = wait_for(lambda: so.of(sim, "ErrorOccurred"), what="the ErrorOccurred")  # on another session
    assert b"pod not created: 403" in error.payload


def test_the_cleanup_of_a_b_leaves_the_pods_of_simulation_a_b_hash(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    """``a b`` is labelled ``a_b-<hash>``, which is itself a valid id another simulation may have."""
    make_daemon(status_kube)
    other = label_value("a b")
    so.deploy(other, [("m1", IMAGE, []), ("m2", IMAGE, [])])
    so.deploy("a b", [("m3", IMAGE, [])])
    api = core_api(status_kube)
    running_pods(api, 3)
    set_terminated(api, pods_by_model(status_kube)["m3"], 0)
    so.wait_all_terminated("a b")
    wait_for(lambda: sorted(pods_by_model(status_kube)) == ["m1", "m2"], timeout=30, what="a b's pod deleted")
    time.sleep(1)  # a cleanup that deleted more would have done it by now
    assert sorted(pods_by_model(status_kube)) == ["m1", "m2"]
    records = {(item.to_dict()["metadata"].get("annotations") or {}).get("dots.mso/simulation-id")
               for item in api.list_namespaced_config_map(NAMESPACE).items} - {None}
    assert records == {other}, "the other simulation's record is left whole"
    assert so.of(other, "ModelHasTerminated") == []


def test_two_sos_in_one_namespace_run_equal_ids(
        broker: LocalMosquitto, status_kube: ControlPlane, make_daemon: DaemonFactory) -> None:
    """Ids that differ only in case take the unique names, which must differ between SOs."""
    recorders = {name: SimulatorRecorder(broker, so=name) for name in ("so-a", "so-b")}
    try:
        for name in recorders:
            # One replica each: the Role names only the default SO's leader Lease (role.yaml).
            make_daemon(status_kube, SIMULATOR_NAME=name, MQTT_CLIENT_ID=f"mso-{name}", LEADER_ELECTION=False)
        for recorder in recorders.values():
            recorder.deploy("sim", [("M1", IMAGE, []), ("m1", IMAGE, [])])
        running_pods(core_api(status_kube), 4, timeout=30)
        for recorder in recorders.values():
            ready(recorder, "sim", "M1", "m1")
            wait_for(lambda recorder=recorder: recorder.of("sim", "ModelsReady"),  # type: ignore[misc]
                     timeout=30, what=f"{recorder.so}'s ModelsReady")
            assert recorder.of("sim", "ModelHasTerminated") == []
    finally:
        for recorder in recorders.values():
            recorder.close()


def test_an_id_no_topic_may_carry_is_refused_and_stops_no_one(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    so.deploy("sim-bad", [("ok", IMAGE, []), ("bad\x00id", IMAGE, []), ("bell\x07", IMAGE, []),
                          ("nonchar\ufffe", IMAGE, []), ("c1\x85", IMAGE, [])])
    so.wait_all_terminated("sim-bad", timeout=30)
    assert so.terminations("sim-bad") == {"ok": ("FAILED", -1)}
    # ErrorOccurred goes on the daemon's main session, the answers on the outbox's: either may come first.
    [error] = wait_for(lambda: so.of("sim-bad", "ErrorOccurred"), what="the ErrorOccurred")
    assert b"U+0000" in error.payload
    assert len(daemon.logged("DeployModels refused")) == 1
    # The next simulation runs: the daemon was never disconnected for a topic the broker refuses.
    so.deploy("sim-next", [("m1", IMAGE, [])])
    running_pods(core_api(status_kube), 1)
    ready(so, "sim-next", "m1")
    wait_for(lambda: so.of("sim-next", "ModelsReady"), timeout=30, what="the next simulation's ModelsReady")
    assert daemon.logged("mqtt connection lost, reconnecting") == []
