"""Start-up: an unusable configuration fails with one clear line; TLS is verified when a CA is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_services_orchestrator import __version__
from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.certificates import generate_control_plane_certificates
from simulation_components.kit import DaemonFactory, SimulatorRecorder, core_api, running_pods
from simulation_components.local_daemon import REPO_ROOT
from simulation_components.local_mosquitto import LocalMosquitto


def start(env: dict[str, str], home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "KUBERNETES_"))}
    environment.update({"HOME": str(home), "PYTHONPATH": str(REPO_ROOT), "KUBECONFIG": str(home / "none"), **env})
    return subprocess.run([sys.executable, "-m", "model_services_orchestrator", *arguments], cwd=home,
                          env=environment, capture_output=True, text=True, timeout=30, check=False)


def test_help_and_version_answer_without_starting_the_daemon(tmp_path: Path) -> None:
    usable = {"KUBERNETES_API_TOKEN": "t", "MQTT_PORT": "1"}  # enough to start (and wait for ever) otherwise
    version = start(usable, tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"model-services-orchestrator {__version__}")
    helped = start(usable, tmp_path, "--help")
    assert helped.returncode == 0 and ".env.template" in helped.stdout and helped.stderr == ""
    wrong = start(usable, tmp_path, "--bogus")
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr


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


def test_tls_is_verified_against_the_given_ca_and_the_kubelet_port_form_is_accepted(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    assert status_kube.ca_cert_path is not None
    daemon = make_daemon(status_kube, kubernetes_ca_cert=status_kube.ca_cert_path,
                         kubernetes_port=f"tcp://10.0.0.1:{status_kube.port}")
    so.deploy("sim-tls", [("m1", "fake_model:0.0.1", [("A", "1")])])
    daemon.wait_logged("deploying models")
    running_pods(core_api(status_kube), 1)


def test_a_wrong_ca_is_refused(status_kube: ControlPlane, make_daemon: DaemonFactory, tmp_path: Path) -> None:
    # A CA that signed nothing the server shows.
    other_ca = generate_control_plane_certificates(tmp_path / "other").ca_cert
    daemon = make_daemon(status_kube, kubernetes_ca_cert=other_ca, wait_subscribed=False)
    failure = daemon.wait_logged("kubernetes call failed, retrying")
    assert "CERTIFICATE_VERIFY_FAILED" in failure["detail"]


@pytest.mark.parametrize("wrong", ["password", "username"])
def test_a_refused_mqtt_login_ends_the_daemon_with_one_clear_line(
        wrong: str, status_kube: ControlPlane, broker: LocalMosquitto, make_daemon: DaemonFactory) -> None:
    # Kubernetes shows the pod in CrashLoopBackOff: what an operator looks at, rather than warnings forever.
    overrides = {"mqtt_password": "wrong-\"pass\\word"} if wrong == "password" else {"mqtt_username": "nobody"}
    daemon = make_daemon(status_kube, wait_subscribed=False, **overrides)
    assert daemon.process is not None
    code = daemon.process.wait(timeout=30)
    assert code == 1
    refused = daemon.logged("mqtt login refused")
    assert len(refused) == 1 and refused[0]["level"] == "critical"
    assert "refused the login" in refused[0]["detail"] and "exception" not in refused[0]
    assert not daemon.logged("mqtt connection lost, reconnecting")
    assert "pass\\\\word" not in daemon.log_text() and "pass\\word" not in daemon.log_text()
