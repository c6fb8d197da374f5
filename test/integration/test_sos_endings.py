"""Today's SO ends failed and deleted simulations with a SimulationDone to each model, often while the models
still start: nothing may run for ever and nothing may wait for ever (PROTOCOL.md section 4).

The fake models listen to their SimulationDone only from just before they announce themselves, as models
made from the DOTS template do, so a SimulationDone sent earlier passes them by.
"""

from __future__ import annotations

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
MISSING_IMAGE = "registry.example/nothing-here:1"


def end_each(so: SimulatorRecorder, simulation_id: str, models: list[str]) -> None:
    """What today's SO does to end a simulation: SimulationDone to every model, at QoS 0."""
    for model in models:
        so.publish(f"/lifecycle/dots-so/model/{simulation_id}/{model}/SimulationDone", qos=0)


def running_pods(kube: ControlPlane) -> int:
    return sum(1 for pod in core_api(kube).list_namespaced_pod(NAMESPACE).items
               if pod.status and pod.status.phase == "Running")


def no_model_process_left(kube: ControlPlane) -> None:
    assert isinstance(kube, ControlPlane)
    wait_for(lambda: not kube.kubelet_children(), timeout=30, what="no model process left running")


def assert_answered_once(so: SimulatorRecorder, simulation_id: str, models: list[str]) -> None:
    assert sorted(message.model_id for message in so.of(simulation_id, "ModelHasTerminated")) == sorted(models)
    assert len(so.of(simulation_id, "AllModelsHaveTerminated")) == 1


def test_a_missing_image_ends_the_simulation_and_the_slow_starters_are_stopped(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kube, MODEL_STOP_GRACE_SECONDS=2)
    sim = "sim-missing-and-slow"
    slow = ["s1", "s2"]
    so.deploy(sim, [("bad", MISSING_IMAGE, []),
                    *((m, IMAGE, fake_model_env(broker, sim, m, run_seconds=600, start_seconds=8)) for m in slow)])
    wait_for(lambda: so.of(sim, "ErrorOccurred"), timeout=60, what="the missing image's ErrorOccurred")
    end_each(so, sim, ["bad", *slow])  # before the slow starters listen
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {"bad": ("FAILED", -2), "s1": ("FAILED", -4), "s2": ("FAILED", -4)}
    assert_answered_once(so, sim, ["bad", *slow])
    assert so.of(sim, "ModelsReady") == []
    no_model_process_left(kube)


def test_a_simulation_deleted_during_its_deploy_gets_no_models_ready_from_readies_after_its_end(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kube, MODEL_STOP_GRACE_SECONDS=8)
    sim = "sim-deleted"
    models = ["m1", "m2", "m3"]
    so.client.subscribe(f"/lifecycle/model/mso/{sim}/+/ReadyForProcessing", 0)
    so.deploy(sim, [(m, IMAGE, fake_model_env(broker, sim, m, run_seconds=600, start_seconds=3)) for m in models])
    wait_for(lambda: running_pods(kube) == 3, timeout=30, what="the models starting")
    end_each(so, sim, models)  # the SO deleted the simulation
    # The models announce themselves after it (they never heard it); a ModelsReady now would crash the SO.
    wait_for(lambda: len(so.of(sim, "ReadyForProcessing")) == 3, timeout=30, what="the readies after the end")
    so.wait_all_terminated(sim, timeout=60)
    assert so.of(sim, "ModelsReady") == []
    assert so.terminations(sim) == {m: ("FAILED", -4) for m in models}
    assert_answered_once(so, sim, models)
    no_model_process_left(kube)


def test_a_model_hung_after_its_simulation_done_is_stopped_after_the_finish_timeout(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(kube, MODEL_FINISH_TIMEOUT_SECONDS=4)
    sim = "sim-hung"
    so.deploy(sim, [("ok", IMAGE, fake_model_env(broker, sim, "ok", run_seconds=600, finish_seconds=1)),
                    ("hung", IMAGE, fake_model_env(broker, sim, "hung", run_seconds=600, hang=True))])
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=30, what="ModelsReady")
    end_each(so, sim, ["ok", "hung"])
    so.wait_all_terminated(sim, timeout=60)
    assert so.terminations(sim) == {"ok": ("SUCCESSFULL", 0), "hung": ("FAILED", -4)}
    [warning] = [event for event in daemon.logged("model terminated") if event.get("exit_code") == -4]
    assert warning["level"] == "warning" and "MODEL_FINISH_TIMEOUT_SECONDS" in warning["reason"]
    assert_answered_once(so, sim, ["ok", "hung"])
    no_model_process_left(kube)
