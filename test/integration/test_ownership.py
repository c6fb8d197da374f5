"""Only what is ours: pods whose names coincide belong to distinct models, and a pod someone else made
under the name the daemon wants is never taken over, stopped or deleted (PROTOCOL.md section 6)."""

from __future__ import annotations

import kubernetes.client

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    set_terminated,
    wait_for,
)

IMAGE = "fake_model:0.0.1"


def _pods_by_ids(kube: ControlPlane) -> dict[tuple[str, str], str]:
    found = {}
    for pod in core_api(kube).list_namespaced_pod(NAMESPACE).items:
        annotations = (pod.metadata.annotations or {}) if pod.metadata else {}
        if "dots.mso/model-id" in annotations and pod.metadata and pod.metadata.name:
            found[(annotations["dots.mso/simulation-id"], annotations["dots.mso/model-id"])] = pod.metadata.name
    return found


def test_models_whose_pod_names_coincide_each_get_their_own_pod(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(status_kube)
    so.deploy("x-y", [("z", IMAGE, [])], keep_logs_hours=1)
    so.deploy("x", [("y-z", IMAGE, []), ("ModelA", IMAGE, []), ("modela", IMAGE, [])], keep_logs_hours=1)
    pods = wait_for(lambda: found if len(found := _pods_by_ids(status_kube)) == 4 else {},
                    what="four pods, one per model")
    assert len(set(pods.values())) == 4
    api = core_api(status_kube)
    set_terminated(api, pods[("x-y", "z")], 0)
    so.wait_all_terminated("x-y")
    assert so.terminations("x-y") == {"z": ("SUCCESSFULL", 0)}
    assert so.terminations("x") == {}, "the other simulation's models are still running"
    for model, code in (("y-z", 3), ("ModelA", 4), ("modela", 5)):
        set_terminated(api, pods[("x", model)], code)
    so.wait_all_terminated("x")
    assert so.terminations("x") == {"y-z": ("FAILED", 3), "ModelA": ("FAILED", 4), "modela": ("FAILED", 5)}


def test_a_pod_someone_else_made_under_the_wanted_name_is_left_alone(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    api = core_api(status_kube)
    foreign = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name="so01-sim-own-m1", labels={"app": "mine"}),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="c", image=IMAGE)],
                                         node_selector={"type": "worker"}))
    api.create_namespaced_pod(NAMESPACE, foreign)
    make_daemon(status_kube, model_start_timeout_seconds=2)
    so.deploy("sim-own", [("m1", IMAGE, [])])
    ours = wait_for(lambda: _pods_by_ids(status_kube).get(("sim-own", "m1"), ""), what="the model's own pod")
    assert ours != "so01-sim-own-m1"
    set_terminated(api, ours, 0)
    so.wait_all_terminated("sim-own")
    assert so.terminations("sim-own") == {"m1": ("SUCCESSFULL", 0)}
    wait_for(lambda: "sim-own" not in str([p.metadata.name for p in api.list_namespaced_pod(NAMESPACE).items
                                            if p.metadata and p.metadata.name != "so01-sim-own-m1"]),
             what="the simulation's own pod cleaned up")
    left = api.read_namespaced_pod("so01-sim-own-m1", NAMESPACE)
    assert left.metadata is not None and left.metadata.deletion_timestamp is None
    assert left.spec is not None and left.spec.active_deadline_seconds is None, "never stopped either"
