"""The orchestrator as a local process, against a local broker and a local API server.

The demo, the end-to-end tests and the benchmarks all run the daemon as its
own process (exactly as in production) against ``LocalMosquitto`` and the real
control plane (``control_plane.ControlPlane``); this is how they start it and
what environment they give it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, Self

from simulation_components.local_mosquitto import LocalMosquitto
from simulation_components.processes import stop_process

__all__ = ["REPO_ROOT", "ApiEndpoint", "LocalDaemon", "daemon_environment"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_OWN_SETTINGS = ("MQTT_", "KUBERNETES_", "MODEL_", "LOG_")


class ApiEndpoint(Protocol):
    """Where the daemon reaches an API server and with what token: ``ControlPlane`` (its ``url`` is the fault
    proxy's when it has one; ``token`` is the daemon's RBAC-limited one), or the benchmark's view of it.
    ``ca_cert_path``: the CA to verify the server with (``None``: plain HTTP, or TLS not verified)."""

    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def ca_cert_path(self) -> Path | None: ...


def daemon_environment(broker: LocalMosquitto, kube: ApiEndpoint, overrides: Mapping[str, object] | None = None,
                       *, inherit: bool = False) -> dict[str, str]:
    """Env vars for ``python -m model_services_orchestrator``; ``overrides`` by setting name (any case).

    ``KUBERNETES_CA_CERT`` is set when the API server has a CA (the real control plane always has one).
    ``inherit``: start from this process's environment, less its own MQTT and Kubernetes settings.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(_OWN_SETTINGS)} if inherit else {}
    env.update({
        "KUBERNETES_HOST": "127.0.0.1",
        "KUBERNETES_PORT": str(kube.port),
        "KUBERNETES_SCHEME": "https" if kube.url.startswith("https") else "http",
        "KUBERNETES_API_TOKEN": kube.token,
        "KUBERNETES_NAMESPACE": "dots",
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": broker.username,
        "MQTT_PASSWORD": broker.password,
    })
    if kube.ca_cert_path is not None:
        env["KUBERNETES_CA_CERT"] = str(kube.ca_cert_path)
    env.update({key.upper(): str(value) for key, value in (overrides or {}).items()})
    return env


class LocalDaemon:
    """``python -m model_services_orchestrator`` with ``env`` (over this process's environment, less its
    own orchestrator settings) and its output appended to ``log_path``."""

    def __init__(self, *, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        environment = {key: value for key, value in os.environ.items() if not key.startswith(_OWN_SETTINGS)}
        environment.update(self.env)
        environment["PYTHONPATH"] = str(REPO_ROOT)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "model_services_orchestrator"], cwd=REPO_ROOT,
                                            env=environment, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        """Raise with the end of the daemon's log when it has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status (negative when it had to be killed)."""
        return None if self.process is None else stop_process(self.process, timeout)
