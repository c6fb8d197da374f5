"""kube-apiserver for the control plane: its command line, its start and restart, its readiness.

One HTTPS port on 127.0.0.1 (no insecure port), TLS from the plane's CA, a static admin token (group
``system:masters``), Node and RBAC authorisation, service-account tokens signed by the plane's key, API
priority and fairness off with generous in-flight limits, and etcd compacted every 5 minutes as in
production. The port is kept across restarts, so clients reconnect to the same URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..processes import free_port
from .api import call
from .certificates import ControlPlaneCertificates
from .components import Component

__all__ = ["SERVICE_ACCOUNT_ISSUER", "SERVICE_CLUSTER_IP_RANGE", "APIServer"]

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class APIServer:
    """kube-apiserver's process; ``url``/``port`` once started (the same after a restart)."""

    name = "kube-apiserver"

    def __init__(self, directory: Path, certificates: ControlPlaneCertificates, *, etcd_url: str,
                 admin_token: str, port: int = 0, profiling: bool = False) -> None:
        self.directory = directory
        self.certificates = certificates
        self.etcd_url = etcd_url
        self.admin_token = admin_token
        self.profiling = profiling
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.component: Component | None = None

    def flags(self) -> list[str]:
        """The command line after the executable."""
        certificates = self.certificates
        pki = certificates.ca_cert.parent
        return [
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
            f"--cert-dir={pki}",
            f"--tls-cert-file={certificates.apiserver_cert}", f"--tls-private-key-file={certificates.apiserver_key}",
            f"--client-ca-file={certificates.ca_cert}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={certificates.service_account_public_key}",
            f"--service-account-signing-key-file={certificates.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--etcd-servers={self.etcd_url}",
            # As in production. Not 0: that would also stop kube-apiserver from watching compact_rev_key, and
            # then its watch cache would never learn of the compactions Etcd.compact() makes.
            "--etcd-compaction-interval=5m",
            f"--kubelet-client-certificate={certificates.kubelet_client_cert}",
            f"--kubelet-client-key={certificates.kubelet_client_key}",
            f"--kubelet-certificate-authority={certificates.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=3000", "--max-mutating-requests-inflight=1000",
            "--watch-cache=true",
            "--endpoint-reconciler-type=none",
            # End watches at shutdown (clients re-watch) rather than wait for them: otherwise SIGTERM takes the
            # request timeout (60 s) whenever kube-controller-manager or the kubelet holds a watch open.
            "--shutdown-watch-termination-grace-period=2s",
            # /debug/pprof (admin only) for the benchmark's CPU profiles; off otherwise, as it costs a little.
            f"--profiling={'true' if self.profiling else 'false'}",
        ]

    def start(self, bin_dir: Path) -> Component:
        """Write the token file and start; returns at once (see :meth:`wait_ready`)."""
        tokens = self.certificates.ca_cert.parent / "tokens.csv"
        tokens.write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        self.component = Component(self.name, [bin_dir / "kube-apiserver", *self.flags()],
                                   self.directory / f"{self.name}.log", cwd=self.directory)
        self.component.start()
        return self.component

    def ready(self) -> bool | None:
        """``True`` once ``/readyz`` answers 200 (a probe for ``Component.wait_for``)."""
        call("GET", f"{self.url}/readyz", token=self.admin_token, ca_cert=self.certificates.ca_cert, timeout=2)
        return True

    def wait_ready(self, deadline: float) -> None:
        """Until ready, or ``ComponentError`` (with the log's end) at ``deadline`` or when it exits."""
        assert self.component is not None
        self.component.wait_for(self.ready, deadline, "/readyz answer 200", interval=0.1)

    def restart(self, timeout: float, *, downtime: float = 0.0, while_down: Callable[[], object] | None = None) -> None:
        """Stop (SIGTERM: it closes its watches and drains), wait ``downtime`` seconds, start again on the same
        port and wait until it is ready. etcd keeps the data; the watch cache starts anew. ``while_down`` runs
        while it is stopped."""
        assert self.component is not None
        self.component.stop()
        time.sleep(downtime)
        if while_down is not None:
            while_down()
        self.component.start()
        self.wait_ready(time.monotonic() + timeout)
