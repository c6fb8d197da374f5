"""kube-scheduler for the control plane: the scheduler's real answer to "does this pod fit a node".

Opt-in (``ControlPlane(scheduler=True)``): our kubelet then registers its nodes with a stated capacity and
binds nothing itself; kube-scheduler places each pod on a node whose allocatable CPU, memory and pod count
still hold its requests, or writes ``PodScheduled=False``/``Unschedulable`` on it. Without it our kubelet
binds every pod to its one node, as before (cheaper: no second watcher of ten thousand pods).

It talks to kube-apiserver with the admin kubeconfig, without leader election, and serves HTTPS on a free
port of 127.0.0.1 with a certificate of the control plane's CA only so that readiness is its own
``/readyz`` (which is 200 once its informers have synced).
"""

from __future__ import annotations

from pathlib import Path

from ..processes import free_port
from .api import call
from .certificates import ControlPlaneCertificates, issue_serving_certificate
from .components import Component

__all__ = ["Scheduler"]


class Scheduler:
    """kube-scheduler's process."""

    name = "kube-scheduler"

    def __init__(self, directory: Path, certificates: ControlPlaneCertificates, kubeconfig: Path) -> None:
        self.directory = directory
        self.certificates = certificates
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.component: Component | None = None

    def flags(self) -> list[str]:
        """The command line after the executable."""
        cert, key = issue_serving_certificate(self.certificates.ca_cert.parent, self.name,
                                              self.certificates.ca_cert, self.certificates.ca_key)
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}",
            # client-go's default 50/s would bind a simulation of a thousand pods in 20 s.
            "--kube-api-qps=500", "--kube-api-burst=1000",
        ]

    def start(self, bin_dir: Path) -> Component:
        """Start; returns at once (see :meth:`wait_ready`)."""
        self.component = Component(self.name, [bin_dir / "kube-scheduler", *self.flags()],
                                   self.directory / f"{self.name}.log", cwd=self.directory)
        self.component.start()
        return self.component

    def ready(self) -> bool | None:
        """``True`` once ``/readyz`` answers 200 (anonymous: the path is always allowed)."""
        call("GET", f"https://127.0.0.1:{self.port}/readyz", ca_cert=self.certificates.ca_cert, timeout=2)
        return True

    def wait_ready(self, deadline: float) -> None:
        assert self.component is not None
        self.component.wait_for(self.ready, deadline, "/readyz answer 200", interval=0.1)
