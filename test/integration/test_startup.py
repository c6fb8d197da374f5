"""Start-up: an unusable configuration fails with one clear line; TLS is verified when a CA is given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonFactory, core_api
from harness import SimulatorRecorder
from test_watch_and_secrets import running_pods

from simulation_components.local_daemon import REPO_ROOT
from simulation_components.local_kubernetes.launcher import LocalKubernetes


def start(env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "KUBERNETES_"))}
    environment.update({"HOME": str(home), "PYTHONPATH": str(REPO_ROOT), "KUBECONFIG": str(home / "none"), **env})
    return subprocess.run([sys.executable, "-m", "model_services_orchestrator"], cwd=home, env=environment,
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("env", "says"), [
    ({}, "no KUBERNETES_API_TOKEN, no in-cluster service account and no usable kubeconfig"),
    ({"KUBERNETES_API_TOKEN": "t", "MQTT_PORT": "not-a-port"}, "MQTT_PORT"),
    ({"KUBERNETES_API_TOKEN": "t", "KUBERNETES_CA_CERT": "/nonexistent/ca.pem"}, "KUBERNETES_CA_CERT"),
    ({"KUBERNETES_API_TOKEN": "t", "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
])
def test_an_unusable_configuration_fails_with_one_clear_line(env: dict[str, str], says: str,
                                                           tmp_path: Path) -> None:
    result = start(env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "configuration error" in lines[0]


@pytest.fixture
def tls_kube() -> Iterator[LocalKubernetes]:
    with LocalKubernetes(kubelet="status-only", tls=True) as kube:
        yield kube


def test_tls_is_verified_against_the_given_ca_and_the_kubelet_port_form_is_accepted(
        tls_kube: LocalKubernetes, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    assert tls_kube.ca_cert_path is not None
    daemon = make_daemon(tls_kube, kubernetes_ca_cert=tls_kube.ca_cert_path,
                         kubernetes_port=f"tcp://10.0.0.1:{tls_kube.port}")
    so.deploy("sim-tls", [("m1", "fake_model:0.0.1", [("A", "1")])])
    daemon.wait_logged("deploying models")
    running_pods(core_api(tls_kube), 1)


def test_a_wrong_ca_is_refused(tls_kube: LocalKubernetes, make_daemon: DaemonFactory) -> None:
    other = LocalKubernetes(tls=True)
    try:
        other.start()
        assert other.ca_cert_path is not None
        daemon = make_daemon(tls_kube, kubernetes_ca_cert=other.ca_cert_path, wait_subscribed=False)
        failure = daemon.wait_logged("kubernetes call failed, retrying")
        assert "CERTIFICATE_VERIFY_FAILED" in failure["detail"]
    finally:
        other.close()
