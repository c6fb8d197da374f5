"""Start and stop the local Kubernetes API server as a subprocess, for tests, the demo and benchmarks.

``LocalKubernetes`` picks a free port (and keeps it across restarts), generates a token and TLS
certificates when asked, waits for the server's JSON line, and offers the admin API (fault injection,
closing watches, compaction, request counts) plus a ready ``kubernetes.client.Configuration``.
Only the standard library is used for the admin calls; ``kubernetes`` is imported lazily.

State lives in the server process: ``stop()`` then ``start()`` gives an empty cluster on the same port,
with a resourceVersion clock that moved forward (old resourceVersions get 410 Gone).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ..processes import stop_process
from .images import ImageEntry
from .tls import generate_certificates

__all__ = ["LocalKubernetes"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class LocalKubernetes:
    """A local Kubernetes API server subprocess; use as a context manager or call start()/close()."""

    def __init__(self, *, token: str | None = None, tls: bool = False, kubelet: str = "process",
                 images: Mapping[str, ImageEntry] | None = None, images_file: str | Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, bookmark_interval: float | None = None,
                 history: int | None = None, watch_timeout: float | None = None,
                 start_timeout: float = 30.0, log_level: str = "WARNING") -> None:
        self.token = token or secrets.token_hex(24)
        self.tls = tls
        self.kubelet = kubelet
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._directory = Path(tempfile.mkdtemp(prefix="local-kubernetes-"))
        self.log_path = self._directory / "server.log"
        self.ca_cert_path: Path | None = None
        self._cert: Path | None = None
        self._key: Path | None = None
        self._images_file: Path | None = Path(images_file) if images_file is not None else None
        if images is not None:
            if self._images_file is not None:
                raise ValueError("give images or images_file, not both")
            self._images_file = self._directory / "images.json"
            self._images_file.write_text(json.dumps(images))
        self._options: list[str] = []
        if bookmark_interval is not None:
            self._options += ["--bookmark-interval", str(bookmark_interval)]
        if history is not None:
            self._options += ["--history", str(history)]
        if watch_timeout is not None:
            self._options += ["--watch-timeout", str(watch_timeout)]
        self._options += ["--log-level", log_level]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalKubernetes:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def start(self) -> LocalKubernetes:
        """Start the server (again on the same port after a stop) and wait until it listens."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the local Kubernetes server is already running")
        if self.tls and self.ca_cert_path is None:
            certificates = generate_certificates(self._directory / "tls")
            self.ca_cert_path, self._cert, self._key = certificates.ca_cert, certificates.cert, certificates.key
        command = [sys.executable, "-m", "simulation_components.local_kubernetes", "--host", self.host,
                   "--port", str(self.port), f"--token={self.token}", "--kubelet", self.kubelet, *self._options]
        if self.tls:
            command += ["--tls-cert", str(self._cert), "--tls-key", str(self._key)]
        if self._images_file is not None:
            command += ["--images-file", str(self._images_file)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                            cwd=REPO_ROOT, env=env)
        announcement = self._read_announcement()
        self.url = str(announcement["url"])
        self.port = int(announcement["port"])
        return self

    def _read_announcement(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RuntimeError(f"the local Kubernetes server did not start in time:\n{self.log_tail()}")
            readable, _, _ = select.select([self.process.stdout], [], [], min(remaining, 0.5))
            if not readable:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the local Kubernetes server exited with {self.process.returncode}:\n"
                                       f"{self.log_tail()}")
                continue
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                self.process.wait(5)
                raise RuntimeError(f"the local Kubernetes server exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            line += chunk
        announcement: dict[str, Any] = json.loads(line.decode())
        return announcement

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the server's stderr log."""
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in ``timeout``); returns the exit status."""
        process = self.process
        if process is None:
            return None
        code = stop_process(process, timeout)
        if process.stdout is not None:
            process.stdout.close()
        return code

    def kill(self) -> None:
        """SIGKILL the server; on Linux its pod processes get SIGKILL too (parent-death signal)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        """Stop the server and delete its temporary files."""
        self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    # ------------------------------------------------------------------ clients

    def kube_client_configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` for this server: its URL, the bearer token, the CA."""
        from kubernetes import client  # noqa: PLC0415 - keep the launcher importable without the client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.verify_ssl = True
        if self.ca_cert_path is not None:
            configuration.ssl_ca_cert = str(self.ca_cert_path)
        return configuration

    def daemon_client_configuration(self) -> Any:
        """The daemon's view: the same as :meth:`kube_client_configuration` here (one token, one URL); on
        ``ControlPlane`` its RBAC-limited token through the fault proxy."""
        return self.kube_client_configuration()

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on :meth:`kube_client_configuration` (close it when done)."""
        from kubernetes import client  # noqa: PLC0415 - keep the launcher importable without the client

        return client.ApiClient(self.kube_client_configuration())

    # ------------------------------------------------------------------ admin API

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_cert_path is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def admin(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """Call the admin API (``/_local/...``) and return the decoded JSON answer."""
        if not self.url:
            raise RuntimeError("the local Kubernetes server is not started")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,  # noqa: S310 - our URL
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl_context()) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"admin call {method} {path} failed: {error.code} {error.read()!r}") from error

    def inject_fault(self, status: int, count: int | None = None, seconds: float | None = None,
                     methods: list[str] | None = None, path_contains: str | None = None) -> dict[str, Any]:
        """Make matching API requests fail with ``status`` for ``count`` requests or ``seconds``."""
        spec: dict[str, Any] = {"status": status}
        if count is not None:
            spec["count"] = count
        if seconds is not None:
            spec["seconds"] = seconds
        if methods is not None:
            spec["methods"] = methods
        if path_contains is not None:
            spec["path_contains"] = path_contains
        result: dict[str, Any] = self.admin("POST", "/_local/faults", spec)
        return result

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.admin("DELETE", "/_local/faults")

    def close_watches(self) -> int:
        """End every open watch stream now (cleanly); returns how many there were."""
        return int(self.admin("POST", "/_local/watches/close", {})["closed"])

    def compact(self, *, expire_watches: bool = True) -> str:
        """Forget the event history: every older resourceVersion gives 410 Gone.

        By default the open watches also end with an ERROR 410 Expired event (as a watch that fell behind
        a compaction would), so every watcher must re-list; ``expire_watches=False`` only forgets the
        history (an up-to-date watcher then resumes without noticing, as on a real server).
        Returns the current resourceVersion.
        """
        answer = self.admin("POST", "/_local/compact", {"expire_watches": expire_watches})
        return str(answer["resourceVersion"])

    def expire_watches_with_410(self) -> str:
        """``compact()``: every open watch ends with ERROR 410 Expired and older resourceVersions are gone (the
        name ``ControlPlane`` has for what it does the real way)."""
        return self.compact()

    def expire_watches(self) -> int:
        """End every open watch with an ERROR 410 Expired event; returns how many there were."""
        return int(self.admin("POST", "/_local/watches/expire", {})["expired"])

    def request_counts(self) -> dict[str, Any]:
        """API requests by ``"VERB resource"`` (GET, LIST, WATCH, POST, PUT, PATCH, DELETE, DELETECOLLECTION),
        plus ``total`` and ``by_status``."""
        counts: dict[str, Any] = self.admin("GET", "/_local/requests")
        return counts

    def reset_request_counts(self) -> None:
        """Count requests from zero."""
        self.admin("POST", "/_local/requests/reset", {})

    def freeze_watches(self) -> None:
        """Keep watch streams open but send nothing (no events, no bookmarks) until unfrozen."""
        self.admin("POST", "/_local/freeze_watches", {})

    def unfreeze_watches(self) -> None:
        """Let frozen watch streams deliver what queued up and go on."""
        self.admin("POST", "/_local/unfreeze_watches", {})

    def stats(self) -> dict[str, Any]:
        """resourceVersion, object counts, open watches."""
        stats: dict[str, Any] = self.admin("GET", "/_local/stats")
        return stats

    def append_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """Add text to a pod's log (for status-only mode, where no process writes one)."""
        suffix = f"?container={container}" if container else ""
        self.admin("POST", f"/_local/pods/{namespace}/{pod}/log{suffix}", text.encode())
