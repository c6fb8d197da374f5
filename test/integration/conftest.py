"""Fixtures of the end-to-end tests: a real Mosquitto, an API server, the daemon, an SO.

The API server is the real control plane (etcd, kube-apiserver, kube-controller-manager and our kubelet,
``simulation_components.control_plane``) with a fault proxy in front of it: the daemon reaches it through
the proxy with its own RBAC-limited token, verifying the CA.

One control plane per kubelet mode serves the whole session (starting one costs ~4 s, stopping one ~1.5 s:
a fresh one per test would add ~4 minutes); before each test that uses it, ``ControlPlane.reset()`` makes
it as good as new: the API up for the daemon, no fault, every connection through the proxy dropped, every
pod, ConfigMap and Secret of the namespace deleted, no container process left, the request counts at
zero. A control plane that cannot be reset (a component died) is replaced by a new one.
test_isolation.py checks that this holds.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.api import ApiError
from simulation_components.control_plane.components import ComponentError
from simulation_components.kit import NAMESPACE, TEST_IMAGES, Daemon, DaemonFactory, SimulatorRecorder
from simulation_components.local_daemon import ApiEndpoint, daemon_environment
from simulation_components.local_mosquitto import LocalMosquitto


@pytest.fixture
def broker() -> Iterator[LocalMosquitto]:
    with LocalMosquitto(password=f"mqtt-{secrets.token_hex(8)}") as mosquitto:
        yield mosquitto


@pytest.fixture(scope="session")
def control_planes() -> Iterator[dict[str, ControlPlane]]:
    """The session's control planes by kubelet mode, started on first use, closed at the end."""
    planes: dict[str, ControlPlane] = {}
    yield planes
    for plane in planes.values():
        plane.close()


def _control_plane(planes: dict[str, ControlPlane], mode: str) -> ControlPlane:
    plane = planes.pop(mode, None)
    if plane is not None:
        try:
            plane.reset()
        except (ComponentError, TimeoutError, ApiError, OSError):
            plane.close()  # e.g. a component died: a new control plane rather than a doubtful one
        else:
            planes[mode] = plane
            return plane
    if mode == "scheduler":
        # kube-scheduler places pods on two nodes of 1 CPU and 4Gi each: "does not fit" is its real answer.
        plane = ControlPlane(kubelet="status-only", images=TEST_IMAGES, fault_proxy=True, scheduler=True, nodes=2,
                             node_cpu="1", node_memory="4Gi").start()
    else:
        plane = ControlPlane(kubelet=mode, images=TEST_IMAGES, fault_proxy=True).start()
    planes[mode] = plane
    return plane


@pytest.fixture
def kube(control_planes: dict[str, ControlPlane]) -> Iterator[ControlPlane]:
    """The API server with a kubelet that runs containers as local processes."""
    yield _control_plane(control_planes, "process")


@pytest.fixture
def status_kube(control_planes: dict[str, ControlPlane]) -> Iterator[ControlPlane]:
    """The API server whose pods only change when a test sets their status (the kubelet binds each pod
    and reports it Running; ``activeDeadlineSeconds`` and deletion are honoured)."""
    yield _control_plane(control_planes, "status-only")


@pytest.fixture
def capacity_kube(control_planes: dict[str, ControlPlane]) -> Iterator[ControlPlane]:
    """As ``status_kube``, but kube-scheduler binds the pods, to two nodes of 1 CPU and 4Gi each."""
    yield _control_plane(control_planes, "scheduler")


@pytest.fixture
def so(broker: LocalMosquitto) -> Iterator[SimulatorRecorder]:
    recorder = SimulatorRecorder(broker)
    yield recorder
    recorder.close()


@pytest.fixture
def make_daemon(broker: LocalMosquitto, tmp_path: Path) -> Iterator[DaemonFactory]:
    """Starts daemons against the broker and a given API server; all are killed at the end of the test."""
    started: list[Daemon] = []

    def make(kube: ApiEndpoint, *, wait_subscribed: bool = True, **overrides: Any) -> Daemon:
        # READY_SETTLE_SECONDS: the tests announce models themselves, whenever they choose, so a model unheard
        # for long after a restart is no lost ready (test_dots_broker.py tests that, with its own setting).
        env = daemon_environment(broker, kube, {
            "KUBERNETES_NAMESPACE": NAMESPACE, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json", "HTTP_PORT": 0,
            "MIN_CLEANUP_DELAY_SECONDS": 0, "KUBERNETES_WATCH_TIMEOUT_SECONDS": 30, "READY_SETTLE_SECONDS": 3600,
            **overrides})
        daemon = Daemon(env=env, log_path=tmp_path / f"daemon-{len(started)}.log").start()
        started.append(daemon)
        if wait_subscribed:
            # The first session of a client id exists only once it has subscribed.
            daemon.wait_logged("mqtt subscribed")
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
