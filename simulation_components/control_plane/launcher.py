"""A real Kubernetes control plane on 127.0.0.1 for tests, the demo and benchmarks: ``ControlPlane``.

It composes one type per component, as envtest's ``controlplane`` package does: ``Etcd`` (``etcd.py``),
``APIServer`` (``apiserver.py``), ``ControllerManager`` (``controller_manager.py``), our kubelet
(``KubeletProcess``, ``kubelet_process.py``) and, with ``fault_proxy=True``, a ``FaultProxy`` in front of
kube-apiserver and, with ``scheduler=True``, kube-scheduler (``scheduler.py``) with our kubelet then
registering ``nodes`` nodes of a stated capacity and binding nothing itself. The binaries are built
from the pinned release by ``ci/build_control_plane.sh``, so the daemon meets real admission, real RBAC (its
token is a service-account token bound to the project's own Role), real watch semantics and real garbage
collection. Each process logs to ``<dir>/<name>.log``.

Once the components run, it applies ``k8s_cluster_configuration``'s namespace, service accounts, Role and
RoleBinding as they are, and asks the TokenRequest API for a token of the daemon's service account:
``token`` has exactly the daemon's permissions. ``admin_token`` has all of them.

With the fault proxy, ``url`` and ``port`` (what the daemon is given) are the proxy's, while
``apiserver_url`` and the admin helpers (``request``, ``kube_client_configuration``, the components'
kubeconfig) go to kube-apiserver directly. The tests' controls are then: ``inject_fault``,
``clear_faults``, ``close_watches``, ``request_counts``, ``reset_request_counts``; ``stop()``/``start()`` of
a running plane take the API down for the daemon and bring it back (the proxy refuses connections);
``shutdown()``/``close()`` stop everything. ``expire_watches_with_410()`` makes the daemon's watch end and
its resourceVersion too old: the real way.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .api import ApiError, call
from .apiserver import APIServer
from .binaries import control_plane_binaries
from .certificates import ControlPlaneCertificates, generate_control_plane_certificates, issue_serving_certificate
from .components import Component, ComponentError, tail
from .controller_manager import ControllerManager
from .etcd import Etcd
from .fault_proxy import FaultProxy
from .kubelet_process import KUBELET_MODES, KubeletProcess
from .manifests import apply_manifests, load_manifests
from .scheduler import Scheduler

__all__ = ["DAEMON_SERVICE_ACCOUNT", "KUBELET_MODES", "NAMESPACE", "NODE_NAME", "ApiError", "ComponentError",
           "ControlPlane", "control_plane_binaries"]

NAMESPACE = "dots"
NODE_NAME = "local-node"
DAEMON_SERVICE_ACCOUNT = "model-services-orchestrator"
_Part = TypeVar("_Part")
#: Lifetime asked for the daemon's token; a test session or a benchmark is much shorter.
DAEMON_TOKEN_SECONDS = 24 * 3600


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, our kubelet (and the fault proxy); a context manager, or
    start()/close().

    ``directory``: where certificates, logs, the etcd data, ``admin.kubeconfig`` and ``daemon.env`` go
    (a temporary directory, deleted by ``close()``, when ``None``). ``bin_dir``: where the binaries are
    (default: ``control_plane_binaries()``, which builds them the first time). ``images`` (an image table,
    written to a file) or ``images_file``: the kubelet's ``--images-file``. ``fault_proxy``: also run a
    ``FaultProxy`` in front of kube-apiserver for the daemon (see the module's docstring). ``profiling``:
    kube-apiserver serves ``/debug/pprof`` (to the admin).

    ``scheduler``: run kube-scheduler, which places pods on the kubelet's ``nodes`` nodes by their stated
    ``node_cpu``, ``node_memory`` and ``node_pods`` (Kubernetes quantities; unset: 64 CPUs, 256Gi, 10000 pods
    each), so that "does not fit" is its real answer (``Unschedulable``). Off by default: our kubelet then
    binds every pod to its one node itself, as the suite and the benchmarks expect.
    """

    def __init__(self, *, kubelet: str = "process", images: Mapping[str, Any] | None = None,
                 images_file: str | Path | None = None, directory: str | Path | None = None,
                 bin_dir: str | Path | None = None, start_timeout: float = 60.0,
                 log_level: str = "WARNING", fault_proxy: bool = False, profiling: bool = False,
                 scheduler: bool = False, nodes: int = 1, node_cpu: str | None = None, node_memory: str | None = None,
                 node_pods: str | None = None) -> None:
        if kubelet not in KUBELET_MODES:
            raise ValueError(f"kubelet must be one of {', '.join(KUBELET_MODES)}, not {kubelet!r}")
        if images is not None and images_file is not None:
            raise ValueError("give images or images_file, not both")
        self.kubelet = kubelet
        self.namespace = NAMESPACE
        self.node_name = NODE_NAME
        self.start_timeout = start_timeout
        self.log_level = log_level
        self._temporary = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="mso-control-plane-")) if directory is None else Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._bin_dir = bin_dir
        self.images_file: Path | None = Path(images_file).resolve() if images_file is not None else None
        if images is not None:
            self.images_file = self.dir / "images.json"
            self.images_file.write_text(json.dumps(images))
        self.admin_token = secrets.token_hex(24)
        self.token = ""
        #: Where the daemon talks to: the fault proxy when there is one, else kube-apiserver.
        self.port = 0
        self.url = ""
        #: kube-apiserver itself (kept across restarts).
        self.apiserver_port = 0
        self.apiserver_url = ""
        self.fault_proxy = fault_proxy
        self.profiling = profiling
        self.scheduler = scheduler
        self.nodes = nodes
        self.node_capacity = {"cpu": node_cpu, "memory": node_memory, "pods": node_pods}
        self.kube_scheduler: Scheduler | None = None
        self.proxy: FaultProxy | None = None
        self._proxy_port = 0
        self.etcd = Etcd(self.dir)
        self.apiserver: APIServer | None = None
        self.controller_manager: ControllerManager | None = None
        self.kubelet_process: KubeletProcess | None = None
        self.ca_cert_path = self.dir / "pki" / "ca.crt"
        self.admin_kubeconfig_path = self.dir / "admin.kubeconfig"
        self.daemon_env_path = self.dir / "daemon.env"
        self.certificates: ControlPlaneCertificates | None = None
        #: The running components by name, in the order they started.
        self.components: dict[str, Component] = {}
        #: Seconds from start() to each milestone of the last start.
        self.timings: dict[str, float] = {}
        #: ``kind/name`` of the objects applied from k8s_cluster_configuration.
        self.applied_manifests: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ControlPlane:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def start(self) -> ControlPlane:
        """Start everything, apply the manifests, get the daemon's token; ``ComponentError`` (with the failing
        component's log tail) when a component dies or is not ready within ``start_timeout``.

        With a fault proxy, on a running control plane: the API is back for the daemon (after ``stop()``).
        """
        if self.components and self.proxy is not None:
            self.proxy.accept()
            return self
        if self.components:
            raise RuntimeError("the control plane is already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        deadline = began + self.start_timeout
        self.timings = {}

        def milestone(name: str) -> None:
            self.timings[name] = round(time.monotonic() - began, 3)

        try:
            bin_dir = control_plane_binaries(self._bin_dir)
            self._started(self.etcd.name, self.etcd.start(bin_dir))
            certificates = generate_control_plane_certificates(self.dir / "pki", node_name=self.node_name)
            self.certificates = certificates
            milestone("certificates")
            # kube-apiserver retries etcd while it starts: starting both at once saves etcd's start-up time.
            apiserver = self._start_apiserver(bin_dir, certificates)
            self._write_admin_kubeconfig()
            self.components[self.etcd.name].wait_for(self.etcd.healthy, deadline, "healthy etcd")
            milestone("etcd")
            apiserver.wait_ready(deadline)
            milestone("kube-apiserver")
            applied = apply_manifests(load_manifests(), self._admin_call)
            milestone("manifests")
            manager = ControllerManager(self.dir, certificates, self.admin_kubeconfig_path)
            self.controller_manager = manager
            self._started(manager.name, manager.start(bin_dir))
            self._start_nodes(bin_dir, certificates)
            self.token = self._request_daemon_token()
            self._write_daemon_env()
            milestone("daemon token")
            manager.wait_ready(self._admin_call, self.namespace, deadline)
            milestone("kube-controller-manager")
            if self.kube_scheduler is not None:
                self.kube_scheduler.wait_ready(deadline)
                milestone("kube-scheduler")
            if self.kubelet_process is not None:
                self.kubelet_process.wait_ready(deadline)
                milestone("kubelet")
            if self.fault_proxy:
                self._start_proxy()
                self._write_daemon_env()
                milestone("fault proxy")
            self.timings["total"] = round(time.monotonic() - began, 3)
            self.applied_manifests = applied
        except BaseException:
            self.shutdown()
            raise
        return self

    def stop(self) -> None:
        """Stop what runs (``shutdown()``).

        With a fault proxy, on a running control plane: the API is down for the daemon instead (the proxy
        refuses connections and resets the open ones); ``start()`` brings it back. ``shutdown()`` or ``close()``
        stop everything.
        """
        if self.components and self.proxy is not None:
            self.proxy.refuse()
            return
        self.shutdown()

    def shutdown(self) -> None:
        """Stop what runs: the fault proxy, the kubelet (it stops its pods), then kube-controller-manager,
        kube-apiserver, etcd. The files stay; ``start()`` afterwards makes a new cluster."""
        self._close_proxy()
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            component = self.components.get(name)
            if component is not None:
                component.stop()
        self.components = {}

    def close(self) -> None:
        """``shutdown()``, and delete the directory when it is a temporary one."""
        self.shutdown()
        if self._temporary:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL every component (a crash, for tests); the files stay."""
        self._close_proxy()
        for component in self.components.values():
            component.kill()
        self.components = {}

    @property
    def running(self) -> bool:
        """Whether every started component is alive."""
        return bool(self.components) and all(component.running for component in self.components.values())

    def check(self) -> None:
        """Raise ``ComponentError`` (with its log tail) when a component has exited."""
        for component in self.components.values():
            component.check()

    def log_tail(self, name: str = "kube-apiserver", characters: int = 4000) -> str:
        """The end of a component's log."""
        return tail(self.dir / f"{name}.log", characters)

    @property
    def kubelet_port(self) -> int:
        """The kubelet's log endpoint (0 without a kubelet)."""
        return 0 if self.kubelet_process is None else self.kubelet_process.port

    @property
    def etcd_url(self) -> str:
        return self.etcd.url

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver (SIGTERM: it closes its watches and drains), wait ``downtime`` seconds, start it
        again on the same port and wait until it is ready. etcd keeps the data; the watch cache starts anew."""
        self._require(self.apiserver).restart(self.start_timeout, downtime=downtime)

    # ------------------------------------------------------------------ the fault proxy: the tests' controls

    def _start_proxy(self) -> None:
        certificates = self._require(self.certificates)
        cert, key = issue_serving_certificate(certificates.ca_cert.parent, "fault-proxy", certificates.ca_cert,
                                              certificates.ca_key)
        self.proxy = FaultProxy(self.apiserver_url, upstream_ca=certificates.ca_cert, cert=cert, key=key,
                                port=self._proxy_port).start()
        self._proxy_port = self.proxy.port  # kept across restarts, as the API server's port is
        self.port, self.url = self.proxy.port, self.proxy.url

    def _close_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
            self.port, self.url = self.apiserver_port, self.apiserver_url

    def _require_proxy(self) -> FaultProxy:
        if self.proxy is None:
            raise RuntimeError("this needs a running ControlPlane(fault_proxy=True)")
        return self.proxy

    def inject_fault(self, status: int, count: int | None = None, seconds: float | None = None,
                     methods: list[str] | None = None, path_contains: str | None = None) -> dict[str, Any]:
        """Make the daemon's matching requests (those through the proxy) fail with ``status`` for ``count``
        requests or ``seconds``."""
        return self._require_proxy().inject_fault(status, count, seconds, methods, path_contains)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._require_proxy().clear_faults()

    def close_watches(self) -> int:
        """End every watch stream through the proxy now, cleanly; returns how many there were."""
        return self._require_proxy().close_watches()

    def request_counts(self) -> dict[str, Any]:
        """The requests through the proxy by ``"VERB resource"``, plus ``total`` and ``by_status``."""
        return self._require_proxy().request_counts()

    def reset_request_counts(self) -> None:
        """Count from zero."""
        self._require_proxy().reset_request_counts()

    def expire_watches_with_410(self) -> int:
        """Make every client's watch end and its resourceVersion too old, so that it must list again.

        The real way: kube-apiserver stops (its watches end, and nobody can watch for a while), etcd is
        compacted (see :meth:`compact`: recording the compaction is itself a write, so etcd's revision
        moves past every resourceVersion a client holds), and kube-apiserver starts again with a new
        watch cache that begins after them: a watch from any older resourceVersion gets 410 Expired, and
        reads at one too. Takes a few seconds (kube-apiserver's restart). Returns the compacted revision.
        """
        revisions: list[int] = []
        self._require(self.apiserver).restart(self.start_timeout, while_down=lambda: revisions.append(self.compact()))
        return revisions[0]

    def reset(self, timeout: float = 60.0) -> None:
        """Back to a fresh control plane's state for the next test, in a second or so.

        The API is up for the daemon, faults are cleared, every connection through the proxy is dropped
        (a killed daemon's last requests end before anything is deleted) and the counts start from zero;
        every pod, ConfigMap (but ``kube-root-ca.crt``), Secret, ResourceQuota and Lease of the namespace is
        deleted at once (grace period 0) and the kubelet has no container process left. Raises ``ComponentError`` when a
        component has died (then start a new control plane), ``TimeoutError`` when something lingers.
        """
        self.check()
        deadline = time.monotonic() + timeout
        if self.proxy is not None:
            self.proxy.accept()
            self.proxy.clear_faults()
            self.proxy.drop_connections()
            while self.proxy.in_flight():
                self._before(deadline, "the fault proxy's requests to end")
                time.sleep(0.02)
        base = f"/api/v1/namespaces/{self.namespace}"
        now = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
        self.request("DELETE", f"{base}/pods?gracePeriodSeconds=0", now, timeout=timeout)
        self.request("DELETE", f"{base}/configmaps?fieldSelector=metadata.name%21%3Dkube-root-ca.crt", now,
                     timeout=timeout)
        self.request("DELETE", f"{base}/secrets", now, timeout=timeout)
        # A test's quota would hold up every later test's pods.
        self.request("DELETE", f"{base}/resourcequotas", now, timeout=timeout)
        # The daemons' leader Lease: a test's replicas never wait out an earlier test's leader.
        self.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases", now,
                     timeout=timeout)

        def names(resource: str) -> list[str]:
            listed = self.request("GET", f"{base}/{resource}")
            return [item["metadata"]["name"] for item in listed["items"]]

        while names("pods") or names("configmaps") != ["kube-root-ca.crt"] or names("secrets"):
            self._before(deadline, "the namespace to be empty")
            time.sleep(0.05)
        while self.kubelet_children():
            self._before(deadline, "the kubelet's containers to end")
            time.sleep(0.05)
        if self.proxy is not None:
            self.proxy.reset_request_counts()

    @staticmethod
    def _before(deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reset: still waiting for {what}")

    def kubelet_children(self) -> list[int]:
        """The process ids of the kubelet's children (its containers); ``[]`` without a running kubelet."""
        return [] if self.kubelet_process is None else self.kubelet_process.children()

    # ------------------------------------------------------------------ components

    def _started(self, name: str, component: Component) -> None:
        self.components[name] = component

    def _start_apiserver(self, bin_dir: Path, certificates: ControlPlaneCertificates) -> APIServer:
        apiserver = APIServer(self.dir, certificates, etcd_url=self.etcd.url, admin_token=self.admin_token,
                              port=self.apiserver_port, profiling=self.profiling)  # the port is kept across restarts
        self.apiserver = apiserver
        self.apiserver_port, self.apiserver_url = apiserver.port, apiserver.url
        self.port, self.url = apiserver.port, apiserver.url
        self._started(apiserver.name, apiserver.start(bin_dir))
        return apiserver

    def _start_nodes(self, bin_dir: Path, certificates: ControlPlaneCertificates) -> None:
        """kube-scheduler (when asked for) and our kubelet (unless ``kubelet="none"``)."""
        if self.scheduler:
            self.kube_scheduler = Scheduler(self.dir, certificates, self.admin_kubeconfig_path)
            self._started(self.kube_scheduler.name, self.kube_scheduler.start(bin_dir))
        if self.kubelet != "none":
            self._start_kubelet(certificates)

    def _start_kubelet(self, certificates: ControlPlaneCertificates) -> None:
        kubelet = KubeletProcess(self.dir, certificates, kubeconfig=self.admin_kubeconfig_path,
                                 namespace=self.namespace, node_name=self.node_name, mode=self.kubelet,
                                 images_file=self.images_file, log_level=self.log_level,
                                 scheduler=self.scheduler, nodes=self.nodes, node_cpu=self.node_capacity["cpu"],
                                 node_memory=self.node_capacity["memory"], node_pods=self.node_capacity["pods"])
        self.kubelet_process = kubelet
        self._started(kubelet.name, kubelet.start())

    @staticmethod
    def _require(part: _Part | None) -> _Part:
        if part is None:
            raise RuntimeError("the control plane is not started")
        return part

    # ------------------------------------------------------------------ files

    def _write_admin_kubeconfig(self) -> None:
        # JSON is YAML: client-go, kubectl and the Python client read it.
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "mso", "cluster": {"server": self.apiserver_url,
                                                     "certificate-authority": str(self.ca_cert_path)}}],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "mso", "context": {"cluster": "mso", "user": "admin",
                                                     "namespace": self.namespace}}],
            "current-context": "mso",
        }
        self.admin_kubeconfig_path.write_text(json.dumps(kubeconfig, indent=2) + "\n")
        self.admin_kubeconfig_path.chmod(0o600)

    def daemon_env(self) -> dict[str, str]:
        """The daemon's Kubernetes settings for this control plane (its own service account's token)."""
        return {
            "KUBERNETES_HOST": "127.0.0.1",
            "KUBERNETES_PORT": str(self.port),
            "KUBERNETES_SCHEME": "https",
            "KUBERNETES_API_TOKEN": self.token,
            "KUBERNETES_CA_CERT": str(self.ca_cert_path),
            "KUBERNETES_NAMESPACE": self.namespace,
        }

    def _write_daemon_env(self) -> None:
        lines = [f"{key}={shlex.quote(value)}" for key, value in self.daemon_env().items()]
        self.daemon_env_path.write_text("\n".join(lines) + "\n")
        self.daemon_env_path.chmod(0o600)

    # ------------------------------------------------------------------ API

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                content_type: str = "application/json", timeout: float = 10.0) -> Any:
        """One API call (admin token unless ``token`` is given); the decoded JSON. ``ApiError`` on an error
        status."""
        return call(method, f"{self.apiserver_url}{path}", body, token=token or self.admin_token,
                    ca_cert=self.ca_cert_path, content_type=content_type, timeout=timeout)

    def _admin_call(self, method: str, path: str, body: Any = None) -> Any:
        return self.request(method, path, body)

    def _request_daemon_token(self) -> str:
        answer = self.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{DAEMON_SERVICE_ACCOUNT}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": DAEMON_TOKEN_SECONDS}})
        return str(answer["status"]["token"])

    def version(self) -> str:
        """kube-apiserver's ``gitVersion`` (``GET /version``)."""
        return str(self.request("GET", "/version")["gitVersion"])

    def kube_client_configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` with the ADMIN token, to kube-apiserver directly (never through
        the fault proxy), verifying the server against the CA."""
        return self._client_configuration(self.apiserver_url, self.admin_token)

    def daemon_client_configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` as the daemon's: its RBAC-limited token, to ``url`` (through the
        fault proxy when there is one), verifying against the CA."""
        return self._client_configuration(self.url, self.token)

    def _client_configuration(self, url: str, token: str) -> Any:
        from kubernetes import client  # noqa: PLC0415 - keep the launcher importable without the client

        configuration = client.Configuration()
        configuration.host = url
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.verify_ssl = True
        configuration.ssl_ca_cert = str(self.ca_cert_path)
        return configuration

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on :meth:`kube_client_configuration` (close it when done)."""
        from kubernetes import client  # noqa: PLC0415 - keep the launcher importable without the client

        return client.ApiClient(self.kube_client_configuration())

    # ------------------------------------------------------------------ etcd

    def etcd_revision(self) -> int:
        """etcd's current revision (the newest resourceVersion of any object)."""
        return self.etcd.revision()

    def compact(self) -> int:
        """Compact etcd at its current revision, as kube-apiserver's own compactor does; returns the revision.

        What clients see:

        * reads that reach etcd at an older revision answer 410 Expired at once;
        * but kube-apiserver serves most reads from its watch cache: lists at an exact older
          resourceVersion (``resourceVersionMatch=Exact``, ``limit`` with a resourceVersion, ``continue``)
          come from the cache's snapshots until its compactor, which polls every 15 s, drops the snapshots
          older than the compaction: from then on they answer 410 Expired;
        * watches from an older resourceVersion are served from the cache's window of events, whatever etcd
          compacted: they get an ERROR event with code 410 (in a 200 answer) only once the resourceVersion is
          older than that window, e.g. after :meth:`restart_apiserver`, which starts the cache afresh.
        """
        return self.etcd.compact()
