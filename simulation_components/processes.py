"""The local processes we start (broker, control plane, Prometheus, daemon): a port for each, and their end,
the same way everywhere."""

from __future__ import annotations

import signal
import socket
import subprocess

__all__ = ["free_port", "stop_process"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM and wait; SIGKILL when it has not exited within ``timeout``. The exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
