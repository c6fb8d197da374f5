"""One control plane process (etcd, kube-apiserver, kube-controller-manager, the kubelet) and its log.

Each component runs as a direct subprocess with stdout and stderr appended to ``<dir>/<name>.log``, in a
session of its own (a Ctrl-C at the terminal reaches only the launcher, which then stops the components
in order), and, when started from the main thread on Linux, with a parent-death signal (SIGKILL) so that a
launcher killed outright leaves no control plane running behind it. Start-up waits poll: a URL, or a line in the
log, while checking that the process is still alive, so a component that dies reports its log at once
instead of after a timeout.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from ..processes import stop_process
from ..waiting import wait_for

__all__ = ["Component", "ComponentError", "die_with_parent", "tail"]

_T = TypeVar("_T")
_PR_SET_PDEATHSIG = 1


class ComponentError(RuntimeError):
    """A component exited or did not become ready; the message ends with its log tail."""


# Looked up now: between fork and exec (where other threads' locks may be held) only the call itself runs.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def tail(path: Path, characters: int = 4000) -> str:
    """The end of a text file (``""`` when there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - characters))
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it (the main thread) ends.

    Not SIGTERM: all components get it at once, and a kube-apiserver whose etcd is gone never finishes its
    graceful shutdown (it keeps retrying to remove its lease).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class Component:
    """A control plane process, restartable with the same command line."""

    def __init__(self, name: str, command: Sequence[str | Path], log_path: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.command = [str(part) for part in command]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> None:
        """Start the process (again); output appended to the log."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        # The parent-death signal follows the thread that forks: only the main thread outlives its children.
        on_main_thread = sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                            start_new_session=True,
                                            # Safe with threads: the function makes one C call, takes no lock.
                                            preexec_fn=die_with_parent if on_main_thread else None)  # noqa: PLW1509

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id of the current (or last) run."""
        return None if self.process is None else self.process.pid

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait, SIGKILL after ``timeout``; the exit status (``None`` when never started)."""
        return None if self.process is None else stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the log."""
        return tail(self.log_path, characters)

    def output_since_start(self) -> str:
        """What the current run wrote to the log so far."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def check(self) -> None:
        """Raise ``ComponentError`` with the log tail when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ComponentError(f"{self.name} exited with status {self.process.returncode}; "
                                 f"the end of {self.log_path}:\n{self.log_tail()}")

    def wait_for(self, probe: Callable[[], _T | None], deadline: float, what: str, interval: float = 0.05) -> _T:
        """Call ``probe`` until it returns something truthy (exceptions count as not yet), checking that the
        process lives; ``ComponentError`` with the log's end when it dies or at ``deadline`` (``time.monotonic()``)."""
        try:
            return wait_for(probe, timeout=max(deadline - time.monotonic(), 0.0), interval=interval,
                            what=f"{self.name}'s {what}", check=self.check, retry=(Exception,))
        except TimeoutError as error:
            raise ComponentError(f"{error}; the end of {self.log_path}:\n{self.log_tail()}") from None
