"""The real parts a benchmark runs against: the daemon as its own process, and py-spy attached to it.

The broker (``LocalMosquitto``) and the API server (the real control plane,
``bench.api_server``) come from ``simulation_components``; the daemon runs exactly as in production,
``python -m model_services_orchestrator`` configured by environment variables.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.api_server import BenchApiServer, api_server
from bench.profiles import PROFILE_RATE
from simulation_components.kit import Daemon, SimulatorRecorder
from simulation_components.local_daemon import daemon_environment
from simulation_components.local_mosquitto import LocalMosquitto

__all__ = ["FAST_SETTINGS", "TUNED_BROKER", "Profiler", "Stack", "daemon_env", "find_py_spy", "running_stack"]

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "dots"

# Tuned for throughput, as the issue asks; everything else stays at the production default.
FAST_SETTINGS = {
    "KUBERNETES_QPS": "5000",
    "KUBERNETES_BURST": "5000",
    "POD_CREATE_CONCURRENCY": "64",
    "LOG_LEVEL": "WARNING",
    "HTTP_PORT": "0",
    "MIN_CLEANUP_DELAY_SECONDS": "0",
}


# Two lines the deployment's mosquitto.conf lacks (see docs/benchmarks.md): Mosquitto's default inflight quota
# (20) is also the most unacknowledged QoS 2 messages it takes from a client, and it drops the rest (PUBREC rc 151,
# which MQTT 3.1.1 cannot carry); and without TCP_NODELAY a burst of small messages to the daemon stalls on the
# daemon's delayed ACK (40 ms).
TUNED_BROKER = ("max_inflight_messages 0", "set_tcp_nodelay true")


def daemon_env(broker: LocalMosquitto, kube: BenchApiServer, overrides: dict[str, str]) -> dict[str, str]:
    """The daemon's settings against this broker and API server, with the benchmark's speed settings."""
    env = daemon_environment(broker, kube, {"KUBERNETES_NAMESPACE": NAMESPACE, "LOG_FORMAT": "json", **FAST_SETTINGS})
    env.update(overrides)
    return env


def find_py_spy() -> str | None:
    """The py-spy binary next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


class Profiler:
    """py-spy sampling a running process into collapsed stacks (``--format raw``) until stopped.

    ``--gil``: only the thread that holds the GIL is sampled, so the profile is where the daemon's
    Python CPU goes (threads blocked on a socket with the GIL released are not counted as busy).
    """

    def __init__(self, pid: int, output: Path, *, rate: int = PROFILE_RATE) -> None:
        binary = find_py_spy()
        if binary is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.output = output
        self._log = output.with_suffix(".py-spy.log")
        with self._log.open("wb") as log:
            # --nonblocking: the daemon is never paused to be sampled, so the timings stay honest.
            self.process = subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--gil", "--format", "raw",
                 "--output", str(output)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        time.sleep(0.3)  # attaching takes a moment; what happens before is not sampled

    def stop(self, timeout: float = 20.0) -> Path | None:
        """Stop sampling and write the profile; the file, or None when py-spy wrote nothing."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.output.exists():
            return None  # py-spy's own log (kept) says why
        self._log.unlink(missing_ok=True)
        return self.output


@dataclass(frozen=True)
class Stack:
    """A broker, an API server, the daemon against them and a recording SO: what a small benchmark drives."""

    broker: LocalMosquitto
    server: BenchApiServer
    daemon: Daemon
    so: SimulatorRecorder


@contextlib.contextmanager
def running_stack(*, overrides: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start everything, wait until the daemon listens; stop it all afterwards."""
    with (tempfile.TemporaryDirectory(prefix="mso-bench-") as scratch,
          LocalMosquitto(password=f"bench-{secrets.token_hex(8)}") as broker,
          api_server() as server):
        daemon = Daemon(env=daemon_env(broker, server, {"LOG_LEVEL": "INFO", **(overrides or {})}),
                        log_path=Path(scratch) / "daemon.log").start()
        so = SimulatorRecorder(broker)
        try:
            daemon.wait_logged("mqtt subscribed")
            yield Stack(broker, server, daemon, so)
        finally:
            so.close()
            daemon.stop()
