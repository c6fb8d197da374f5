"""The fault proxy in front of the real kube-apiserver: transparent when told nothing, the tests' faults
when told, watches forwarded event by event and cut cleanly, the API down and back on the same port.

One ``ControlPlane(kubelet="none", fault_proxy=True)`` serves the module.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulation_components.control_plane.api import ApiError, call
from simulation_components.control_plane.fault_proxy import request_kind
from simulation_components.control_plane.launcher import ControlPlane

PODS = "/api/v1/namespaces/dots/pods"
CONFIGMAPS = "/api/v1/namespaces/dots/configmaps"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(kubelet="none", fault_proxy=True) as started:
        yield started


@pytest.fixture(autouse=True)
def fresh(plane: ControlPlane) -> None:
    plane.reset()


def daemon_call(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    """A call through the proxy with the daemon's own token."""
    return call(method, f"{plane.url}{path}", body, token=plane.token, ca_cert=plane.ca_cert_path)


def connection(plane: ControlPlane) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", plane.port, timeout=10,
                                       context=ssl.create_default_context(cafile=str(plane.ca_cert_path)))


@pytest.mark.parametrize(("method", "path", "watch", "kind"), [
    ("GET", PODS, False, ("LIST pods", False)),
    ("GET", PODS, True, ("WATCH pods", True)),
    ("GET", "/api/v1/watch/namespaces/dots/pods", False, ("WATCH pods", True)),
    ("GET", f"{PODS}/p1", False, ("GET pods", False)),
    ("GET", f"{PODS}/p1/log", False, ("GET pods/log", False)),
    ("PATCH", f"{PODS}/p1/status", False, ("PATCH pods/status", False)),
    ("DELETE", PODS, False, ("DELETECOLLECTION pods", False)),
    ("DELETE", f"{CONFIGMAPS}/c", False, ("DELETE configmaps", False)),
    ("GET", "/api/v1/namespaces", False, ("LIST namespaces", False)),
    ("GET", "/api/v1/namespaces/dots", False, ("GET namespaces", False)),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/dots/roles", False, ("LIST roles", False)),
    ("GET", "/version", False, ("GET other", False)),
])
def test_requests_are_counted_by_verb_and_resource(method: str, path: str, watch: bool,
                                                          kind: tuple[str, bool]) -> None:
    assert request_kind(method, path, watch) == kind


def test_the_callers_own_token_is_what_the_server_authorises(plane: ControlPlane) -> None:
    assert daemon_call(plane, "GET", PODS)["items"] == []
    with pytest.raises(ApiError) as forbidden:
        daemon_call(plane, "GET", "/api/v1/namespaces")
    assert forbidden.value.status == 403 and "system:serviceaccount:dots:model-services-orchestrator" in str(
        forbidden.value)
    with pytest.raises(ApiError) as anonymous:
        call("GET", f"{plane.url}{PODS}", ca_cert=plane.ca_cert_path)
    assert anonymous.value.status == 403 and 'User "system:anonymous"' in str(anonymous.value)
    assert plane.request_counts() == {"LIST namespaces": 1, "LIST pods": 2, "total": 3,
                                      "by_status": {"200": 1, "403": 2}}


def test_faults_match_by_verb_and_path_for_a_count_or_for_seconds(plane: ControlPlane) -> None:
    plane.inject_fault(429, count=1, methods=["LIST"], path_contains="/pods")
    plane.inject_fault(503, seconds=0.5, methods=["POST"])
    with pytest.raises(ApiError) as throttled:
        daemon_call(plane, "GET", PODS)
    assert throttled.value.status == 429
    assert throttled.value.body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": "Too many requests, please try again later.",
                                    "reason": "TooManyRequests", "details": {"retryAfterSeconds": 1}, "code": 429}
    assert daemon_call(plane, "GET", PODS)["items"] == [], "the count is used up"
    assert daemon_call(plane, "GET", CONFIGMAPS)["items"][0]["metadata"]["name"] == "kube-root-ca.crt"
    record = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}}
    with pytest.raises(ApiError) as unavailable:
        daemon_call(plane, "POST", CONFIGMAPS, record)
    assert (unavailable.value.status, unavailable.value.reason) == (503, "ServiceUnavailable")
    time.sleep(0.6)
    daemon_call(plane, "POST", CONFIGMAPS, record)
    assert plane.request_counts()["by_status"] == {"200": 2, "201": 1, "429": 1, "503": 1}
    connection_ = connection(plane)
    plane.inject_fault(429, count=1)
    connection_.request("GET", PODS, headers={"Authorization": f"Bearer {plane.token}"})
    answer = connection_.getresponse()
    assert (answer.status, answer.getheader("Retry-After")) == (429, "1")


def test_a_watch_is_forwarded_event_by_event_and_cut_cleanly(plane: ControlPlane) -> None:
    connection_ = connection(plane)
    connection_.request("GET", f"{CONFIGMAPS}?watch=true&resourceVersion=0&allowWatchBookmarks=false",
                        headers={"Authorization": f"Bearer {plane.admin_token}"})
    answer = connection_.getresponse()
    assert answer.status == 200
    first = json.loads(answer.readline())
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "kube-root-ca.crt")
    # Not buffered: an event made while the stream is open arrives while it is still open.
    created = threading.Timer(0.2, lambda: daemon_call(
        plane, "POST", CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}))
    created.start()
    second = json.loads(answer.readline())
    assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "late")
    assert plane.close_watches() == 1
    assert answer.read() == b"", "a clean end: the chunked stream's last chunk, no half event"
    assert plane.close_watches() == 0


def test_stopped_the_api_is_unreachable_on_its_port_until_started(plane: ControlPlane) -> None:
    kept = connection(plane)
    kept.request("GET", PODS, headers={"Authorization": f"Bearer {plane.token}"})
    assert kept.getresponse().read()
    plane.stop()
    assert plane.running, "only the proxy stopped accepting: the control plane runs on"
    with pytest.raises(ConnectionRefusedError):
        daemon_call(plane, "GET", PODS)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        kept.request("GET", PODS, headers={"Authorization": f"Bearer {plane.token}"})
        kept.getresponse()
    plane.start()
    assert daemon_call(plane, "GET", PODS)["items"] == []


def test_410_expired_the_real_way(plane: ControlPlane) -> None:
    listed = daemon_call(plane, "GET", PODS)
    version = listed["metadata"]["resourceVersion"]
    plane.expire_watches_with_410()
    events = daemon_call(plane, "GET", f"{PODS}?watch=true&resourceVersion={version}&timeoutSeconds=1")
    assert [event["type"] for event in events] == ["ERROR"]
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
