"""A small kubelet (and scheduler) for a real kube-apiserver: the nodes of the test control plane.

Why: the tests and benchmarks run the daemon against a real etcd + kube-apiserver +
kube-controller-manager (see ``launcher.py``), with no kube-scheduler and no container runtime. This
process plays both missing parts for the node ``local-node``, over the API only, as the real ones do:

* registers the Node (labels ``type=worker``, ``kubernetes.io/hostname``, ``kubernetes.io/os``; Ready;
  InternalIP 127.0.0.1; ``daemonEndpoints.kubeletEndpoint.Port``), keeps its Lease and Ready heartbeat fresh;
* lists and watches the pods of one namespace; binds (``pods/binding``) the pending ones whose nodeSelector
  and required node affinity match the node, and writes ``PodScheduled=False``/``Unschedulable`` on the
  others (they stay Pending);
* or, with ``--scheduler`` (a real kube-scheduler runs), binds nothing: it registers ``--nodes`` nodes
  (``local-node``, ``local-node-2``...) with ``--node-cpu``, ``--node-memory`` and ``--node-pods`` each, so
  that kube-scheduler's placement (or its ``Unschedulable``) is the real answer to "does it fit", and runs
  the pods kube-scheduler bound to any of them;
* runs bound pods: see ``kubelet_pods.py`` for the two modes (``process``: images from the table run as
  local subprocesses; ``status-only``: a bind and one status write to Running), the status written through
  ``pods/status``, ``activeDeadlineSeconds``, graceful deletion with the final ``gracePeriodSeconds=0``
  delete;
* serves ``/containerLogs/...`` over HTTPS (``kubelet_logs.py``) for ``kubectl logs`` / ``pods/log``.

Usage::

    python -m simulation_components.control_plane.kubelet --kubeconfig ADMIN_KUBECONFIG --namespace dots \\
        --node-name local-node --mode process|status-only --port PORT --tls-cert CERT --tls-key KEY \\
        [--images-file F.json] [--log-level WARNING] [--scheduler] [--nodes N] [--node-cpu 4] \\
        [--node-memory 8Gi] [--node-pods 110]

Prints ``{"kubelet": "ready", "port": PORT}`` on stdout once the node is registered, the log endpoint
listens and the pod watch runs. SIGTERM/SIGINT: the containers get SIGTERM, SIGKILL after 2 s, exit 0
(no pod status is written on the way out, as a stopping kubelet does not). Children also die with a
SIGKILLed kubelet (parent-death signal).

Differs from a real kubelet: one namespace only; no events, probes, volumes, init containers, resource
accounting (its nodes' capacity is only what they state, for kube-scheduler), image pull policies or
``command`` (argv comes from the image table), and a changed image does
not restart a container; restart back-off is 1 s doubling to 5 s (never reset); pull back-off 1 s doubling
to 5 s; while it stops a pod it writes no intermediate status, only the terminal one once every process has
ended; a status-only "container" ends with exit code 143 (as if it obeyed SIGTERM); the log endpoint
ignores ``timestamps``/``sinceSeconds``/``sinceTime`` and does not check the client certificate; the node
names are fixed (``local-node``, then ``local-node-<k>``); all nodes share one log endpoint. After a
kubelet restart, pods bound to the node are adopted: containers whose process is gone become
``ContainerStatusUnknown`` (exit 137) and restart as their restartPolicy says; status-only pods that are
Running stay as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from .images import load_images
from .kubelet_api import ApiError, KubeApi, read_kubeconfig
from .kubelet_containers import KubeletContext, Settings
from .kubelet_logs import LogBuffer, LogServer, LogUnavailableError
from .kubelet_pods import PodWorker
from .kubelet_process import add_node_arguments
from .kubelet_status import (
    NODE_NAME,
    Obj,
    binding,
    node_labels,
    node_manifest,
    node_names,
    node_selector_matches,
    node_status,
    unschedulable_status,
)

__all__ = ["MODES", "Kubelet", "main"]

log = logging.getLogger("simulation_components.control_plane.kubelet")

MODES = ("process", "status-only")
_REPO_ROOT = Path(__file__).resolve().parents[2]
_MERGE_PATCH = "application/merge-patch+json"
_LEASE_SECONDS = 40
_LEASE_RENEW_SECONDS = 10.0
_NODE_STATUS_SECONDS = 60.0
_WATCH_SECONDS = 300
_LIST_PAGE = 500
_CHILD_GRACE_SECONDS = 2.0


def _micro_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kubelet:
    """Scheduler (unless ``binds`` is False) and kubelet of the nodes, driven by a list+watch of the namespace's
    pods. ``nodes``: their names (the first is where it binds pods itself); ``capacity``: what each states."""

    def __init__(self, api: KubeApi, *, namespace: str, settings: Settings, port: int,
                 nodes: Sequence[str] = (NODE_NAME,), capacity: Mapping[str, str] | None = None,
                 binds: bool = True) -> None:
        self.api = api
        self.namespace = namespace
        self.port = port
        self.nodes = tuple(nodes)
        self.capacity = dict(capacity or {})
        self.binds = binds
        self.context = KubeletContext(api=api, settings=settings)
        self.workers: dict[str, PodWorker] = {}  # by uid: pods bound to this node (or being bound)
        self.by_name: dict[str, str] = {}  # pod name -> uid
        self.unschedulable: set[str] = set()  # uids marked Unschedulable already
        self.kubelet_version = "v0.0.0"
        self._node_uids: dict[str, str] = {}
        self._ready_since = time.time()

    # ------------------------------------------------------------------ node

    async def register_nodes(self) -> None:
        """Create each Node, or bring an existing one back to our labels, port, capacity and Ready status."""
        with contextlib.suppress(ApiError):
            self.kubelet_version = str((await self.api.request("GET", "/version")).get("gitVersion", "v0.0.0"))
        for name in self.nodes:
            await self._register_node(name)

    async def _register_node(self, name: str) -> None:
        now = time.time()
        try:
            await self.api.request("POST", "/api/v1/nodes", node_manifest(
                port=self.port, now=now, kubelet_version=self.kubelet_version, name=name, capacity=self.capacity))
        except ApiError as error:
            if error.status != 409:
                raise
        # Also after a create: kube-apiserver's TaintNodesByCondition gives a new node the not-ready taint,
        # which no node-lifecycle controller takes away here, and kube-scheduler respects it.
        node = await self.api.request(
            "PATCH", f"/api/v1/nodes/{name}",
            {"metadata": {"labels": node_labels(name)}, "spec": {"unschedulable": None, "taints": None}},
            content_type=_MERGE_PATCH)
        self._node_uids[name] = str(node["metadata"]["uid"])
        await self._write_node_status(name)
        await self._renew_lease(name)

    async def _write_node_status(self, name: str) -> None:
        status = node_status(port=self.port, now=time.time(), kubelet_version=self.kubelet_version,
                             ready_since=self._ready_since, name=name, capacity=self.capacity)
        await self.api.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status},
                               content_type=_MERGE_PATCH)

    async def _renew_lease(self, name: str) -> None:
        """The node heartbeat the node-lifecycle controller reads (if one runs)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": _LEASE_SECONDS,
                "renewTime": _micro_time(time.time())}
        try:
            await self.api.request("PATCH", path, {"spec": spec}, content_type=_MERGE_PATCH)
        except ApiError as error:
            if error.status != 404:
                raise
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": name, "ownerReferences": [
                         {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self._node_uids[name]}]},
                     "spec": spec}
            with contextlib.suppress(ApiError):  # no kube-node-lease namespace: no lease
                await self.api.request("POST", path.rsplit("/", 1)[0], lease)

    async def heartbeat(self) -> None:
        """Renew the Lease every 10 s and the Ready condition every minute."""
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(_LEASE_RENEW_SECONDS)
            try:
                for name in self.nodes:
                    await self._renew_lease(name)
                if time.monotonic() - last_status >= _NODE_STATUS_SECONDS:
                    for name in self.nodes:
                        await self._write_node_status(name)
                    last_status = time.monotonic()
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                log.warning("node heartbeat failed: %s", error)

    # ------------------------------------------------------------------ pods

    @property
    def _pods_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    async def list_pods(self) -> str:
        """List the namespace's pods (in pages), reconcile what we know with it; the list's resourceVersion."""
        seen: set[str] = set()
        params = {"limit": str(_LIST_PAGE)}
        while True:
            page = await self.api.request("GET", self._pods_path, params=params, limited=False)
            for pod in page.get("items") or []:
                seen.add(str(pod["metadata"]["uid"]))
                self.handle("ADDED", pod)
            continue_token = (page.get("metadata") or {}).get("continue")
            if not continue_token:
                resource_version = str(page["metadata"]["resourceVersion"])
                break
            params = {"limit": str(_LIST_PAGE), "continue": str(continue_token)}
        for uid in [*self.workers, *self.unschedulable]:
            if uid not in seen:
                self.forget(uid)
        return resource_version

    async def watch_pods(self, resource_version: str) -> None:
        """Follow the pods from ``resource_version`` on, forever: resume after a timeout or a broken
        connection, list again after 410 Gone (the resourceVersion is too old)."""
        while True:
            try:
                resource_version = await self._watch_once(resource_version)
            except ApiError as error:
                if error.status == 410:
                    log.info("pod watch expired, listing again")
                    resource_version = await self._relist()
                else:
                    log.warning("pod watch failed: %s", error)
                    await asyncio.sleep(1.0)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("pod watch interrupted: %s", error)
                await asyncio.sleep(0.5)

    async def _watch_once(self, resource_version: str) -> str:
        """One watch request until the server ends it; the resourceVersion to resume from."""
        params = {"resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(_WATCH_SECONDS)}
        async with contextlib.aclosing(self.api.watch(self._pods_path, params)) as events:
            async for event in events:
                kind, pod = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # a Status: 410 Expired when the resourceVersion is too old
                    raise ApiError("WATCH", self._pods_path, int(pod.get("code") or 500), pod)
                resource_version = str(pod["metadata"]["resourceVersion"])
                if kind != "BOOKMARK":
                    self.handle(str(kind), pod)
        return resource_version

    async def _relist(self) -> str:
        while True:
            try:
                return await self.list_pods()
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:  # e.g. a continue token expired
                log.warning("listing pods failed, trying again: %s", error)
                await asyncio.sleep(1.0)

    def handle(self, kind: str, pod: Obj) -> None:
        """One pod event (or one listed pod, as ADDED)."""
        metadata = pod["metadata"]
        uid = str(metadata["uid"])
        if kind == "DELETED":
            self.forget(uid)
            return
        worker = self.workers.get(uid)
        if worker is not None:
            worker.observe(pod)
            return
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if (node and node not in self.nodes) or phase in ("Succeeded", "Failed"):
            return  # another node's (it does not exist: stays Pending, as on a real cluster), or finished
        if not node and (not self.binds or spec.get("schedulingGates")):
            # kube-scheduler's to place (or to mark Unschedulable), or gated (Kueue's pod groups: the API
            # refuses a gated pod's binding); seen again once bound, or ungated
            return
        if not node:
            if metadata.get("deletionTimestamp") or uid in self.unschedulable:
                return  # the API server deletes an unbound pod at once
            if not node_selector_matches(spec):
                self.unschedulable.add(uid)
                self.context.spawn(self._mark_unschedulable(pod), f"unschedulable {metadata['name']}")
                return
        worker = PodWorker(self.context, pod)
        self.workers[uid] = worker
        self.by_name[worker.name] = uid
        if node:
            worker.start(adopted=True)
            worker.observe(pod)
        else:
            self.context.spawn(self._bind(worker), f"bind {worker.name}")

    async def _bind(self, worker: PodWorker) -> None:
        """Bind the pod to the node (the scheduler's job), then start it; retried until it works or the pod goes."""
        while not worker.gone:
            try:
                await self.api.request("POST", worker.path + "/binding",
                                       binding(worker.name, worker.uid, self.nodes[0]), decode=False)
                break
            except ApiError as error:
                if error.status == 409 and await self._bound_here(worker):
                    break  # a retried request whose first attempt had worked
                if error.status in (404, 409):  # gone, replaced, or bound elsewhere
                    self.forget(worker.uid)
                    return
                log.warning("binding %s failed: %s", worker.name, error)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("binding %s failed: %s", worker.name, error)
            await asyncio.sleep(1.0)
        if worker.uid in self.workers:
            worker.start()

    async def _bound_here(self, worker: PodWorker) -> bool:
        try:
            current = await self.api.request("GET", worker.path)
        except (ApiError, aiohttp.ClientError, TimeoutError):
            return False
        return bool((current.get("spec") or {}).get("nodeName") == self.nodes[0]
                    and current["metadata"]["uid"] == worker.uid)

    async def _mark_unschedulable(self, pod: Obj) -> None:
        old = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable" for c in old):
            return
        body = {"metadata": {"uid": pod["metadata"]["uid"]}, "status": unschedulable_status(old, now=time.time())}
        with contextlib.suppress(ApiError):  # gone or replaced meanwhile
            await self.api.request("PATCH", f"{self._pods_path}/{pod['metadata']['name']}/status", body,
                                   content_type=_MERGE_PATCH)

    def forget(self, uid: str) -> None:
        """The pod is gone: stop whatever runs for it, drop its logs."""
        self.unschedulable.discard(uid)
        worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.abandon()
            if self.by_name.get(worker.name) == uid:
                del self.by_name[worker.name]

    # ------------------------------------------------------------------ logs, shutdown

    def log_lookup(self, namespace: str, pod: str, container: str,
                   previous: bool) -> tuple[LogBuffer, Callable[[], bool]]:
        """The buffer ``/containerLogs/{namespace}/{pod}/{container}`` serves."""
        worker = self.workers.get(self.by_name.get(pod, "")) if namespace == self.namespace else None
        if worker is None:
            raise LogUnavailableError(404, f'pod "{pod}" does not exist')
        return worker.log_buffer(container, previous)

    async def close(self) -> None:
        """Kill every container (SIGTERM, SIGKILL after 2 s) without writing any status."""
        self.context.closing = True
        processes = [c.process for w in self.workers.values() for c in w.containers if c.process is not None]
        for worker in self.workers.values():
            worker.signal_all(signal.SIGTERM)
        if processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), _CHILD_GRACE_SECONDS)
        for worker in self.workers.values():
            worker.abandon()
        tasks = list(self.context.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(args: argparse.Namespace) -> None:
    """Register, serve logs, watch pods until SIGTERM/SIGINT."""
    settings = Settings(mode=args.mode, images=load_images(args.images_file), repo_root=_REPO_ROOT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeApi(read_kubeconfig(args.kubeconfig)) as api:
        capacity = {key: value for key, value in (("cpu", args.node_cpu), ("memory", args.node_memory),
                                                  ("pods", args.node_pods)) if value}
        kubelet = Kubelet(api, namespace=args.namespace, settings=settings, port=args.port,
                          nodes=node_names(args.nodes), capacity=capacity, binds=not args.scheduler)
        logs = LogServer(kubelet.log_lookup)
        await logs.start(args.port, Path(args.tls_cert), Path(args.tls_key))
        await kubelet.register_nodes()
        resource_version = await kubelet.list_pods()
        background = [asyncio.create_task(kubelet.watch_pods(resource_version), name="pod watch"),
                      asyncio.create_task(kubelet.heartbeat(), name="node heartbeat")]
        print(json.dumps({"kubelet": "ready", "port": args.port}), flush=True)
        stopped = asyncio.create_task(_wait_for(stop), name="stop signal")
        done, _ = await asyncio.wait([stopped, *background], return_when=asyncio.FIRST_COMPLETED)
        for task in background:
            task.cancel()
        await kubelet.close()
        await logs.stop()
        await asyncio.gather(*background, return_exceptions=True)
        for task in done:
            if task is not stopped:
                task.result()  # a background task ended on its own: it failed, say why


async def _wait_for(event: asyncio.Event) -> None:
    await event.wait()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m simulation_components.control_plane.kubelet",
                                     description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig with the rights of an admin")
    parser.add_argument("--namespace", required=True, help="the namespace whose pods run on the node")
    parser.add_argument("--node-name", default=NODE_NAME, help=f"must be {NODE_NAME}")
    parser.add_argument("--mode", choices=MODES, default="process")
    parser.add_argument("--port", type=int, required=True, help="HTTPS port of the log endpoint")
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--images-file", help="JSON image table: {image: [argv...] | \"pull error\" | null}")
    parser.add_argument("--log-level", default="WARNING")
    add_node_arguments(parser)
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes: at least 1")
    if args.node_name != NODE_NAME:
        parser.error(f"--node-name: only {NODE_NAME} is supported (the node labels are fixed)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s kubelet %(name)s: %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
