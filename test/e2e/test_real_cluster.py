"""The quickstart against a real cluster: the one ``KUBECONFIG`` points at, set up by
``simulation_components/setup_kind_cluster.sh``.

The orchestrator runs in the cluster from the manifests; this test plays the
SO through the cluster's broker (port-forwarded) and the fake models run as
real pods. Skipped, saying why, when no such cluster is at hand.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

try:
    import kubernetes.config
    from kubernetes.client import CoreV1Api
except ImportError:  # pragma: no cover
    pytest.skip("the kubernetes client is not installed", allow_module_level=True)


def _cluster_or_skip() -> CoreV1Api:
    if os.environ.get("MSO_E2E") != "1":
        pytest.skip("set MSO_E2E=1 (and see simulation_components/setup_kind_cluster.sh) to run against a "
                    "real cluster", allow_module_level=True)
    try:
        kubernetes.config.load_kube_config()
        api = CoreV1Api()
        api.list_namespaced_pod("dots", limit=1, _request_timeout=5)
    except Exception as exc:  # noqa: BLE001 (any reason the cluster cannot be used is a reason to skip)
        pytest.skip(f"no usable cluster behind KUBECONFIG: {exc}", allow_module_level=True)
    return api


API = _cluster_or_skip()

from simulation_components.kit import SimulatorRecorder, wait_for  # noqa: E402 (only once a cluster is known to be there)


@dataclass(frozen=True)
class ClusterBroker:
    """The cluster's broker as the test reaches it (port-forwarded)."""

    host: str = "127.0.0.1"
    port: int = int(os.environ.get("MSO_E2E_MQTT_PORT", "18830"))
    username: str = os.environ.get("MSO_E2E_MQTT_USERNAME", "dots")
    password: str = os.environ.get("MSO_E2E_MQTT_PASSWORD", "")


def test_quickstart_on_a_real_cluster() -> None:
    broker = ClusterBroker()
    so = SimulatorRecorder(broker)
    sim = f"e2e-{int(time.time())}"
    models = {"0-model": None, "1-model": 1, "2-model": 2, "3-model": None}
    inside = [("MQTT_HOST", "mosquitto"), ("MQTT_PORT", "1883"), ("MQTT_USERNAME", broker.username),
              ("MQTT_PASSWORD", broker.password), ("FAKE_MODEL_RUN_SECONDS", "5")]
    try:
        so.deploy(sim, [(m, "fake_model:0.0.1", [*inside, ("SIMULATION_ID", sim), ("MODEL_ID", m),
                                                  *([("EXIT_CODE", str(code))] if code else [])])
                        for m, code in models.items()], keep_logs_hours=0.002)
        so.wait_all_terminated(sim, timeout=300)
        assert so.terminations(sim) == {"0-model": ("SUCCESSFULL", 0), "1-model": ("FAILED", 1),
                                        "2-model": ("FAILED", 2), "3-model": ("SUCCESSFULL", 0)}
        assert not so.of(sim, "ModelsReady")
        wait_for(lambda: not API.list_namespaced_pod("dots", label_selector=f"simulation_id={sim}").items,
                 timeout=120, what="pods deleted after keepLogsHours")
    finally:
        so.close()
