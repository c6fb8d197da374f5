"""A real Mosquitto broker on a free local port, for tests, the demo and benchmarks.

Why this exists: the orchestrator's promises (one ModelsReady, nothing lost
while it or the broker restarts) depend on how Mosquitto really behaves with
password auth, persistent sessions and ``queue_qos0_messages``, so tests run
against the real broker rather than a mock. Each ``LocalMosquitto`` gets its
own temporary directory (config, password file, persistence, log) and can be
stopped, killed and started again on the same port with the same persistence,
which is what the fault tests need.

The broker settings come from ``simulation_components/mosquitto/mosquitto.conf``
(the deployment's config); only the lines that name places (listener, files,
log destination, user) are replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from simulation_components.processes import free_port, stop_process

__all__ = [
    "DEPLOYMENT_CONFIG",
    "LocalMosquitto",
    "MosquittoError",
    "find_mosquitto",
]

DEPLOYMENT_CONFIG = Path(__file__).resolve().parent / "mosquitto" / "mosquitto.conf"

# Settings of the deployment config that name a place or a destination; a local broker sets its own.
_LOCAL_KEYS = frozenset(
    {
        "listener",
        "port",
        "bind_address",
        "password_file",
        "persistence_location",
        "persistence_file",
        "log_dest",
        "user",
        "pid_file",
        "autosave_interval",
    }
)


class MosquittoError(RuntimeError):
    """The local broker could not be found, configured or started."""


def find_mosquitto() -> str:
    """Return the path of the ``mosquitto`` binary, or raise a clear error."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoError("no 'mosquitto' binary found: install it (apt-get install mosquitto)")


def _find_mosquitto_passwd(mosquitto: str) -> str:
    found = shutil.which("mosquitto_passwd")
    if found is not None:
        return found
    for directory in (Path(mosquitto).parent, Path("/usr/bin"), Path("/usr/sbin")):
        candidate = directory / "mosquitto_passwd"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise MosquittoError("mosquitto_passwd is not installed (it comes with the mosquitto package)")


def shared_settings(config: Path = DEPLOYMENT_CONFIG) -> list[str]:
    """The deployment config's setting lines, minus those a local broker sets itself."""
    settings = []
    for raw in config.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] in _LOCAL_KEYS:
            continue
        settings.append(line)
    return settings


class LocalMosquitto:
    """A Mosquitto process with password auth and persistence in its own temporary directory.

    Use as a context manager (starts on enter, stops and removes its directory on
    exit), or call :meth:`start`, :meth:`stop`, :meth:`kill` and :meth:`close`.
    The port is chosen once and kept, so a restarted broker is reachable at the
    same address and finds its persistence database again.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        username: str = "dots",
        password: str = "dotspass-test",  # noqa: S107 - a throwaway test broker's default, not a secret
        port: int | None = None,
        autosave_interval: int = 1,
        extra_config: tuple[str, ...] = (),
        verbose_log: bool = False,
        startup_timeout: float = 10.0,
    ) -> None:
        self._username = username
        self._password = password
        self._port = port if port is not None else free_port(self.host)
        self._autosave_interval = autosave_interval
        self._extra_config = extra_config
        self._verbose_log = verbose_log
        self._startup_timeout = startup_timeout
        self._binary = find_mosquitto()
        self._directory = Path(tempfile.mkdtemp(prefix="local-mosquitto-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._write_files()

    # --- what clients need -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def directory(self) -> Path:
        """The temporary directory holding config, password file, persistence and log."""
        return self._directory

    @property
    def config_path(self) -> Path:
        return self._directory / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self._directory / "mosquitto.log"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything the broker has logged so far (across restarts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker (again) and wait until it accepts TCP connections."""
        if self.is_running:
            raise MosquittoError("the broker is already running")
        # Output before the log file is open (config errors) goes to a file, never to a pipe
        # nobody reads.
        with (self._directory / "stderr.log").open("ab") as output:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._process.poll() is not None:
                stderr = (self._directory / "stderr.log").read_text(errors="replace")
                code = self._process.returncode
                self._process = None
                raise MosquittoError(
                    f"mosquitto exited with code {code} while starting on port {self._port}:\n"
                    f"{stderr}\n{self.log_text()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, self._port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise MosquittoError(
                    f"mosquitto did not accept connections on {self.host}:{self._port} "
                    f"within {self._startup_timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM): Mosquitto writes its persistence database on the way out."""
        process = self._process
        if process is None:
            return
        stop_process(process, timeout)
        self._release()

    def kill(self) -> None:
        """Kill (SIGKILL), as a crash would: only what autosave wrote survives."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._release()

    def restart(self) -> None:
        """Stop cleanly and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its temporary directory."""
        self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<LocalMosquitto {self.host}:{self._port} {state} dir={self._directory}>"

    # --- internals ---------------------------------------------------------------------------

    def _release(self) -> None:
        self._process = None

    def _write_files(self) -> None:
        persistence = self._directory / "persistence"
        persistence.mkdir()
        password_file = self._directory / "passwd"
        passwd_binary = _find_mosquitto_passwd(self._binary)
        passwd = subprocess.run(
            [passwd_binary, "-b", "-c", str(password_file), self._username, self._password],
            capture_output=True,
            text=True,
            check=False,
        )
        if passwd.returncode != 0:
            raise MosquittoError(f"mosquitto_passwd failed: {passwd.stderr or passwd.stdout}")
        lines = [
            "# Written by simulation_components/local_mosquitto.py from the deployment config.",
            *shared_settings(),
            f"listener {self._port} {self.host}",
            f"password_file {password_file}",
            f"persistence_location {persistence}/",
            f"autosave_interval {self._autosave_interval}",
            f"log_dest file {self.log_path}",
        ]
        # "all" logs every packet: useful when debugging a test, too much for a benchmark.
        log_types = ("all",) if self._verbose_log else ("error", "warning", "notice", "information")
        lines.extend(f"log_type {log_type}" for log_type in log_types)
        if os.geteuid() == 0:
            # Started as root, Mosquitto would switch to the 'mosquitto' user, which cannot
            # read or write this private temporary directory.
            lines.append("user root")
        lines.extend(self._extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")
