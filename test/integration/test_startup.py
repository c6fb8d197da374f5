"""Start-up: an unusable configuration fails with one clear line; TLS is verified when a CA is given.

What only trying finds (a refused token, a namespace the daemon may not use or that does not exist, a broker
that never answers) ends the daemon too, with exit code 2 and one critical line naming the setting to fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model_services_orchestrator import __version__
from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.api import ApiError
from simulation_components.control_plane.certificates import generate_control_plane_certificates
from simulation_components.kit import Daemon, DaemonFactory, SimulatorRecorder, core_api, running_pods
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
    assert not daemon.logged(TLS_UNVERIFIED)


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


# ---------------------------------------------------------------- found by trying: exit code 2, one line

TLS_UNVERIFIED = ("the Kubernetes API server's TLS certificate is not verified: any server can pose as it and "
                  "receive the token; set KUBERNETES_CA_CERT to the CA file of the API server")
# Generous: a refusal counts after 4 s of asking again, a broker after its MQTT_CONNECT_TIMEOUT_SECONDS; a busy
# machine may take much longer to start the daemon and get there.
EXIT_WITHIN = 120.0


def ended_with_one_clear_line(daemon: Daemon, *settings: str) -> dict[str, Any]:
    """The daemon exited 2, its whole output JSON lines with no traceback, exactly one of them an error: the
    critical ``cannot start`` naming ``settings``, which is returned."""
    assert daemon.process is not None
    code = daemon.process.wait(timeout=EXIT_WITHIN)
    text = daemon.log_text()
    assert code == 2, text[-4000:]
    assert "Traceback" not in text
    lines = text.splitlines()
    events = [json.loads(line) for line in lines]  # every line: nothing printed beside the log
    errors = [event for event in events if event["level"] in ("error", "critical")]
    assert len(errors) == 1, errors
    failure: dict[str, Any] = errors[0]
    assert (failure["event"], failure["level"], failure["settings"]) == ("cannot start", "critical", list(settings))
    assert "exception" not in failure
    for setting in settings:
        assert setting in failure["detail"]
    return failure


def test_a_refused_token_ends_the_daemon_with_one_line_naming_it(
        status_kube: ControlPlane, make_daemon: DaemonFactory) -> None:
    # With leader election (the default): a standby with this token would otherwise wait for the Lease for ever.
    daemon = make_daemon(status_kube, wait_subscribed=False, kubernetes_api_token="not-a-token-of-this-cluster")
    failure = ended_with_one_clear_line(daemon, "KUBERNETES_API_TOKEN")
    assert "401" in failure["detail"]
    assert not daemon.logged("leading") and not daemon.logged("mqtt connected")


@pytest.fixture
def namespace_without_the_role(status_kube: ControlPlane) -> Iterator[str]:
    """A namespace that exists, where the daemon's Role (namespace dots) gives its token nothing."""
    name = "mso-startup-other"
    try:
        status_kube.request("POST", "/api/v1/namespaces",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as exc:
        if exc.status != 409:  # left by an earlier run: as good
            raise
    yield name
    with contextlib.suppress(ApiError):
        status_kube.request("DELETE", f"/api/v1/namespaces/{name}")


def test_a_namespace_the_role_does_not_cover_ends_the_daemon_with_one_line_naming_it(
        status_kube: ControlPlane, make_daemon: DaemonFactory, namespace_without_the_role: str) -> None:
    assert status_kube.request("GET", f"/api/v1/namespaces/{namespace_without_the_role}")  # RBAC's 403, not a 404
    daemon = make_daemon(status_kube, wait_subscribed=False, kubernetes_namespace=namespace_without_the_role)
    failure = ended_with_one_clear_line(daemon, "KUBERNETES_NAMESPACE", "KUBERNETES_API_TOKEN")
    assert "403" in failure["detail"] and repr(namespace_without_the_role) in failure["detail"]
    assert "does not exist, or no Role there" in failure["detail"]  # RBAC answers a missing one alike


def test_a_namespace_that_does_not_exist_ends_the_daemon_with_one_line_naming_it(
        status_kube: ControlPlane, make_daemon: DaemonFactory) -> None:
    # The daemon's own token: RBAC refuses before anyone looks for the namespace, so 403, said as such.
    daemon = make_daemon(status_kube, wait_subscribed=False, kubernetes_namespace="mso-nowhere")
    failure = ended_with_one_clear_line(daemon, "KUBERNETES_NAMESPACE", "KUBERNETES_API_TOKEN")
    assert "'mso-nowhere'" in failure["detail"] and "does not exist" in failure["detail"]


def test_a_namespace_that_does_not_exist_is_named_as_such_to_a_token_allowed_everywhere(
        status_kube: ControlPlane, make_daemon: DaemonFactory) -> None:
    # A token allowed in every namespace lists an empty one there; the dry-run create hears the truth (404).
    daemon = make_daemon(status_kube, wait_subscribed=False, kubernetes_namespace="mso-nowhere",
                         kubernetes_api_token=status_kube.admin_token)
    failure = ended_with_one_clear_line(daemon, "KUBERNETES_NAMESPACE")
    assert "'mso-nowhere': the namespace does not exist" in failure["detail"]


@pytest.mark.parametrize("where", ["refused", "unresolvable"])
def test_a_broker_that_never_answers_ends_the_daemon_with_one_line_naming_host_and_port(
        where: str, status_kube: ControlPlane, make_daemon: DaemonFactory, unused_tcp_port: int) -> None:
    host, port = ("127.0.0.1", unused_tcp_port) if where == "refused" else ("nonexistent.invalid", 1883)
    daemon = make_daemon(status_kube, wait_subscribed=False, mqtt_host=host, mqtt_port=port,
                         mqtt_connect_timeout_seconds=3)
    failure = ended_with_one_clear_line(daemon, "MQTT_HOST", "MQTT_PORT")
    assert f"{host}:{port}" in failure["detail"]
    assert daemon.logged("mqtt connection failed, retrying"), "the attempts are logged as they fail"
    assert not daemon.logged("mqtt connection lost, reconnecting"), "nothing was lost: it never connected"
    assert not daemon.logged("mqtt outbox connection lost, reconnecting")


def test_a_token_without_a_ca_is_used_with_one_warning_that_tls_is_not_verified(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube, kubernetes_ca_cert="")  # empty is unset
    warnings = daemon.logged(TLS_UNVERIFIED)
    assert len(warnings) == 1
    assert (warnings[0]["level"], warnings[0]["setting"]) == ("warning", "KUBERNETES_CA_CERT")
    so.deploy("sim-unverified", [("m1", "fake_model:0.0.1", [("A", "1")])])  # and it works, as upstream did
    running_pods(core_api(status_kube), 1)
