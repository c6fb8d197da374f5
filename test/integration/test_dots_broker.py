"""Behind the broker DOTS ships (no persistence, QoS 0 not queued for absent clients) a daemon restart loses
the ReadyForProcessing sent meanwhile: the models are restarted once, before ModelsReady, so they announce
themselves again, and nobody waits for ever.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    fake_model_env,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"


@pytest.fixture
def broker() -> Iterator[LocalMosquitto]:
    """Mosquitto as DOTS ships it: the project's settings, less the two that keep what an absent client misses."""
    with LocalMosquitto(password=f"mqtt-{secrets.token_hex(8)}",
                        extra_config=("persistence false", "queue_qos0_messages false")) as mosquitto:
        yield mosquitto


def announced(kube: ControlPlane, count: int) -> bool:
    """Whether ``count`` pods' models have sent their ReadyForProcessing, as their logs say."""
    api = core_api(kube)
    names = [pod.metadata.name for pod in api.list_namespaced_pod(NAMESPACE).items if pod.metadata]
    # An empty log (a model that has printed nothing yet) comes back as None from the client.
    return sum("ReadyForProcessing sent" in (api.read_namespaced_pod_log(name, NAMESPACE) or "")
               for name in names if name) >= count


def test_readies_lost_while_the_daemon_was_away_are_announced_again_by_restarted_models(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    sim = "sim-lost-readies"
    models = ["m1", "m2", "m3"]
    daemon = make_daemon(kube, READY_SETTLE_SECONDS=3)
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m, run_seconds=600, start_seconds=4)) for m in models])
    wait_for(lambda: len(core_api(kube).list_namespaced_pod(NAMESPACE).items) == 3, timeout=30, what="three pods")
    daemon.kill()
    wait_for(lambda: announced(kube, 3), timeout=30, what="the models announcing themselves to nobody")
    restarted = make_daemon(kube, READY_SETTLE_SECONDS=3)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=60, what="ModelsReady after the restarts")
    assert len(restarted.logged("model restarted: its ReadyForProcessing was not heard since the broker "
                                "connection")) == 3
    assert so.of(sim, "ModelHasTerminated") == [], "the pods replaced are not reported lost"
    for model in models:
        so.publish(f"/lifecycle/dots-so/model/{sim}/{model}/SimulationDone", qos=0)
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {m: ("SUCCESSFULL", 0) for m in models}
    assert len(so.of(sim, "ModelsReady")) == 1
    assert isinstance(kube, ControlPlane)
    wait_for(lambda: not kube.kubelet_children(), timeout=30, what="no model process left running")


def test_a_broker_back_without_our_session_is_warned_about_once(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(kube)
    so.deploy("sim-warned", [("m1", IMAGE, fake_model_env(broker, "sim-warned", "m1", run_seconds=600))])
    wait_for(lambda: so.of("sim-warned", "ModelsReady"), timeout=30, what="ModelsReady")
    broker.stop()
    broker.start()
    [warning] = wait_for(lambda: daemon.logged(
        "the broker came back without our session: what was sent to us while away is lost"), timeout=60,
        what="the warning")
    assert "queue_qos0_messages" in warning["broker_settings"] and "operations.md" in warning["see"]
