"""kube-controller-manager for the control plane: the controllers a namespace of pods needs.

The garbage collector, namespace, service-account, service-account-token, root CA publisher and
ResourceQuota controllers (the last keeps a quota's ``status.used`` true as pods end: the API server's
quota admission only adds); no leader election, no serving port.
It is ready when the root CA publisher has put ``kube-root-ca.crt`` into the namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api import ApiError
from .certificates import ControlPlaneCertificates
from .components import Component

__all__ = ["CONTROLLERS", "ControllerManager"]

#: Names of kube-controller-manager's controllers (the names of 1.28 and later; the old ones are aliases).
CONTROLLERS = ("garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
               "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
               "resourcequota-controller")


class ControllerManager:
    """kube-controller-manager's process, talking to kube-apiserver with the admin kubeconfig."""

    name = "kube-controller-manager"

    def __init__(self, directory: Path, certificates: ControlPlaneCertificates, kubeconfig: Path) -> None:
        self.directory = directory
        self.certificates = certificates
        self.kubeconfig = kubeconfig
        self.component: Component | None = None

    def flags(self) -> list[str]:
        """The command line after the executable."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={self.certificates.service_account_key}",
            f"--root-ca-file={self.certificates.ca_cert}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--secure-port=0",
            "--concurrent-gc-syncs=20",
            # client-go's default 20/s would make garbage collection and namespace deletion crawl with
            # thousands of pods.
            "--kube-api-qps=500", "--kube-api-burst=1000",
        ]

    def start(self, bin_dir: Path) -> Component:
        """Start; returns at once (see :meth:`wait_ready`)."""
        self.component = Component(self.name, [bin_dir / "kube-controller-manager", *self.flags()],
                                   self.directory / f"{self.name}.log", cwd=self.directory)
        self.component.start()
        return self.component

    def wait_ready(self, admin_call: Callable[[str, str], Any], namespace: str, deadline: float) -> None:
        """Until the controllers run in ``namespace``: ``kube-root-ca.crt`` is there (``default`` would prove
        nothing: the project's manifests create it), and the namespace's ``default`` service account."""
        assert self.component is not None

        def published() -> bool | None:
            try:
                admin_call("GET", f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt")
            except ApiError as error:
                if error.status == 404:
                    return None
                raise
            return True

        self.component.wait_for(published, deadline, f"kube-root-ca.crt in namespace {namespace}", interval=0.1)
        admin_call("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
