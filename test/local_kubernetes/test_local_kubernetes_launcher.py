"""The launcher and the process: fault injection, request counts, HTTPS, restart, the command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from local_kubernetes_helpers import CoreApi, core_api, pod_manifest

from simulation_components.local_kubernetes.launcher import REPO_ROOT, LocalKubernetes


def test_injected_503_then_recovery(status_kube: LocalKubernetes, api: CoreApi, namespace: str) -> None:
    status_kube.inject_fault(503, count=2, methods=["POST"], path_contains="/pods")
    try:
        for _ in range(2):
            with pytest.raises(ApiException) as error:
                api.create_namespaced_pod(namespace, pod_manifest("p"))
            assert error.value.status == 503
            assert json.loads(error.value.body or "{}")["reason"] == "ServiceUnavailable"
        api.list_namespaced_pod(namespace)  # a GET does not match the rule
        api.create_namespaced_pod(namespace, pod_manifest("p"))
    finally:
        status_kube.clear_faults()


def test_injected_429_for_some_seconds(status_kube: LocalKubernetes, api: CoreApi, namespace: str) -> None:
    status_kube.inject_fault(429, seconds=30)
    try:
        with pytest.raises(ApiException) as error:  # a POST: urllib3 retries only GETs on Retry-After
            api.create_namespaced_pod(namespace, pod_manifest("p"))
        assert error.value.status == 429
        assert error.value.headers is not None and error.value.headers["Retry-After"] == "1"
    finally:
        status_kube.clear_faults()
    api.create_namespaced_pod(namespace, pod_manifest("p"))


def test_request_counts(status_kube: LocalKubernetes, api: CoreApi, namespace: str) -> None:
    status_kube.reset_request_counts()
    api.create_namespaced_pod(namespace, pod_manifest("p"))
    api.read_namespaced_pod("p", namespace)
    api.list_namespaced_pod(namespace)
    api.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"a": "b"}}})
    list(watch.Watch().stream(api.list_namespaced_pod, namespace, timeout_seconds=1))
    counts = status_kube.request_counts()
    assert {key: counts[key] for key in ("POST pods", "GET pods", "LIST pods", "PATCH pods", "WATCH pods")} \
        == {"POST pods": 1, "GET pods": 1, "LIST pods": 1, "PATCH pods": 1, "WATCH pods": 1}
    assert counts["total"] == 5


def test_https_with_ca_verification_and_restart_on_the_same_port() -> None:
    with LocalKubernetes(tls=True, kubelet="none") as kube:
        assert kube.url.startswith("https://127.0.0.1:")
        assert kube.ca_cert_path is not None
        api = core_api(kube)
        api.create_namespaced_pod("dots", pod_manifest("p"))
        assert api.read_namespaced_pod("p", "dots").status.phase == "Pending"  # kubelet none: untouched
        old = api.list_namespaced_pod("dots").metadata.resource_version
        unverified = kube.kube_client_configuration()
        unverified.ssl_ca_cert = None  # the system CAs do not know our CA
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            client.CoreV1Api(client.ApiClient(unverified)).list_namespaced_pod("dots")
        port = kube.port
        assert kube.stop() == 0
        kube.start()
        assert kube.port == port
        api = core_api(kube)
        assert api.list_namespaced_pod("dots").items == []  # the state is gone after a restart
        with pytest.raises(ApiException) as error:  # and every old resourceVersion is too old
            list(watch.Watch().stream(api.list_namespaced_pod, "dots", resource_version=old, timeout_seconds=1))
        assert error.value.status == 410


def test_command_line_announces_the_url_and_exits_0_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulation_components.local_kubernetes", "--port", "0", "--token", "t",
         "--kubelet", "none"], stdout=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert process.stdout is not None
        announcement = json.loads(process.stdout.readline())
        assert announcement["url"] == f"http://127.0.0.1:{announcement['port']}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
