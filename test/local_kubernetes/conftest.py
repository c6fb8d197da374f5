"""Fixtures of the local Kubernetes server tests: one server per kubelet mode, a fresh namespace per test."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from local_kubernetes_helpers import IMAGES, CoreApi, core_api

from simulation_components.local_kubernetes.launcher import LocalKubernetes

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def process_kube() -> Iterator[LocalKubernetes]:
    """A server whose kubelet runs containers as local processes."""
    with LocalKubernetes(kubelet="process", images=IMAGES, bookmark_interval=1) as kube:
        yield kube


@pytest.fixture(scope="session")
def status_kube() -> Iterator[LocalKubernetes]:
    """A server whose kubelet only fakes pod status (Running at once)."""
    with LocalKubernetes(kubelet="status-only", images=IMAGES, bookmark_interval=1) as kube:
        yield kube


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test (namespaces need not be created)."""
    return f"test-{next(_namespaces)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture
def api(status_kube: LocalKubernetes) -> CoreApi:
    """CoreV1Api against the status-only server."""
    return core_api(status_kube)


@pytest.fixture
def process_api(process_kube: LocalKubernetes) -> CoreApi:
    """CoreV1Api against the process server."""
    return core_api(process_kube)


