"""Every model gets exactly one answer, whatever goes wrong with it, and requests are idempotent.

PROTOCOL.md section 5: -1 the API rejected the pod, -2 its container did not
start in time, -3 someone else removed the pod; ids Kubernetes would reject
still get a pod, while the SO keeps hearing the original ids.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

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


def test_every_failure_gets_exactly_one_answer(broker: LocalMosquitto, kube: ControlPlane,
                                               so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kube, model_start_timeout_seconds=3)
    sim = "sim-failures"
    long_id = "Model_With_An_Id_That_Is_Far_Too_Long_For_A_Kubernetes_Name_" + "x" * 20
    models = [
        ("good", IMAGE, fake_model_env(broker, sim, "good", run_seconds=2)),
        # (Kubernetes 1.34 and later take any printable ASCII but "=" as a name; older ones
        # take C identifiers (and "-", ".") only: "=" is refused by all.)
        ("bad-env", IMAGE, [("NOT=AN_ENV_NAME", "x")]),
        ("no-image", "registry.invalid/nothing-here:1", []),
        ("bad-image", "Upper Case/Not An Image:1", []),
        ("doomed", IMAGE, fake_model_env(broker, sim, "doomed", run_seconds=60)),
        (long_id, IMAGE, fake_model_env(broker, sim, long_id, run_seconds=1)),
    ]
    so.deploy(sim, models)
    api = core_api(kube)
    doomed = wait_for(lambda: [p for p in api.list_namespaced_pod(NAMESPACE).items
                               if p.metadata and p.metadata.name and p.metadata.name.endswith("doomed")
                               and p.status and p.status.phase == "Running"], what="the doomed pod running")
    assert doomed[0].metadata is not None and doomed[0].metadata.name is not None
    api.delete_namespaced_pod(doomed[0].metadata.name, NAMESPACE)
    so.wait_all_terminated(sim)

    assert so.terminations(sim) == {
        "good": ("SUCCESSFULL", 0),
        "bad-env": ("FAILED", -1),
        "no-image": ("FAILED", -2),
        "bad-image": ("FAILED", -2),
        "doomed": ("FAILED", -3),
        long_id: ("SUCCESSFULL", 0),
    }
    assert len(so.of(sim, "ModelHasTerminated")) == 6
    assert len(so.of(sim, "AllModelsHaveTerminated")) == 1
    # ErrorOccurred follows each failure's log read, so the last one may come after AllModelsHaveTerminated.
    wait_for(lambda: sorted(m.model_id for m in so.of(sim, "ErrorOccurred")) == [
        "bad-env", "bad-image", "doomed", "no-image"], timeout=10, what="one ErrorOccurred per failed model")


def test_an_image_the_registry_says_does_not_exist_fails_within_seconds(
        kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # The default start timeout (300 s): the registry's "not found", heard twice, is answer enough.
    daemon = make_daemon(kube)
    sim = "sim-missing-image"
    started = time.monotonic()
    so.deploy(sim, [("ghost", "registry.example/nothing-here:1", [])], keep_logs_hours=1)
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {"ghost": ("FAILED", -2)}
    assert time.monotonic() - started < 60
    error = wait_for(lambda: so.of(sim, "ErrorOccurred"), timeout=10, what="the ErrorOccurred")[0]
    assert b"registry.example/nothing-here:1: not found" in error.payload
    assert "not found" in daemon.wait_logged("model failed")["reason"]
    # Stopped in place: the pod stays until the cleanup after keepLogsHours, and fails for good.
    api = core_api(kube)
    wait_for(lambda: [p for p in api.list_namespaced_pod(NAMESPACE).items
                      if p.status and p.status.reason == "DeadlineExceeded"], timeout=20,
             what="the pod stopped by its active deadline")


def test_repeated_requests_are_answered_once(status_kube: ControlPlane, so: SimulatorRecorder,
                                             make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-again"
    request = [("m1", IMAGE, [("A", "1")]), ("m1", IMAGE, [("A", "2")]), ("m2", IMAGE, [("A", "1")])]
    so.deploy(sim, request)
    api = core_api(status_kube)
    names = running_pods(api, 2)
    so.deploy(sim, request)
    wait_for(lambda: daemon.logged("repeated DeployModels"), what="the repeat noticed")
    assert len(api.list_namespaced_pod(NAMESPACE).items) == 2
    ready(so, sim, "m1", "m2", "m1")
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")
    for name in names:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert len(so.of(sim, "ModelsReady")) == 1
    assert so.terminations(sim) == {"m1": ("SUCCESSFULL", 0), "m2": ("SUCCESSFULL", 0)}
    assert len(so.of(sim)) == 4, "ModelsReady, two ModelHasTerminated, AllModelsHaveTerminated: nothing else"


def test_the_client_side_rate_limit_holds_against_the_api_server(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(status_kube, kubernetes_qps=10, kubernetes_burst=2)
    status_kube.reset_request_counts()
    started = time.monotonic()
    so.deploy("sim-limited", [(f"m{i}", IMAGE, [("A", "1")]) for i in range(20)])
    running_pods(core_api(status_kube), 20)
    elapsed = time.monotonic() - started
    # A record and its Secret, then 20 creates: at 10 a second after a burst of 2, at least 2 s.
    assert elapsed >= (22 - 2) / 10 * 0.95


def test_a_burst_of_terminations_is_reported_in_full_through_the_shipped_broker_config(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(status_kube, kubernetes_qps=1000, kubernetes_burst=1000)
    sim = "sim-burst"
    count = 200
    so.deploy(sim, [(f"m{i:03d}", IMAGE, [("A", "1")]) for i in range(count)])
    api = core_api(status_kube)
    names = running_pods(api, count)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: set_terminated(api, name, 0), names))
    so.wait_all_terminated(sim, timeout=60)
    assert len(so.of(sim, "ModelHasTerminated")) == count


def test_a_second_deploy_that_adds_models_answers_each_of_them(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # PROTOCOL.md section 5: every model named gets its ModelHasTerminated, also one a repeated
    # DeployModels of a running simulation adds (FAILED -1: that simulation is deployed already).
    make_daemon(status_kube)
    sim = "sim-grows"
    so.deploy(sim, [("m1", IMAGE, [("A", "1")])])
    api = core_api(status_kube)
    [name] = running_pods(api, 1)
    so.deploy(sim, [("m1", IMAGE, [("A", "1")]), ("m2", IMAGE, [("A", "1")])])
    wait_for(lambda: so.terminations(sim), what="the added model answered")
    assert so.terminations(sim) == {"m2": ("FAILED", -1)}
    assert len(api.list_namespaced_pod(NAMESPACE).items) == 1
    ready(so, sim, "m1")
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady, which the added model does not hold up")
    set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert so.terminations(sim) == {"m1": ("SUCCESSFULL", 0), "m2": ("FAILED", -1)}
    assert len(so.of(sim, "AllModelsHaveTerminated")) == 1
