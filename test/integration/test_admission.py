"""Whole simulations admitted by the namespace's ResourceQuota, on the real control plane.

The quota is a real ResourceQuota: kube-apiserver's quota admission counts each pod into ``used`` when it is
created, kube-controller-manager's ResourceQuota controller gives an ended pod's share back. The first test
runs kube-scheduler on two nodes of 1 CPU each, so that the capacity the quota stands for is real too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    ready,
    set_terminated,
    wait_for,
)

IMAGE = "fake_model:0.0.1"


def quota(kube: ControlPlane, **hard: str) -> None:
    kube.request("POST", f"/api/v1/namespaces/{NAMESPACE}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "models"}, "spec": {"hard": hard}})


def deploy(so: SimulatorRecorder, sim: str, count: int) -> list[str]:
    models = [f"m{index}" for index in range(count)]
    so.deploy(sim, [(model, IMAGE, [("A", "1")]) for model in models])
    return models


def pods_of(kube: ControlPlane, sim: str, phase: str | None = None) -> list[str]:
    pods = core_api(kube).list_namespaced_pod(NAMESPACE, label_selector=f"simulation_id={sim}").items
    return sorted(str(pod.metadata.name) for pod in pods if pod.metadata and pod.status
                  and (phase is None or pod.status.phase == phase))


def start(kube: ControlPlane, so: SimulatorRecorder, sim: str, models: list[str]) -> list[str]:
    """The simulation's pods running (placed by kube-scheduler where it runs), its models ready, ModelsReady."""
    def running() -> list[str] | None:
        names = pods_of(kube, sim, "Running")
        return names if len(names) == len(models) else None

    names = wait_for(running, timeout=30, what=f"the pods of {sim} running")
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), what=f"ModelsReady of {sim}")
    return names


def finish(kube: ControlPlane, so: SimulatorRecorder, sim: str, names: list[str]) -> None:
    api = core_api(kube)
    for name in names:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)


def answered_once(so: SimulatorRecorder, sim: str, models: list[str], code: int = 0) -> None:
    kinds = Counter(message.kind for message in so.of(sim))
    assert kinds["AllModelsHaveTerminated"] == 1, kinds
    assert Counter(message.model_id for message in so.of(sim, "ModelHasTerminated")) == Counter(models)
    assert {termination[1] for termination in so.terminations(sim).values()} == {code}


def queued_event(daemon: Any, sim: str) -> list[dict[str, Any]]:
    return [event for event in daemon.logged("simulation waits for room in the namespace's quota")
            if event["simulation_id"] == sim]


def test_a_third_simulation_waits_whole_until_one_of_two_ends_then_all_its_models_start(
        capacity_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # Two nodes of 1 CPU; the quota says as much. Each simulation: two models of 500m, a whole node.
    quota(capacity_kube, **{"requests.cpu": "2", "pods": "10"})
    daemon = make_daemon(capacity_kube, MODEL_CPU_REQUEST="500m", MODEL_CPU_LIMIT="500m")
    first, second, third = "sim-quota-a", "sim-quota-b", "sim-quota-c"
    models = {sim: deploy(so, sim, 2) for sim in (first, second, third)}
    running = {sim: start(capacity_kube, so, sim, models[sim]) for sim in (first, second)}
    [waiting] = wait_for(lambda: queued_event(daemon, third), what="the third simulation queued")
    assert waiting["reason"] == "needs requests.cpu=1; free in ResourceQuota models: requests.cpu=0"
    assert pods_of(capacity_kube, third) == [], "no pod of a simulation that does not fit"
    finish(capacity_kube, so, first, running[first])
    # The quota controller gives the first one's share back: the third is admitted, whole, and kube-scheduler
    # places its pods where the first one's ran.
    running[third] = start(capacity_kube, so, third, models[third])
    assert len(queued_event(daemon, third)) == 1, "logged once, however often the quota changed"
    for sim in (second, third):
        finish(capacity_kube, so, sim, running[sim])
    for sim in (first, second, third):
        answered_once(so, sim, models[sim])
    assert not daemon.logged("pod rejected"), "no create the quota refused"


def test_a_simulation_that_can_never_fit_is_answered_minus_1_at_once_with_the_numbers(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    quota(status_kube, pods="2")
    make_daemon(status_kube)
    sim = "sim-quota-never"
    models = deploy(so, sim, 3)
    so.wait_all_terminated(sim, timeout=20)
    answered_once(so, sim, models, code=-1)
    wait_for(lambda: len(so.of(sim, "ErrorOccurred")) == 3, timeout=10, what="an ErrorOccurred per model")
    for error in so.of(sim, "ErrorOccurred"):
        assert b"needs pods=3, more than ResourceQuota models allows at all (pods=2)" in error.payload
    assert pods_of(status_kube, sim) == []


def test_a_simulation_queued_when_the_daemon_is_killed_is_admitted_by_the_next_one(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    quota(status_kube, **{"requests.cpu": "300m"})
    daemon = make_daemon(status_kube)
    first, second = "sim-quota-kill-a", "sim-quota-kill-b"
    models = {sim: deploy(so, sim, 3) for sim in (first, second)}
    running = start(status_kube, so, first, models[first])
    wait_for(lambda: queued_event(daemon, second), what="the second simulation queued")
    daemon.kill()  # SIGKILL: the queue is in the records
    successor = make_daemon(status_kube)
    wait_for(lambda: queued_event(successor, second), what="the second simulation queued again")
    finish(status_kube, so, first, running)
    finish(status_kube, so, second, start(status_kube, so, second, models[second]))
    for sim in (first, second):
        answered_once(so, sim, models[sim])


def test_a_simulation_queued_when_the_leader_dies_is_admitted_by_the_new_leader(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    election = {"LEADER_ELECTION_LEASE_SECONDS": 3.0, "LEADER_ELECTION_RENEW_SECONDS": 2,
                "LEADER_ELECTION_RETRY_SECONDS": 0.5}
    quota(status_kube, **{"requests.cpu": "300m"})
    leader = make_daemon(status_kube, POD_NAME="mso-a", **election)
    standby = make_daemon(status_kube, wait_subscribed=False, POD_NAME="mso-b", **election)
    standby.wait_logged("standing by: another replica leads")
    first, second = "sim-quota-failover-a", "sim-quota-failover-b"
    models = {sim: deploy(so, sim, 3) for sim in (first, second)}
    running = start(status_kube, so, first, models[first])
    wait_for(lambda: queued_event(leader, second), what="the second simulation queued")
    leader.kill()
    standby.wait_logged("mqtt subscribed", timeout=30)
    finish(status_kube, so, first, running)
    finish(status_kube, so, second, start(status_kube, so, second, models[second]))
    for sim in (first, second):
        answered_once(so, sim, models[sim])
