"""Restarts at any moment, SIGKILL included: nothing running is killed, nothing said is said twice.

The daemon's state lives in the cluster (a record per simulation) and the
broker (a persistent session), so a new process converges to exactly where
the old one was.
"""

from __future__ import annotations

import signal
from typing import Any

from model_services_orchestrator.model_inventory import Delivery
from model_services_orchestrator.simulation_records import part_name, record_name, values_name
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    left_in_namespace,
    read_records,
    ready,
    ready_in_record,
    record_part_count,
    running_pods,
    set_terminated,
    settled_in_record,
    wait_for,
)

IMAGE = "fake_model:0.0.1"


def test_sigkill_keeps_running_pods_and_reports_what_ended_meanwhile_once(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-kill"
    models = ["m0", "m1", "m2", "m3"]
    so.deploy(sim, [(m, IMAGE, [("A", "1")]) for m in models])
    api = core_api(status_kube)
    names = running_pods(api, 4)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")
    # Each kill here comes once the record says what the SO heard was delivered: a kill before that makes
    # the restarted daemon send it again (docs/guarantees.md, "The limits"), which is not what this tests.
    wait_for(lambda: settled_in_record(api, sim), what="ModelsReady delivered in the record")

    daemon.kill()
    set_terminated(api, names[0], 0)  # ends while nobody watches
    daemon = make_daemon(status_kube)
    wait_for(lambda: so.terminations(sim).get("m0"), what="the termination that happened while down")
    assert len(api.list_namespaced_pod(NAMESPACE).items) == 4, "a restart deletes no pod"
    wait_for(lambda: settled_in_record(api, sim), what="m0's termination delivered in the record")

    daemon.kill()
    daemon = make_daemon(status_kube)
    for name, code in zip(names[1:], (1, 0, 0), strict=True):
        set_terminated(api, name, code)
    so.wait_all_terminated(sim)
    wait_for(lambda: settled_in_record(api, sim), what="every message delivered in the record")
    daemon.kill()
    make_daemon(status_kube)  # a restart after the end: nothing more to say, only the cleanup to finish

    wait_for(lambda: not api.list_namespaced_pod(NAMESPACE).items, what="cleanup after the end")
    assert len(so.of(sim, "ModelsReady")) == 1
    assert len(so.of(sim, "ModelHasTerminated")) == 4
    assert len(so.of(sim, "AllModelsHaveTerminated")) == 1
    assert so.terminations(sim) == {"m0": ("SUCCESSFULL", 0), "m1": ("FAILED", 1), "m2": ("SUCCESSFULL", 0),
                                    "m3": ("SUCCESSFULL", 0)}


def test_ready_for_processing_published_while_down_still_counts(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-down"
    so.deploy(sim, [(m, IMAGE, [("A", "1")]) for m in ("m0", "m1")])
    api = core_api(status_kube)
    running_pods(api, 2)
    ready(so, sim, "m0")
    wait_for(lambda: ready_in_record(api, sim) == {"m0"}, what="m0's readiness in the record")
    daemon.kill()
    ready(so, sim, "m1")  # QoS 0, while the daemon is down: the broker queues it for the session
    make_daemon(status_kube, wait_subscribed=False)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady after the restart")
    assert len(so.of(sim, "ModelsReady")) == 1


def test_keep_logs_hours_deadline_survives_a_restart(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-keep"
    so.deploy(sim, [("m0", IMAGE, [("A", "1")])], keep_logs_hours=0.001)  # 3.6 s
    api = core_api(status_kube)
    names = running_pods(api, 1)
    set_terminated(api, names[0], 0)
    so.wait_all_terminated(sim)
    finished_at = read_records(api)[sim].finished_at
    assert isinstance(finished_at, float)
    wait_for(lambda: settled_in_record(api, sim), what="AllModelsHaveTerminated delivered in the record")
    daemon.signal(signal.SIGKILL)
    daemon.kill()
    wait_for(lambda: status_kube.running, what="the API server still up")
    make_daemon(status_kube)
    wait_for(lambda: not api.list_namespaced_pod(NAMESPACE).items, timeout=20, what="pods deleted after restart")
    wait_for(lambda: not left_in_namespace(api), what="record deleted with them")
    assert len(so.of(sim, "AllModelsHaveTerminated")) == 1


def test_a_record_deleted_by_hand_leaves_no_orphan_pods(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-orphan"
    so.deploy(sim, [(m, IMAGE, [("A", "1")]) for m in ("m0", "m1")])
    api = core_api(status_kube)
    names = running_pods(api, 2)
    daemon.kill()
    api.delete_namespaced_config_map(record_name("dots-so", sim), NAMESPACE)
    make_daemon(status_kube)
    ready(so, sim, "m0", "m1")
    for name in names:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert so.terminations(sim) == {"m0": ("SUCCESSFULL", 0), "m1": ("SUCCESSFULL", 0)}
    assert not so.of(sim, "ModelsReady"), "what was said before is unknown: never risk a second ModelsReady"
    wait_for(lambda: not api.list_namespaced_pod(NAMESPACE).items, what="the adopted pods cleaned up")


def test_a_record_deleted_by_hand_while_running_is_written_again_with_its_specs(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-rewritten"
    so.deploy(sim, [(m, IMAGE, [("A", "1"), ("DB_PASSWORD", "hunter2")]) for m in ("m0", "m1")])
    api = core_api(status_kube)
    names = running_pods(api, 2)
    record = record_name("dots-so", sim)
    wait_for(lambda: api.list_namespaced_secret(NAMESPACE).items, what="the specs saved")
    api.delete_namespaced_config_map(record, NAMESPACE)
    ready(so, sim, "m0", "m1")
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")
    def metadata(kind: str) -> list[dict[str, Any]]:
        listed = api.list_namespaced_config_map(NAMESPACE) if kind == "configmaps" else api.list_namespaced_secret(
            NAMESPACE)
        return [item["metadata"] for item in listed.to_dict()["items"]]

    wait_for(lambda: any(m["name"] == record for m in metadata("configmaps")), what="the record written again")
    assert ready_in_record(api, sim) == {"m0", "m1"}
    owner_uid = next(m["uid"] for m in metadata("configmaps") if m["name"] == record)

    def owned_by_the_new_record() -> set[str]:
        return {m["name"] for m in metadata("secrets")
                if any(owner["uid"] == owner_uid for owner in m.get("owner_references") or [])}

    wait_for(lambda: owned_by_the_new_record() == {values_name(record, 0), part_name(record, 0)},
             what="the secret values and the specs owned by the new record")
    # What the record and specs hold is enough for a restarted daemon to finish the simulation.
    wait_for(lambda: settled_in_record(api, sim), what="ModelsReady delivered in the record")
    daemon.kill()
    make_daemon(status_kube)
    for name in names:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert so.terminations(sim) == {"m0": ("SUCCESSFULL", 0), "m1": ("SUCCESSFULL", 0)}
    assert len(so.of(sim, "ModelsReady")) == 1


def test_a_record_in_several_parts_survives_restarts_and_is_cleaned_up_whole(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # Long ids make each model's share of the record large: 1,300 of them need two parts of 768 KiB;
    # a long env value does the same for the specs.
    models = [f"house-{i:04d}-" + "x" * 240 for i in range(1300)]
    payload = "p" * 300
    sim = "sim-parts"
    fast = {"KUBERNETES_QPS": 2000, "KUBERNETES_BURST": 2000, "LOG_LEVEL": "INFO"}
    daemon = make_daemon(status_kube, KUBERNETES_QPS=200, KUBERNETES_BURST=20, LOG_LEVEL="INFO")
    so.deploy(sim, [(m, IMAGE, [("A", "1"), ("DB_PASSWORD", "hunter2"), ("PAYLOAD", payload)]) for m in models])
    api = core_api(status_kube)
    wait_for(lambda: len(api.list_namespaced_pod(NAMESPACE).items) >= 100, what="creation under way")
    daemon.kill()  # in the middle of creating: the rest must come from the specs kept in the cluster
    assert len(api.list_namespaced_pod(NAMESPACE).items) < len(models)
    assert record_part_count(api, sim, "secrets") == 2
    daemon = make_daemon(status_kube, **fast)
    names = running_pods(api, len(models))
    for pod in api.list_namespaced_pod(NAMESPACE).to_dict()["items"]:
        env = {entry["name"]: entry for entry in pod["spec"]["containers"][0]["env"]}
        assert env["PAYLOAD"]["value"] == payload
        assert env["DB_PASSWORD"]["value_from"]["secret_key_ref"]["name"] == values_name(record_name("dots-so", sim), 0)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=30, what="ModelsReady")
    saved = read_records(api)[sim]
    assert record_part_count(api, sim) == 2 and saved.models_ready is not Delivery.NONE
    assert list(saved.models) == models
    wait_for(lambda: settled_in_record(api, sim), what="ModelsReady delivered in the record")

    daemon.kill()
    make_daemon(status_kube, **fast)
    for name in names:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert len(so.of(sim, "ModelsReady")) == 1
    assert len(so.of(sim, "ModelHasTerminated")) == len(models)
    assert set(so.terminations(sim).values()) == {("SUCCESSFULL", 0)}
    left: list[str] = []

    def cleaned_up() -> bool:
        left[:] = left_in_namespace(api)
        return not left
    wait_for(cleaned_up, timeout=30, what="pods, every part of the record and the specs deleted",
             progress=lambda: len(left))


def test_a_record_whose_name_resembles_another_simulations_part_is_never_taken_for_it(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # Simulation "r-p0" against part 0 of simulation "r": each keeps its own record across a restart.
    daemon = make_daemon(status_kube)
    so.deploy("r", [("m1", IMAGE, [("A", "1")])])
    so.deploy("r-p0", [("m1", IMAGE, [("A", "1")])])
    api = core_api(status_kube)
    running_pods(api, 2)
    ready(so, "r-p0", "m1")
    wait_for(lambda: so.of("r-p0", "ModelsReady"), what="ModelsReady of r-p0")
    wait_for(lambda: ready_in_record(api, "r-p0") == {"m1"}, what="the ready saved")
    wait_for(lambda: settled_in_record(api, "r-p0"), what="ModelsReady delivered in the record")
    daemon.kill()
    restarted = make_daemon(status_kube)
    wait_for(lambda: len(restarted.logged("simulation restored")) == 2, what="both simulations restored")
    assert not restarted.logged("simulation record unreadable, ignored")
    ready(so, "r", "m1")
    wait_for(lambda: so.of("r", "ModelsReady"), what="ModelsReady of r, which was never sent")
    assert len(so.of("r-p0", "ModelsReady")) == 1
