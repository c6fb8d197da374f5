"""One simulation through every fault at once; the SO's recording must come out exactly right.

Twenty-four models; the daemon is SIGKILLed twice, Mosquitto restarts once,
and the API server answers 429 and 503 for a while. The SO must hear one
ModelsReady, one ModelHasTerminated per model with the right status and
code, one AllModelsHaveTerminated last, and nothing may be left in the
cluster after keepLogsHours.
"""

from __future__ import annotations

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    left_in_namespace,
    ready,
    ready_in_record,
    running_pods,
    set_terminated,
    settled_in_record,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"
MODELS = 24


def test_faults_everywhere_and_the_so_hears_exactly_the_truth(
        broker: LocalMosquitto, status_kube: ControlPlane, so: SimulatorRecorder,
        make_daemon: DaemonFactory) -> None:
    sim = "sim-faults"
    models = [f"model-{i:02d}" for i in range(MODELS)]
    expected_codes = {model: (0 if i % 4 else i % 7 + 1) for i, model in enumerate(models)}
    api = core_api(status_kube)

    daemon = make_daemon(status_kube)
    daemons = [daemon]
    status_kube.inject_fault(429, count=10, methods=["POST"], path_contains="/pods")
    so.deploy(sim, [(m, IMAGE, [("MODEL_ID", m)]) for m in models], keep_logs_hours=0.0005)  # 1.8 s
    names = running_pods(api, MODELS)
    by_model = {model: next(n for n in names if n.endswith(model)) for model in models}

    ready(so, sim, *models[:12])
    # What a daemon has received at QoS 0 but not yet recorded dies with it (docs/guarantees.md).
    wait_for(lambda: ready_in_record(api, sim) == set(models[:12]), what="the first readiness recorded")
    daemon.kill()                                                      # first SIGKILL
    ready(so, sim, *models[12:])                                       # while it is down
    daemon = make_daemon(status_kube, wait_subscribed=False)
    daemons.append(daemon)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady after the first restart")

    for model in models[:6]:
        set_terminated(api, by_model[model], expected_codes[model])
    broker.stop()                                                      # Mosquitto restarts
    for model in models[6:12]:
        set_terminated(api, by_model[model], expected_codes[model])
    broker.start()
    wait_for(lambda: len(so.terminations(sim)) == 12, timeout=30, what="12 terminations across the broker restart")
    # Killed once the record says they were delivered: a kill before that makes the next daemon send them
    # again (docs/guarantees.md, "The limits").
    wait_for(lambda: settled_in_record(api, sim), what="the 12 terminations delivered in the record")

    daemon.kill()                                                      # second SIGKILL
    for model in models[12:18]:
        set_terminated(api, by_model[model], expected_codes[model])
    status_kube.inject_fault(503, seconds=2)                           # the API server struggles
    daemon = make_daemon(status_kube, wait_subscribed=False)
    daemons.append(daemon)
    wait_for(lambda: len(so.terminations(sim)) == 18, timeout=30, what="terminations that happened while down")
    for model in models[18:]:
        set_terminated(api, by_model[model], expected_codes[model])
    so.wait_all_terminated(sim)

    lifecycle = [m for m in so.of(sim) if m.kind != "ErrorOccurred"]
    assert [m.kind for m in lifecycle].count("ModelsReady") == 1
    assert [m.kind for m in lifecycle].count("ModelHasTerminated") == MODELS
    assert [m.kind for m in lifecycle].count("AllModelsHaveTerminated") == 1
    assert lifecycle[-1].kind == "AllModelsHaveTerminated"
    assert so.terminations(sim) == {
        model: ("SUCCESSFULL" if code == 0 else "FAILED", code) for model, code in expected_codes.items()}
    failed = sorted(m for m, code in expected_codes.items() if code)
    wait_for(lambda: len(so.of(sim, "ErrorOccurred")) >= len(failed), what="ErrorOccurred of each failed model")
    assert sorted(m.model_id for m in so.of(sim, "ErrorOccurred")) == failed

    wait_for(lambda: not api.list_namespaced_pod(NAMESPACE).items, timeout=30, what="no pod left behind")
    wait_for(lambda: not left_in_namespace(api), what="no record left behind")
    # By the first daemon (the 429s) at least: the third may come up after the 503s' two seconds.
    assert any(d.logged("kubernetes call failed, retrying") for d in daemons), "the faults were really met"
