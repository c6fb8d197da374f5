"""KUEUE_QUEUE_NAME against the real Kueue: each simulation a pod group that Kueue admits whole.

Kueue v0.17 (``sigs.k8s.io/kueue``, built by ``ci/build_kueue.sh``) runs its controller and webhook on
127.0.0.1 against a control plane of this module's own (its pod webhook would otherwise sit in front of
every test's pods): one Kueue process for the module, a ClusterQueue with 300m of CPU, and the daemon's
models ask 100m each. Our kubelet binds a pod once Kueue has removed its scheduling gates (the API refuses
to bind a gated pod).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from model_services_orchestrator.pod_specs import KUEUE_GROUP_NAME, KUEUE_QUEUE_NAME, simulation_key
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import NAMESPACE, TEST_IMAGES, DaemonFactory, SimulatorRecorder, fake_model_env, wait_for
from simulation_components.kueue import KueueManager
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"
QUEUE = "dots-queue"
#: The daemon's start timeout: shorter than the first simulation runs, so the second one, gated all that
#: time, would get -2 if its deadline counted from its deploy rather than from its admission.
START_TIMEOUT = 6


@pytest.fixture(scope="module")
def kueue() -> Iterator[KueueManager]:
    """Kueue on a control plane of its own; ``.plane`` is the control plane."""
    with ControlPlane(kubelet="process", images=TEST_IMAGES) as plane, KueueManager(plane) as manager:
        manager.create_queues(QUEUE, {"cpu": "300m", "memory": "10Gi"})
        yield manager


@pytest.fixture
def kueue_kube(kueue: KueueManager) -> ControlPlane:
    kueue.check()
    return kueue.plane


def _pods(plane: ControlPlane, simulation_id: str) -> list[dict[str, Any]]:
    group = simulation_key("dots-so", simulation_id)
    listed = plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={KUEUE_GROUP_NAME}%3D{group}")
    return list(listed["items"])


def _gated(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def test_a_group_that_fits_runs_whole_and_one_that_does_not_waits_gated_until_it_does(
        broker: LocalMosquitto, kueue: KueueManager, kueue_kube: ControlPlane, so: SimulatorRecorder,
    make_daemon: DaemonFactory) -> None:
    make_daemon(kueue_kube, kueue_queue_name=QUEUE, model_start_timeout_seconds=START_TIMEOUT)
    first, second = "sim-kueue-1", "sim-kueue-2"
    so.deploy(first, [(f"m{i}", IMAGE, fake_model_env(broker, first, f"m{i}", run_seconds=2 * START_TIMEOUT))
                      for i in range(3)])  # 300m: the whole quota
    wait_for(lambda: len(_pods(kueue_kube, first)) == 3 and not any(map(_gated, _pods(kueue_kube, first))),
             timeout=60, what="the first group admitted whole")
    so.deploy(second, [(f"m{i}", IMAGE, fake_model_env(broker, second, f"m{i}", run_seconds=1)) for i in range(2)])
    wait_for(lambda: len(_pods(kueue_kube, second)) == 2, timeout=30, what="the second group's pods")

    pods = _pods(kueue_kube, second)
    assert all(_gated(pod) for pod in pods), "the second group does not fit: Kueue holds it at its gates"
    labels, annotations = pods[0]["metadata"]["labels"], pods[0]["metadata"]["annotations"]
    assert labels[KUEUE_QUEUE_NAME] == QUEUE
    assert annotations["kueue.x-k8s.io/pod-group-total-count"] == "2"
    # Gated past the start timeout (the first group runs twice as long): waiting, not failing.
    wait_for(lambda: so.of(first, "ModelHasTerminated"), timeout=60, what="the first simulation's end")
    assert not so.of(second, "ModelHasTerminated"), "a model of the gated group was reported"

    so.wait_all_terminated(first, timeout=60)
    so.wait_all_terminated(second, timeout=60)
    assert so.terminations(first) == {f"m{i}": ("SUCCESSFULL", 0) for i in range(3)}
    assert so.terminations(second) == {f"m{i}": ("SUCCESSFULL", 0) for i in range(2)}
    admitted = {w["metadata"]["name"]: [c["type"] for c in w["status"]["conditions"] if c["status"] == "True"]
                for w in kueue.workloads()}
    assert all("Finished" in conditions for conditions in admitted.values()), admitted


def test_a_group_kueue_evicts_has_every_model_reported_minus_3_with_the_reason(
        broker: LocalMosquitto, kueue: KueueManager, kueue_kube: ControlPlane, so: SimulatorRecorder,
        make_daemon: DaemonFactory) -> None:
    make_daemon(kueue_kube, kueue_queue_name=QUEUE)
    sim = "sim-kueue-evicted"
    so.deploy(sim, [(f"m{i}", IMAGE, fake_model_env(broker, sim, f"m{i}", run_seconds=120)) for i in range(2)])
    group = simulation_key("dots-so", sim)

    def running() -> bool:
        pods = _pods(kueue_kube, sim)
        return len(pods) == 2 and all((pod.get("status") or {}).get("phase") == "Running" for pod in pods)

    wait_for(running, timeout=60, what="the group running")
    workload = next(w for w in kueue.workloads() if w["metadata"]["name"] == group)
    # Deactivating the Workload makes Kueue evict the group: what a preemption does to it too.
    kueue_kube.request("PATCH", f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads/"
                       f"{workload['metadata']['name']}", {"spec": {"active": False}},
                       content_type="application/merge-patch+json")
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {"m0": ("FAILED", -3), "m1": ("FAILED", -3)}
    wait_for(lambda: len(so.of(sim, "ErrorOccurred")) == 2, timeout=30, what="one ErrorOccurred per model")
    errors = [m.payload for m in so.of(sim, "ErrorOccurred")]
    assert all(b"stopped by Kueue" in payload for payload in errors), errors


def test_a_gated_group_the_so_ends_is_reported_minus_4_and_leaves_no_pod(
        broker: LocalMosquitto, kueue_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kueue_kube, kueue_queue_name=QUEUE, model_stop_grace_seconds=1)
    sim = "sim-kueue-too-big"
    models = [f"m{i}" for i in range(4)]  # 400m: more than the whole quota, Kueue never admits it
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m)) for m in models])
    wait_for(lambda: len(pods := _pods(kueue_kube, sim)) == 4 and all(map(_gated, pods)), timeout=30,
             what="the group's four gated pods")
    so.publish(f"/lifecycle/dots-so/mso/{sim}/SimulationDone")
    so.wait_all_terminated(sim, timeout=30)
    assert so.terminations(sim) == {m: ("FAILED", -4) for m in models}
    # Kueue's finalizer on its pods does not keep them: the cleanup (keepLogsHours 0) removes every one.
    wait_for(lambda: not _pods(kueue_kube, sim), timeout=60, what="the gated pods deleted")
