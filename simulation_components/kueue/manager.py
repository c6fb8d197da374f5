"""Kueue's manager (controller and webhook) on a running test control plane: ``KueueManager``.

Why: the daemon's Kueue mode (``KUEUE_QUEUE_NAME``) is only worth shipping if the real Kueue admits its
pod groups, so its tests run the real ``sigs.k8s.io/kueue`` built by ``ci/build_kueue.sh``. Starting it:
Kueue's CRDs are applied from the module source, a serving certificate for 127.0.0.1 is signed by the
control plane's CA, the manager starts with a configuration file (``setup.configuration``) and the admin
kubeconfig, and once it is ready its webhook configurations are applied pointing at 127.0.0.1. Its log is
``<control plane dir>/kueue.log``.

One wrinkle of Kueue itself: with internal certificate management off, Kueue v0.17 reads its metrics
serving certificate from the fixed path ``/etc/kueue/metrics/certs`` and will not start without one.
Nothing here scrapes those metrics, so any pair does: one signed by a throwaway CA is put there once
(under a lock, for parallel sessions) when none is there yet.
"""

from __future__ import annotations

import fcntl
import functools
import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from ..control_plane import ControlPlane
from ..control_plane.api import ApiError
from ..control_plane.binaries import REPO_ROOT
from ..control_plane.certificates import generate_control_plane_certificates, issue_serving_certificate
from ..control_plane.components import Component, ComponentError
from ..processes import free_port
from ..waiting import wait_for
from .setup import cluster_queue, configuration, local_queue, resource_flavor, webhook_configurations

__all__ = ["BUILD_SCRIPT", "METRICS_CERT_DIR", "KueueBuildError", "KueueManager", "kueue_build"]

BUILD_SCRIPT = REPO_ROOT / "ci" / "build_kueue.sh"
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
_WEBHOOK_PATHS = {"MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                  "ValidatingWebhookConfiguration":
                      "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"}


class KueueBuildError(RuntimeError):
    """Kueue is not built and could not be."""


