"""Hostile input, broker outages and signals: the daemon keeps serving, or ends cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from model_services_orchestrator.messages import DeployModels, ModelConfiguration
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


def test_hostile_messages_are_dropped_once_each_and_the_daemon_keeps_serving(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube, max_payload_bytes=1000)
    deploy = "/lifecycle/dots-so/mso/{}/DeployModels"
    hostile = [
        (deploy.format("s1"), b"\xff\xfe\xfd not protobuf"),
        (deploy.format("s2"), bytes(range(256))),
        (deploy.format("s3"), DeployModels(simulatorId="x").SerializeToString()),  # no models
        (deploy.format("s4"), DeployModels(modelConfigurations=[ModelConfiguration(modelID="")]).SerializeToString()),
        (deploy.format("s5"), b"\x0a" * 2000),  # over MAX_PAYLOAD_BYTES
        ("/lifecycle/dots-so/mso//DeployModels", b""),  # a topic with a missing part
        ("/lifecycle/dots-so/mso/s6/SimulationDone", b"\xff\xff\xff"),
    ]
    for topic, payload in hostile:
        so.publish(topic, payload)
    wait_for(lambda: len(daemon.logged("message dropped")) >= 6, what="the hostile messages dropped")
    dropped = daemon.logged("message dropped")
    assert sorted(e["topic"] for e in dropped) == sorted(t for t, _ in hostile[:6])
    assert all(e["level"] == "warning" for e in dropped)
    assert daemon.alive
    # Still serving.
    so.deploy("sim-ok", [("m1", IMAGE, [("A", "1")])])
    running_pods(core_api(status_kube), 1)
    assert len(daemon.logged("message dropped")) == 6, "each bad message logged once"


def test_broker_restart_mid_simulation_loses_nothing_and_keeps_the_lifecycle_order(
        broker: LocalMosquitto, status_kube: ControlPlane, so: SimulatorRecorder,
        make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-broker"
    models = [f"m{i}" for i in range(4)]
    so.deploy(sim, [(m, IMAGE, [("A", "1")]) for m in models])
    api = core_api(status_kube)
    names = running_pods(api, 4)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")

    broker.stop()
    wait_for(lambda: daemon.logged("mqtt connection lost, reconnecting"), what="the daemon noticing")
    for name, code in zip(names[:3], (0, 5, 0), strict=True):
        set_terminated(api, name, code)
    wait_for(lambda: len(daemon.logged("model terminated")) == 3, what="three terminations decided while down")
    broker.start()
    wait_for(lambda: len(so.terminations(sim)) == 3, timeout=30, what="terminations published after reconnecting")
    set_terminated(api, names[3], 0)
    so.wait_all_terminated(sim)
    order = [m.model_id if m.kind == "ModelHasTerminated" else m.kind for m in so.of(sim)
             if m.kind != "ErrorOccurred"]
    # Terminations travel on several outbox sessions, which keep no order among themselves (guarantees.md):
    # what holds is the lifecycle's order, and each message exactly once.
    assert len(order) == 6 and order[0] == "ModelsReady" and order[-1] == "AllModelsHaveTerminated"
    assert sorted(order[1:4]) == ["m0", "m1", "m2"] and order[4] == "m3"
    assert so.terminations(sim) == {"m0": ("SUCCESSFULL", 0), "m1": ("FAILED", 5), "m2": ("SUCCESSFULL", 0),
                                    "m3": ("SUCCESSFULL", 0)}
    assert len(daemon.logged("mqtt subscribed")) >= 2, "resubscribed after reconnecting"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_end_the_daemon_cleanly_within_ten_seconds(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory, sig: signal.Signals) -> None:
    daemon = make_daemon(status_kube)
    so.deploy("sim-sig", [(f"m{i}", IMAGE, [("A", "1")]) for i in range(3)])
    running_pods(core_api(status_kube), 3)
    daemon.signal(sig)
    assert daemon.process is not None
    assert daemon.process.wait(10) == 0
    assert daemon.logged("stopped")
    assert len(core_api(status_kube).list_namespaced_pod(NAMESPACE).items) == 3, "stopping kills no model"


def test_a_dead_long_lived_task_ends_the_process_with_an_error(
        status_kube: ControlPlane, make_daemon: DaemonFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 (the daemon's probes listen on all addresses)
        taken.listen()
        daemon = make_daemon(status_kube, http_port=taken.getsockname()[1], wait_subscribed=False)
        assert daemon.process is not None
        try:
            code = daemon.process.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon went on without its HTTP endpoints")
    assert code != 0
    assert daemon.logged("daemon failed")
