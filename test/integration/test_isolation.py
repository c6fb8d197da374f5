"""The API server the tests share is as good as new for every test.

On the real control plane one ``ControlPlane`` per kubelet mode serves the session and conftest.py resets
it before each test: the first test here leaves every kind of mess behind (a model process running, the
daemon's record and Secrets, a fault injected for ten minutes, the API refused for the daemon, a watch
open), and the second, which runs right after it on the same control plane, finds none of it.
"""

from __future__ import annotations

import kubernetes.client

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    fake_model_env,
    left_in_namespace,
    running_pods,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"


def test_a_test_that_leaves_a_mess_behind(broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder,
                                          make_daemon: DaemonFactory) -> None:
    make_daemon(kube)
    sim = "sim-mess"
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m, run_seconds=600)) for m in ("m1", "m2")],
              keep_logs_hours=1)
    api = core_api(kube)
    running_pods(api, 2)
    wait_for(lambda: any(name.startswith("secrets/") for name in left_in_namespace(api)),
             what="the record and its Secrets")
    if isinstance(kube, ControlPlane):
        wait_for(lambda: len(kube.kubelet_children()) == 2, what="two model processes")
    kube.inject_fault(503, seconds=600)
    kube.stop()


def test_the_next_test_finds_the_api_server_as_good_as_new(kube: ControlPlane) -> None:
    assert kube.request_counts()["total"] == 0
    assert left_in_namespace(core_api(kube)) == []
    if isinstance(kube, ControlPlane):
        assert kube.kubelet_children() == [], "no model process left running"
    daemon_view = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube.daemon_client_configuration()))
    assert daemon_view.list_namespaced_pod(NAMESPACE).items == [], "the API up for the daemon, with no fault"
    assert set(kube.request_counts()["by_status"]) == {"200"}