@functools.cache
def kueue_build() -> Path:
    """The directory ``ci/build_kueue.sh`` prints: ``kueue`` (the manager) and ``source`` (the module's
    source, with its manifests). The script builds it the first time (minutes) and locks against a
    parallel build itself."""
    result = subprocess.run([str(BUILD_SCRIPT)], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise KueueBuildError(f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed with exit status "
                              f"{result.returncode}:\n{result.stderr[-3000:]}")
    return Path(lines[-1])


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        yield from (document for document in yaml.safe_load_all(stream) if document)


def _ensure_metrics_certificate() -> None:
    """A certificate and key where Kueue reads its metrics certificate, unless there are some."""
    lock_path = Path(tempfile.gettempdir()) / "mso-kueue-metrics-cert.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (METRICS_CERT_DIR / "tls.crt").is_file() and (METRICS_CERT_DIR / "tls.key").is_file():
            return
        try:
            METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as throwaway:
                ca = generate_control_plane_certificates(throwaway)
                issue_serving_certificate(METRICS_CERT_DIR, "tls", ca.ca_cert, ca.ca_key, days=3650)
        except OSError as error:
            raise ComponentError(f"Kueue reads its metrics certificate from {METRICS_CERT_DIR} (a fixed path when "
                                 f"its internal certificate management is off) and it cannot be made: {error}"
                                 ) from error


class KueueManager:
    """Kueue on ``plane`` (started): ``start()``, ``close()``, and the queues the tests give the daemon.

    ``namespace``: the one namespace whose pods Kueue manages (the control plane's by default).
    """

    name = "kueue"

    def __init__(self, plane: ControlPlane, *, namespace: str | None = None, start_timeout: float = 120.0) -> None:
        self.plane = plane
        self.namespace = namespace or plane.namespace
        self.start_timeout = start_timeout
        self.dir = plane.dir / "kueue"
        self.webhook_port = 0
        self.health_port = 0
        self.component: Component | None = None

    def __enter__(self) -> KueueManager:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> KueueManager:
        """CRDs, certificates, the manager, then its webhook configurations; returns once its webhook answers
        the API server. ``ComponentError`` with Kueue's log when it dies or is not ready in time."""
        build = kueue_build()
        source = build / "source" / "config" / "components"
        self._apply_crds(source / "crd" / "bases")
        certificates = self.plane.certificates
        if certificates is None:
            raise RuntimeError("the control plane is not started")
        cert_dir = self.dir / "webhook-certs"
        issue_serving_certificate(cert_dir, "tls", certificates.ca_cert, certificates.ca_key)
        _ensure_metrics_certificate()
        self.webhook_port, self.health_port = free_port(), free_port()
        config_path = self.dir / "config.yaml"
        config_path.write_text(json.dumps(configuration(
            namespace=self.namespace, health_port=self.health_port, metrics_port=free_port(),
            webhook_port=self.webhook_port, cert_dir=str(cert_dir)), indent=2) + "\n")
        self.component = Component(self.name, [
            build / "kueue", f"--config={config_path}", f"--kubeconfig={self.plane.admin_kubeconfig_path}",
            "--zap-log-level=info",
        ], self.plane.dir / f"{self.name}.log", cwd=self.dir)
        self.component.start()
        deadline = self._deadline()
        self.component.wait_for(self._ready, deadline, "readyz", interval=0.2)
        for webhook_configuration in webhook_configurations(
                _documents(source / "webhook" / "manifests.yaml"), base_url=f"https://127.0.0.1:{self.webhook_port}",
                ca_bundle=certificates.ca_cert.read_bytes(), namespace=self.namespace):
            self._create(_WEBHOOK_PATHS[webhook_configuration["kind"]], webhook_configuration)
        return self

    def close(self) -> None:
        """Stop the manager (its CRDs, objects and webhook configurations stay with the control plane)."""
        if self.component is not None:
            self.component.stop()

    def check(self) -> None:
        """``ComponentError`` with Kueue's log when it has exited."""
        if self.component is not None:
            self.component.check()

    def log_tail(self, characters: int = 4000) -> str:
        return "" if self.component is None else self.component.log_tail(characters)

    def create_queues(self, local_queue_name: str, quota: dict[str, str], *, cluster_queue_name: str = "dots",
                      flavor: str = "default") -> None:
        """A ResourceFlavor, a ClusterQueue with ``quota`` and the LocalQueue ``local_queue_name`` of the
        namespace; through Kueue's webhooks, so a webhook that does not answer fails here."""
        group = "/apis/kueue.x-k8s.io/v1beta2"
        self._create(f"{group}/resourceflavors", resource_flavor(flavor))
        self._create(f"{group}/clusterqueues", cluster_queue(cluster_queue_name, flavor, quota))
        self._create(f"{group}/namespaces/{self.namespace}/localqueues",
                     local_queue(local_queue_name, self.namespace, cluster_queue_name))

    def workloads(self) -> list[dict[str, Any]]:
        """Kueue's Workloads of the namespace."""
        listed = self.plane.request("GET", f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{self.namespace}/workloads")
        return list(listed["items"])

    # ------------------------------------------------------------------ steps

    def _deadline(self) -> float:
        return time.monotonic() + self.start_timeout

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)

    def _create(self, collection: str, body: dict[str, Any]) -> None:
        try:
            self.plane.request("POST", collection, body)
        except ApiError as error:
            if error.status != 409:
                raise

    def _apply_crds(self, directory: Path) -> None:
        names = []
        for path in sorted(directory.glob("*.yaml")):
            for crd in _documents(path):
                self._create(_CRD_PATH, crd)
                names.append(crd["metadata"]["name"])
        deadline = self._deadline()

        def established() -> bool:
            for name in names:
                conditions = self.plane.request("GET", f"{_CRD_PATH}/{name}").get("status", {}).get("conditions") or []
                if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    return False
            return True

        wait_for(established, timeout=max(deadline - time.monotonic(), 0.0), interval=0.1,
                 what="Kueue's CRDs to be established")
