"""Helpers of the local Kubernetes server tests: test images, the client, waiting with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from kubernetes import client

from simulation_components.local_kubernetes.launcher import LocalKubernetes

T = TypeVar("T")

# The generated client types every model field as Optional and every body as a model class; the tests
# pass plain dicts and check the shapes at run time, so they see the API through Any.
CoreApi: TypeAlias = Any

# Tiny "images": argv run by the process kubelet ({python} is the server's interpreter).
IMAGES: dict[str, list[str] | None] = {
    "hello:1": ["{python}", "-c", (
        "import os, sys\n"
        "print('FOO=' + os.environ.get('FOO', ''))\n"
        "print('DUP=' + os.environ.get('DUP', ''))\n"
        "print('PASSWORD=' + os.environ.get('PASSWORD', ''))\n"
        "print('SETTING=' + os.environ.get('SETTING', ''))\n"
        "print('PYTHONPATH_OK=' + str(os.environ.get('PYTHONPATH', '').startswith(os.getcwd())))\n"
        "for i in range(int(os.environ.get('LINES', '3'))): print(f'line {i}')\n"
        "sys.exit(int(os.environ.get('EXIT_CODE', '0')))\n")],
    "sleeper:1": ["{python}", "-c", (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n")],
    "stubborn:1": ["{python}", "-c", (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n")],
    "missing:1": None,
}

def core_api(kube: LocalKubernetes) -> CoreApi:
    """The official client's CoreV1Api against ``kube``."""
    return client.CoreV1Api(client.ApiClient(kube.kube_client_configuration()))



def wait_for(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pod_manifest(name: str, *, image: str = "hello:1", labels: dict[str, str] | None = None,
                 env: list[dict[str, Any]] | None = None, node_selector: dict[str, str] | None = None,
                 restart_policy: str = "Never", grace: int | None = None) -> dict[str, Any]:
    """A pod like the orchestrator creates: one container, restartPolicy Never, nodeSelector type=worker."""
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "nodeSelector": node_selector if node_selector is not None else {"type": "worker"},
        "containers": [{"name": "model", "image": image, "imagePullPolicy": "Always", "env": env or []}],
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
