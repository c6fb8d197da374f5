"""Ending the local processes we start (broker, API server, daemon) the same way everywhere."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["stop_process"]


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
