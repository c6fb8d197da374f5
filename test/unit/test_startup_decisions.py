"""Start-up failures: what a refusal of the first calls means, and a broker that never answers a first connection.

The daemon itself, failing at start against the real control plane and a real broker, is tested in
test/integration/test_startup.py; here the pure decisions and the MQTT sessions' bounded first connection,
against a port on which nothing listens.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from structlog.testing import capture_logs

from model_services_orchestrator.kube_errors import (
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
)
from model_services_orchestrator.mqtt_outbox import MqttOutbox
from model_services_orchestrator.mqtt_session import BrokerUnreachableError, MqttSession, MqttSettings
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.startup import EXIT_CONFIGURATION, broker_unreachable, kube_refusal

SERVER = "https://10.0.0.1:6443"


def refusal(error: KubeError, namespace: str = "other", credentials: str = "KUBERNETES_API_TOKEN") -> str:
    failure = kube_refusal(error, namespace=namespace, credentials=credentials, server=SERVER)
    assert failure is not None
    text = str(failure)
    assert "\n" not in text
    return text


def test_the_exit_code_of_a_configuration_to_fix_is_2() -> None:
    assert EXIT_CONFIGURATION == 2


def test_a_refused_token_names_where_the_token_comes_from() -> None:
    error = Unauthorized("Unauthorized", reason="Unauthorized", what="list pods")
    failure = kube_refusal(error, namespace="dots", credentials="KUBERNETES_API_TOKEN", server=SERVER)
    assert failure is not None and failure.settings == ("KUBERNETES_API_TOKEN",)
    assert "401" in str(failure) and SERVER in str(failure) and "set KUBERNETES_API_TOKEN" in str(failure)
    kubeconfig = refusal(error, credentials="the kubeconfig (KUBECONFIG or ~/.kube/config)")
    assert "the kubeconfig (KUBECONFIG" in kubeconfig


def test_a_forbidden_namespace_says_both_what_rbac_cannot_tell_apart() -> None:
    message = ('pods is forbidden: User "system:serviceaccount:dots:model-services-orchestrator" cannot list '
               'resource "pods" in API group "" in the namespace "other"')
    error = Forbidden(message, reason="Forbidden", what="list pods")
    failure = kube_refusal(error, namespace="other", credentials="KUBERNETES_API_TOKEN", server=SERVER)
    assert failure is not None and failure.settings == ("KUBERNETES_NAMESPACE", "KUBERNETES_API_TOKEN")
    text = str(failure)
    assert text.startswith("KUBERNETES_NAMESPACE 'other': the token of KUBERNETES_API_TOKEN may not list pods there")
    assert "does not exist, or no Role there" in text and message in text


def test_a_missing_namespace_told_by_the_server_is_said_so() -> None:
    error = NotFound('namespaces "nowhere" not found', reason="NotFound", what="create configmaps")
    failure = kube_refusal(error, namespace="nowhere", credentials="KUBERNETES_API_TOKEN", server=SERVER)
    assert failure is not None and failure.settings == ("KUBERNETES_NAMESPACE",)
    assert "'nowhere': the namespace does not exist" in str(failure)


@pytest.mark.parametrize("error", [
    Unreachable("connection refused", reason="ConnectionRefusedError", what="list pods"),
    ServerError("etcd timeout", status=503, what="list pods"),
    TooManyRequests("slow down", what="list pods"),
    NotFound("the page you asked for", reason="Not Found", what="list pods"),  # not the API server's namespace 404
    Invalid("bad request", status=400, what="create configmaps"),
    KubeError("method not allowed", status=405, what="list pods"),
])
def test_what_proves_nothing_about_the_settings_is_no_start_up_failure(error: KubeError) -> None:
    assert kube_refusal(error, namespace="nowhere", credentials="KUBERNETES_API_TOKEN", server=SERVER) is None


def test_an_unreachable_broker_names_host_port_and_settings() -> None:
    failure = broker_unreachable(host="nonexistent.invalid", port=1883, waited_seconds=60.2,
                                 last_error="cannot connect: [Errno -2] Name or service not known")
    assert failure.settings == ("MQTT_HOST", "MQTT_PORT")
    text = str(failure)
    assert "nonexistent.invalid:1883 in 60 s" in text and "MQTT_HOST and MQTT_PORT" in text
    assert "Name or service not known" in text


@pytest.mark.parametrize(("env", "unverified"), [
    ({"KUBERNETES_API_TOKEN": "t"}, True),
    ({"KUBERNETES_API_TOKEN": "t", "KUBERNETES_CA_CERT": "/ca.pem"}, False),
    ({"KUBERNETES_API_TOKEN": "t", "KUBERNETES_SCHEME": "http"}, False),  # no TLS at all: nothing to verify
    ({"KUBERNETES_API_TOKEN": ""}, False),  # in-cluster or kubeconfig, which bring their CA
])
def test_tls_is_unverified_only_with_a_token_over_https_and_no_ca(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], unverified: bool) -> None:
    for name in ("KUBERNETES_API_TOKEN", "KUBERNETES_CA_CERT", "KUBERNETES_SCHEME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).api_tls_unverified is unverified  # type: ignore[call-arg]


def test_the_first_connection_timeout_defaults_to_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MQTT_CONNECT_TIMEOUT_SECONDS", raising=False)
    assert Settings(_env_file=None).mqtt_connect_timeout_seconds == 60.0  # type: ignore[call-arg]
    monkeypatch.setenv("MQTT_CONNECT_TIMEOUT_SECONDS", "inf")
    assert Settings(_env_file=None).mqtt_connect_timeout_seconds == float("inf")  # type: ignore[call-arg]


# ---------------------------------------------------------------- the sessions, against a port nobody listens on


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _settings(port: int, timeout: float) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, username="", password="", client_id="mso-unit", keepalive=30,
                        subscriptions=("dots/#",), first_connect_timeout=timeout)


async def _ends(run: asyncio.Task[None], within: float) -> BaseException | None:
    try:
        async with asyncio.timeout(within):
            await run
    except BrokerUnreachableError as exc:
        return exc
    return None


@pytest.mark.parametrize("kind", ["session", "outbox"])
def test_a_broker_that_never_answers_ends_the_first_connection_in_bounded_time(kind: str) -> None:
    port = _unused_port()

    async def attempt() -> tuple[BaseException | None, float]:
        settings = _settings(port, timeout=1.5)
        client = (MqttSession(settings=settings, on_message=lambda _topic, _payload, _ack: None) if kind == "session"
                  else MqttOutbox(settings=settings))
        started = time.monotonic()
        # Generous: a busy machine may be slow to refuse, but the bound holds whatever the backoff.
        error = await _ends(asyncio.create_task(client.run()), within=30.0)
        return error, time.monotonic() - started

    with capture_logs() as logs:
        error, took = asyncio.run(attempt())
    assert isinstance(error, BrokerUnreachableError)
    assert (error.host, error.port) == ("127.0.0.1", port) and error.waited_seconds >= 1.5
    assert "refused" in error.last_error.lower()
    assert 1.5 <= took < 20.0
    events = [entry["event"] for entry in logs]
    assert events, "each failed attempt is logged"
    assert all("connection failed, retrying" in event for event in events), events
    assert not any("lost" in event for event in events), "nothing was lost: it never connected"


def test_an_infinite_first_connection_timeout_retries_for_ever() -> None:
    port = _unused_port()

    async def attempt() -> BaseException | None:
        session = MqttSession(settings=_settings(port, timeout=float("inf")),
                              on_message=lambda _topic, _payload, _ack: None)
        with pytest.raises(TimeoutError):
            await _ends(asyncio.create_task(session.run()), within=2.0)
        return None

    asyncio.run(attempt())
