"""The DOTS lifecycle end to end: what the SO hears, what pods exist, and what the daemon logs.

Everything real but the cluster: a real Mosquitto with password auth, the
daemon as its own process, the official Kubernetes client talking HTTP to
the local API server, whose kubelet runs each model as a real process.
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
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"


def pods_of(api: kubernetes.client.CoreV1Api, simulation_id: str) -> list[kubernetes.client.V1Pod]:
    return list(api.list_namespaced_pod(NAMESPACE, label_selector=f"simulation_id={simulation_id}").items)


def test_quickstart(broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder,
                    make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(kube)
    sim = "sim02-abc"
    exit_codes = {"0-model": None, "1-model": 1, "2-model": 2, "3-model": None}
    so.deploy(sim, [(model, IMAGE, fake_model_env(broker, sim, model, exit_code=code, run_seconds=1.0))
                    for model, code in exit_codes.items()], keep_logs_hours=0.002)  # 7.2 s
    so.wait_all_terminated(sim, timeout=60)

    assert so.terminations(sim) == {"0-model": ("SUCCESSFULL", 0), "1-model": ("FAILED", 1),
                                    "2-model": ("FAILED", 2), "3-model": ("SUCCESSFULL", 0)}
    kinds = [m.kind for m in so.of(sim) if m.topic.startswith("/lifecycle/mso/")]
    assert kinds.count("AllModelsHaveTerminated") == 1 and kinds[-1] == "AllModelsHaveTerminated"
    assert kinds.count("ModelHasTerminated") == 4
    assert "ModelsReady" not in kinds, "model 1 crashed before it was ready"
    # Today's SO hears of each failure once, on the failed model's own topic.
    # (after its log is read: the last one may come after AllModelsHaveTerminated)
    wait_for(lambda: sorted(m.model_id for m in so.of(sim, "ErrorOccurred")) == ["1-model", "2-model"],
             timeout=10, what="one ErrorOccurred per failed model")

    api = core_api(kube)
    assert len(pods_of(api, sim)) == 4, "pods are kept keepLogsHours for their logs"
    wait_for(lambda: not pods_of(api, sim), timeout=30, what="pods deleted after keepLogsHours")
    failed = [e for e in daemon.log_events() if e.get("event") == "model failed"]
    assert {e["model_id"] for e in failed} == {"1-model", "2-model"}
    assert any("crashing" in line.lower() or "exit" in line.lower()
               for e in failed for line in e["last_log_lines"]), "the failed container's log tail is logged"


def test_all_ready_gives_one_models_ready_and_the_pods_are_as_specified(
        broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    make_daemon(kube, kubernetes_pull_image_secret_name="regcred")
    sim = "sim-ready"
    models = ["m1", "m2", "m3"]
    so.deploy(sim, [(m, IMAGE, [*fake_model_env(broker, sim, m, run_seconds=4.0), ("MQTT_HOST", broker.host)])
                    for m in models], simulator_id="so01", keep_logs_hours=1.0)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=30, what="ModelsReady")
    so.wait_all_terminated(sim, timeout=60)
    assert len(so.of(sim, "ModelsReady")) == 1
    messages = so.of(sim)
    assert messages.index(so.of(sim, "ModelsReady")[0]) < messages.index(so.of(sim, "ModelHasTerminated")[0])

    pod = core_api(kube).read_namespaced_pod("so01-sim-ready-m2", NAMESPACE).to_dict()
    labels = pod["metadata"]["labels"]
    assert (labels["simulator_id"], labels["simulation_id"], labels["model_id"], labels["keep_logs_hours"]) == (
        "so01", sim, "m2", "1.0")
    spec = pod["spec"]
    assert spec["restart_policy"] == "Never" and spec["node_selector"] == {"type": "worker"}
    assert [s["name"] for s in spec["image_pull_secrets"]] == ["regcred"]
    assert spec["automount_service_account_token"] is False and spec["enable_service_links"] is False
    container = spec["containers"][0]
    assert container["image"] == IMAGE and container["image_pull_policy"] == "Always"
    names = [e["name"] for e in container["env"]]
    assert names == ["MQTT_PORT", "SIMULATOR_ID", "SIMULATION_ID", "MODEL_ID", "MQTT_USERNAME",
                     "MQTT_PASSWORD", "FAKE_MODEL_RUN_SECONDS", "MQTT_HOST"], "given order, a later duplicate wins"
    password = next(e for e in container["env"] if e["name"] == "MQTT_PASSWORD")
    assert password["value"] is None and password["value_from"]["secret_key_ref"], "passwords by reference"
    assert broker.password not in str(pod), "get pods does not reveal a password"
    security = container["security_context"]
    assert security["allow_privilege_escalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert security["seccomp_profile"]["type"] == "RuntimeDefault"
