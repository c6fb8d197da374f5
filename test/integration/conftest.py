"""Fixtures of the end-to-end tests: a real Mosquitto, the local Kubernetes API server, the daemon, an SO."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulation_components.kit import NAMESPACE, TEST_IMAGES, Daemon, DaemonFactory, SimulatorRecorder
from simulation_components.local_daemon import daemon_environment
from simulation_components.local_kubernetes.launcher import LocalKubernetes
from simulation_components.local_mosquitto import LocalMosquitto


@pytest.fixture
def broker() -> Iterator[LocalMosquitto]:
    with LocalMosquitto(password=f"mqtt-{secrets.token_hex(8)}") as mosquitto:
        yield mosquitto




def _kube(mode: str) -> Iterator[LocalKubernetes]:
    with LocalKubernetes(kubelet=mode, token=f"token-{secrets.token_hex(8)}", images=TEST_IMAGES) as kube:
        yield kube


@pytest.fixture
def kube() -> Iterator[LocalKubernetes]:
    """The API server with a kubelet that runs containers as local processes."""
    yield from _kube("process")


@pytest.fixture
def status_kube() -> Iterator[LocalKubernetes]:
    """The API server whose pods only change when a test sets their status."""
    yield from _kube("status-only")


@pytest.fixture
def so(broker: LocalMosquitto) -> Iterator[SimulatorRecorder]:
    recorder = SimulatorRecorder(broker)
    yield recorder
    recorder.close()




@pytest.fixture
def make_daemon(broker: LocalMosquitto, tmp_path: Path) -> Iterator[DaemonFactory]:
    """Starts daemons against the broker and a given API server; all are killed at the end of the test."""
    started: list[Daemon] = []

    def make(kube: LocalKubernetes, *, wait_subscribed: bool = True, **overrides: Any) -> Daemon:
        env = daemon_environment(broker, kube, {
            "KUBERNETES_NAMESPACE": NAMESPACE, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json", "HTTP_PORT": 0,
            "MIN_CLEANUP_DELAY_SECONDS": 0, "KUBERNETES_WATCH_TIMEOUT_SECONDS": 30, **overrides})
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
