"""Everything the daemon asks of the Kubernetes API: pods, their logs, the simulation records, the watch.

The official client is synchronous, so every call runs in a bounded thread
pool and the watch in a thread of its own that feeds the event loop. Every
failure is translated once, where the call is made, into a ``kube_errors``
class: the gateway's methods raise nothing else (no ``ApiException``, no
urllib3 error). The transient ones (429, 5xx, no answer) are retried with
capped exponential backoff and jitter; a create retried after it may have
reached the server takes AlreadyExists (on a pod that carries our marks) as
success. A client-side rate limit keeps a large simulation from flooding a
shared API server. Pod bodies go over the wire as the plain JSON
``pod_specs`` builds (turning thousands of them into client model objects
first costs more CPU than the whole rest of a deployment).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import orjson
import urllib3
from kubernetes.client.exceptions import ApiException

from model_services_orchestrator.kube_errors import (
    TRANSIENT,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Unreachable,
    from_status,
    translate,
)
from model_services_orchestrator.leadership import ANNOTATION_EPOCH, LeadershipLostError
from model_services_orchestrator.logs import get_logger
from model_services_orchestrator.metrics import RestClientStats
from model_services_orchestrator.model_registry import GROUP, PLURAL, VERSION
from model_services_orchestrator.pod_specs import ownership_tests, owns
from model_services_orchestrator.rate_limit import TokenBucket
from model_services_orchestrator.settings import Settings

__all__ = [
    "ConfigurationError",
    "CreateOutcome",
    "KubernetesGateway",
    "PodWatcher",
    "WatchEvent",
    "WatchListed",
    "WatchListing",
    "api_request",
    "build_api_client",
    "credentials_source",
    "measure_requests",
]

_log = get_logger(__name__)
_T = TypeVar("_T")

_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_KEPT_OBJECT_METADATA = frozenset({"name", "uid", "labels", "annotations", "resourceVersion", "ownerReferences"})
# Pods a list page holds: a pod's metadata is some KB of JSON (most of it managedFields), a few tens of KB as
# Python objects until it is trimmed.
_PAGE = 100


class ConfigurationError(RuntimeError):
    """The settings do not say how to reach a Kubernetes API server."""


def build_api_client(settings: Settings) -> kubernetes.client.ApiClient:
    """An API client from, in order: ``KUBERNETES_API_TOKEN``, the in-cluster service account, a kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if settings.kubernetes_api_token is not None and settings.kubernetes_api_token.get_secret_value():
        configuration.host = f"{settings.kubernetes_scheme}://{settings.kubernetes_host}:{settings.kubernetes_port}"
        configuration.api_key = {"BearerToken": settings.kubernetes_api_token.get_secret_value()}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        if settings.kubernetes_ca_cert is not None:
            if not settings.kubernetes_ca_cert.is_file():
                raise ConfigurationError(f"KUBERNETES_CA_CERT {settings.kubernetes_ca_cert} is not a file")
            configuration.ssl_ca_cert = str(settings.kubernetes_ca_cert)
            configuration.verify_ssl = True
        else:
            # The upstream orchestrator never verified the API server; keep that working, but say so.
            configuration.verify_ssl = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    elif (_SERVICE_ACCOUNT_DIR / "token").is_file():
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException as exc:
            raise ConfigurationError(f"in-cluster service account unusable: {exc}") from exc
    else:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        except (kubernetes.config.ConfigException, OSError, TypeError) as exc:
            raise ConfigurationError(
                "no KUBERNETES_API_TOKEN, no in-cluster service account and no usable kubeconfig "
                f"(KUBECONFIG or ~/.kube/config): {exc}"
            ) from exc
    configuration.connection_pool_maxsize = settings.pod_create_concurrency + 8
    # Retries are ours (with backoff and the AlreadyExists rule), not urllib3's blind ones.
    configuration.retries = 0
    return kubernetes.client.ApiClient(configuration)


def measure_requests(api_client: kubernetes.client.ApiClient, stats: RestClientStats) -> None:
    """Count and time every request ``api_client`` sends, as client-go's ``rest_client_*`` metrics do.

    Wrapped where every request of the official client passes (``RESTClientObject.request``): the
    gateway's calls, the pod watch's lists and watches (timed to their answer's headers, as client-go's
    are) and the Lease's reads and writes.
    """
    rest = api_client.rest_client
    send: Callable[..., Any] = rest.request

    def measured(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        code = "<error>"
        try:
            response = send(method, url, *args, **kwargs)
            code = str(response.status)
            return response
        except ApiException as exc:
            if exc.status:  # the client's own "no answer" errors carry status 0
                code = str(exc.status)
            raise
        finally:
            stats.observe(method, code, time.monotonic() - started)

    rest.request = measured  # type: ignore[method-assign]  # one wrapper, where every request passes


def credentials_source(settings: Settings) -> str:
    """Where ``build_api_client`` takes the daemon's credentials from, as an operator would set them."""
    if settings.kubernetes_api_token is not None and settings.kubernetes_api_token.get_secret_value():
        return "KUBERNETES_API_TOKEN"
    if (_SERVICE_ACCOUNT_DIR / "token").is_file():
        return f"the pod's service account ({_SERVICE_ACCOUNT_DIR / 'token'})"
    return "the kubeconfig (KUBECONFIG or ~/.kube/config)"


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """What became of a create: made (or already there), or rejected for good (``status`` and the API's
    ``reason`` say why; ``name_taken`` when another's pod has the name)."""

    created: bool
    status: int = 0
    reason: str = ""
    name_taken: bool = False


def api_request(api_client: kubernetes.client.ApiClient, method: str, path: str, *, timeout: float,
                body: Any = None, content_type: str = "application/json", query: list[tuple[str, Any]] | None = None,
                want_answer: bool = True, accept: str = "application/json", raw: bool = False) -> Any:
    """One blocking request through the official client; the answer as JSON (``raw``: its bytes; not
    ``want_answer``: nothing, streamed past). A failure status raises ``ApiException``."""
    params = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params={"Accept": accept, "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*params, _request_timeout=timeout)
    if 200 <= response.status <= 299 and not want_answer:
        # A delete-collection answers with every object it deleted (tens of MB for ten thousand
        # pods): let it pass through the socket without ever holding it.
        for _ in response.response.stream(64 * 1024, decode_content=False):
            pass
        response.response.release_conn()
        return None
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)  # translated by the gateway's _call, with every other failure
    if raw:
        return data
    return orjson.loads(data) if data else None


class KubernetesGateway:
    """Async calls on the namespace's pods, logs, ConfigMaps and Secrets, run in a bounded thread pool.

    Every method raises only ``KubeError`` subclasses (``kube_errors``), transient ones only once
    ``max_attempts`` tries have failed; a bug (not a Kubernetes failure) propagates as it is.
    ``api_errors`` counts failed requests by HTTP status (0: no answer), except the 404s a caller expects
    (a pod or object read or deleted that is already gone); ``reachable`` is False after a
    call gave up without an answer, True again after any answer.
    """

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        concurrency: int,
        request_timeout: float,
        qps: float,
        burst: int,
        max_attempts: int = 8,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
    ) -> None:
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self._executor = ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="k8s-api")
        self._slots = asyncio.Semaphore(concurrency)
        self.request_timeout = request_timeout
        self._bucket = TokenBucket(rate=qps, burst=burst)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.reachable = True
        self.api_errors: dict[int, int] = {}
        # Only the leader writes (``leadership.Tenure.check``; no-op without leader election), and what
        # it writes carries its epoch (the Lease's transitions) and the resourceVersion it last saw.
        self.fence: Callable[[], None] = lambda: None
        self.epoch: int | None = None  # None: no leader election, nothing to fence by epoch
        self._versions: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- plumbing

    def _raw(self, method: str, path: str, *, fenced: bool = True, **options: Any) -> Any:
        """``api_request`` with this gateway's client and timeout; only the leader's requests change things
        (not ``fenced``: a dry run, which changes nothing)."""
        if method != "GET" and fenced:
            self.fence()  # checked in the thread, just before the request leaves
        return api_request(self.api_client, method, path, timeout=self.request_timeout, **options)

    async def _call(self, what: str, function: Callable[[], _T], *,
                    passthrough: tuple[type[KubeError], ...] = ()) -> _T:
        """Run a blocking call in the pool; a failure is raised as its ``KubeError`` (from the original).

        The transient errors are retried, up to ``max_attempts`` tries, unless they are ``passthrough``
        (an answer the caller expects and handles: raised at once). A failure that is no Kubernetes
        failure (a bug) is raised as it is, without a retry.
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            await self._bucket.take()
            async with self._slots:
                try:
                    result = await loop.run_in_executor(self._executor, function)
                except Exception as exc:
                    error = translate(exc, what)
                    if error is None:
                        raise
                    if not (isinstance(error, NotFound) and isinstance(error, passthrough)):
                        self.api_errors[error.status] = self.api_errors.get(error.status, 0) + 1
                    if (isinstance(error, passthrough) or not isinstance(error, TRANSIENT)
                            or attempt >= self._max_attempts):
                        if isinstance(error, Unreachable):
                            self.reachable = False
                        if error is exc:
                            raise
                        raise error from exc
                    delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
                    delay = min(self._backoff_cap, error.retry_after or random.uniform(delay / 2, delay))  # noqa: S311
                    _log.info("kubernetes call failed, retrying", call=what, status=error.status or None,
                              error=type(error).__name__, detail=str(error)[:300], attempt=attempt,
                              delay_seconds=round(delay, 2))
                else:
                    self.reachable = True
                    return result
            await asyncio.sleep(delay)

    # -- the first calls

    async def check_access(self, label_selector: str) -> None:
        """The daemon's first calls, which change nothing: list (at most) one of our pods, and create a
        ConfigMap as a dry run (admission checks that the namespace exists; nothing is stored).

        Raises the ``KubeError`` of the first that fails (a transient one once the retries are spent):
        ``Unauthorized`` for a refused token, ``Forbidden`` for a namespace the token may not use (or that
        does not exist, as RBAC answers), ``NotFound`` for a namespace that does not exist, told to a token
        allowed everywhere (a list in a missing namespace is merely empty).
        """
        pods = f"/api/v1/namespaces/{self.namespace}/pods"
        await self._call("list pods", lambda: self._raw(
            "GET", pods, query=[("labelSelector", label_selector), ("limit", 1)], accept=_METADATA_ONLY))
        configmaps = f"/api/v1/namespaces/{self.namespace}/configmaps"
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "mso-start-check-"}}
        await self._call("create configmaps", lambda: self._raw(
            "POST", configmaps, body=probe, query=[("dryRun", "All")], want_answer=False, fenced=False))

    # -- the lists and watches of the watchers (blocking: called in their threads)

    def watch_pods(self, **options: Any) -> Any:
        """A list of the namespace's pods, or a watch of them (``watch=True``), with the client's options."""
        return self.core.list_namespaced_pod(namespace=self.namespace, **options)

    def watch_quotas(self, **options: Any) -> Any:
        """A list of the namespace's ResourceQuotas, or a watch of them (``watch=True``): admission's."""
        return self.core.list_namespaced_resource_quota(namespace=self.namespace, **options)

    def watch_model_services(self, **options: Any) -> Any:
        """A list of the namespace's ModelServices, or a watch of them (``watch=True``)."""
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **options)

    async def probe_model_services(self) -> None:
        """List (at most) one ModelService: ``NotFound`` when the CRD is not installed, ``Forbidden`` when the
        Role does not grant it (both raised at once, without retries)."""
        def probe() -> None:
            response = self.watch_model_services(limit=1, _preload_content=False,
                                                 _request_timeout=self.request_timeout)
            response.read()  # read whole before the connection goes back to the pool
            response.release_conn()

        await self._call("list modelservices", probe, passthrough=(NotFound, Forbidden))

    # -- quotas

    async def list_quotas(self) -> list[dict[str, Any]]:
        """The namespace's ResourceQuotas, read consistently (no resourceVersion: as of now, not a cache's past):
        their ``used`` counts every pod created before the answer."""
        path = f"/api/v1/namespaces/{self.namespace}/resourcequotas"
        result = await self._call("list resourcequotas", lambda: self._raw("GET", path))
        return list(result.get("items") or [])

    # -- pods

    async def create_pod(self, body: dict[str, Any], marks: Mapping[str, Mapping[str, str]]) -> CreateOutcome:
        """Create the pod; one already there is taken as created only if it carries ``marks``.

        A permanent rejection (Invalid, Forbidden, Unauthorized, ...) is an outcome, not created; a
        transient error still failing after the retries is raised (``TooManyRequests``, ``ServerError``,
        ``Unreachable``).
        """
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        try:
            await self._call("create pod", lambda: self._raw("POST", path, body=body, want_answer=False),
                             passthrough=(Conflict,))
        except Conflict:
            # Ours from an earlier attempt (or an earlier life), or another's that has the name.
            existing = await self.read_pod(body["metadata"]["name"])
            if existing is not None and owns(existing, marks):
                return CreateOutcome(created=True, status=409)
            return CreateOutcome(created=False, status=409, reason="a pod of that name is not this model's",
                                 name_taken=True)
        except TRANSIENT:
            raise
        except KubeError as error:
            return CreateOutcome(created=False, status=error.status, reason=error.message or error.reason)
        return CreateOutcome(created=True, status=201)

    async def read_pod(self, name: str) -> dict[str, Any] | None:
        """The pod as the API's JSON; ``None`` when there is none of that name."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}"
        try:
            pod: dict[str, Any] = await self._call("read pod", lambda: self._raw("GET", path),
                                                   passthrough=(NotFound,))
        except NotFound:
            return None
        return pod

    async def stop_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool:
        """Stop the pod's containers in place: ``activeDeadlineSeconds`` 1 makes its kubelet kill them and
        leave the pod Failed (DeadlineExceeded), its logs readable.

        Only if the pod carries ``marks`` (the patch tests them, atomically with the change): False when
        it does not (a failed ``test`` is a 422: ``Invalid``), or is gone.
        """
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}"
        patch = [*ownership_tests(marks), {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 1}]
        try:
            await self._call("stop pod", lambda: self._raw(
                "PATCH", path, body=patch, content_type="application/json-patch+json", want_answer=False),
                passthrough=(NotFound, Invalid))
        except (NotFound, Invalid):
            return False
        return True

    async def delete_own_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool:
        """Delete the pod if it carries ``marks``; the uid precondition keeps a new pod of that name safe.

        False when there is none, it is not ours, or the uid precondition failed (``Conflict``).
        """
        pod = await self.read_pod(name)
        if pod is None or not owns(pod, marks):
            return False
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}"
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": pod["metadata"]["uid"]}}
        try:
            await self._call("delete pod", lambda: self._raw("DELETE", path, body=body),
                             passthrough=(NotFound, Conflict))
        except (NotFound, Conflict):
            return False
        return True

    async def delete_pods(self, label_selector: str) -> None:
        """Delete every pod the selector matches (none is fine)."""
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        await self._call("delete pods", lambda: self._raw(
            "DELETE", path, query=[("labelSelector", label_selector)], want_answer=False))

    async def delete_kueue_workload(self, name: str, pod_names: Collection[str]) -> bool:
        """Delete Kueue's Workload ``name`` if it is the one of these pods (each of its owners is a Pod, one of
        them named in ``pod_names``); the uid precondition keeps a new Workload of that name safe.

        Kueue (v0.17) keeps its finalizer on the pods of a group it never admitted until its Workload goes:
        deleting it is Kueue's own way to end such a group. False when there is none, or it is not theirs, or
        the Role does not let the daemon read or delete Workloads (a warning says so: the cleanup goes on).
        """
        path = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{self.namespace}/workloads/{name}"
        try:
            workload: dict[str, Any] = await self._call("read workload", lambda: self._raw("GET", path),
                                                        passthrough=(NotFound, Forbidden))
        except NotFound:
            return False
        except Forbidden as error:
            _log.warning("Kueue's Workload not deleted: the Role does not grant it; pods Kueue never admitted may "
                         "keep its finalizer", workload=name, detail=str(error)[:300],
                         grant="get, delete on workloads (kueue.x-k8s.io), k8s_cluster_configuration/role.yaml")
            return False
        owners = workload["metadata"].get("ownerReferences") or []
        if not owners or any(owner.get("kind") != "Pod" for owner in owners) or not any(
                owner.get("name") in pod_names for owner in owners):
            return False
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": workload["metadata"]["uid"]}}
        try:
            await self._call("delete workload", lambda: self._raw("DELETE", path, body=body),
                             passthrough=(NotFound, Conflict, Forbidden))
        except (NotFound, Conflict, Forbidden):
            return False
        return True

    async def list_pods(self, label_selector: str, keep: Callable[[dict[str, Any]], _T | None]) -> list[_T]:
        """``keep(pod)`` of each pod the selector matches, where it is not None, a page at a time; a pod is its
        metadata only (``{"metadata": ...}``).

        Ten thousand whole pods are tens of MB of JSON and hundreds of MB of dicts; their metadata, as
        ``PartialObjectMetadataList``, a tenth of that, and only what ``keep`` takes is kept past its page.
        """
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        found: list[_T] = []
        token = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", _PAGE)] + ([("continue", token)] if token else [])
            page = await self._call("list pods", functools.partial(
                self._raw, "GET", path, query=query, accept=_METADATA_ONLY))
            found.extend(kept for item in page.get("items") or []
                         if (kept := keep({"metadata": item.get("metadata") or {}})) is not None)
            if not (token := (page.get("metadata") or {}).get("continue") or ""):
                return found

    async def read_log_tail(self, name: str, lines: int) -> str:
        """The last ``lines`` lines of the pod's log (``NotFound`` when the pod is gone)."""
        def read() -> str:
            return str(self.core.read_namespaced_pod_log(
                name=name, namespace=self.namespace, tail_lines=lines, _request_timeout=self.request_timeout))
        return await self._call("read pod log", read)

    # -- records: a ConfigMap of state and a Secret of specs per simulation

    async def list_objects(self, kind: str, label_selector: str, *,
                           metadata_only: bool = False) -> list[dict[str, Any]]:
        """The objects of ``kind`` (``configmaps``, ``secrets``) the selector matches, as the API's JSON.

        ``metadata_only``: ``{"metadata": ...}`` of each (name, uid, resourceVersion, labels, annotations,
        owners): a simulation of ten thousand models has MiBs of record, which a deletion need not read.
        """
        path = f"/api/v1/namespaces/{self.namespace}/{kind}"
        accept = _METADATA_ONLY if metadata_only else "application/json"
        result = await self._call(f"list {kind}", lambda: self._raw(
            "GET", path, query=[("labelSelector", label_selector)], accept=accept))
        items = list(result.get("items") or [])
        if metadata_only:
            items = [{"metadata": {key: value for key, value in item["metadata"].items()
                                   if key in _KEPT_OBJECT_METADATA}} for item in items]
        for item in items:
            self._versions[kind, item["metadata"]["name"]] = item["metadata"]["resourceVersion"]
        return items

    async def put_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or replace it when it exists already; the object as the server has it.

        One that exists although this process did not know it is replaced only if no later leader wrote it.
        """
        name = body["metadata"]["name"]
        collection = f"/api/v1/namespaces/{self.namespace}/{kind}"
        body = self._stamped(body)
        try:
            created: dict[str, Any] = await self._call(
                f"create {kind}", lambda: self._raw("POST", collection, body=body), passthrough=(Conflict,))
        except Conflict:
            # Listed by name, not read: the Role grants no get on Secrets (a list of one is the same answer).
            listed = await self._call(f"list {kind}", lambda: self._raw(
                "GET", collection, query=[("fieldSelector", f"metadata.name={name}")]))
            if not (items := listed.get("items") or []):
                raise Conflict(f"{kind} {name} exists, then did not", what=f"create {kind}") from None
            existing: dict[str, Any] = items[0]
            if self.epoch is not None and _epoch_of(existing["metadata"]) > self.epoch:
                raise LeadershipLostError(f"{kind} {name} was written by a later leader") from None
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            created = await self._call(f"replace {kind}", lambda: self._fenced_put(kind, name, body))
        self._versions[kind, name] = created["metadata"]["resourceVersion"]
        return created

    async def replace_object(self, kind: str, body: dict[str, Any]) -> bool:
        """Replace an object this process wrote or read, at the resourceVersion it last saw of it.

        False when it is gone, or was never seen (the caller creates it with ``put_object``). A
        resourceVersion that moved on means another writer: ``LeadershipLostError``. Only the answer's
        resourceVersion is read: a record of ten thousand models is about 200 KB, and parsing the server's
        copy of it for nothing is another few milliseconds per save.
        """
        name = body["metadata"]["name"]
        if (version := self._versions.get((kind, name))) is None:
            return False
        body = self._stamped(body)
        body["metadata"]["resourceVersion"] = version
        try:
            self._versions[kind, name] = await self._call(
                f"replace {kind}", lambda: self._fenced_put(kind, name, body, whole=False), passthrough=(NotFound,))
        except NotFound:
            self._versions.pop((kind, name), None)
            return False
        return True

    def _fenced_put(self, kind: str, name: str, body: dict[str, Any], *, whole: bool = True) -> Any:
        """PUT at the body's resourceVersion; the object (``whole``) or its new resourceVersion."""
        path = f"/api/v1/namespaces/{self.namespace}/{kind}/{name}"
        try:
            answer = self._raw("PUT", path, body=body, raw=not whole)
        except ApiException as exc:
            if exc.status == 409:
                raise LeadershipLostError(f"{kind} {name} changed since this process last wrote it: "
                                          "another replica writes the records") from exc
            raise
        return answer if whole else _resource_version(answer)

    async def delete_object(self, kind: str, name: str) -> None:
        """Delete the object, at the resourceVersion last seen of it (``LeadershipLostError`` if it moved on);
        one already gone is fine."""
        path = f"/api/v1/namespaces/{self.namespace}/{kind}/{name}"
        body = None
        if (version := self._versions.pop((kind, name), None)) is not None:
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": version}}
        try:
            await self._call(f"delete {kind}", lambda: self._raw("DELETE", path, body=body),
                             passthrough=(NotFound, Conflict))
        except NotFound:
            pass
        except Conflict as exc:
            raise LeadershipLostError(f"{kind} {name} changed since this process last wrote it") from exc

    def _stamped(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``body`` whose metadata this gateway may change, with its epoch."""
        metadata = {**body["metadata"]}
        if self.epoch is not None:
            metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION_EPOCH: str(self.epoch)}
        return {**body, "metadata": metadata}


def _epoch_of(metadata: dict[str, Any]) -> int:
    value = (metadata.get("annotations") or {}).get(ANNOTATION_EPOCH, "0")
    return int(value) if value.isdigit() else 0


_RESOURCE_VERSION = re.compile(rb'"resourceVersion":"([^"]+)"')


def _resource_version(answer: bytes) -> str:
    """The object's resourceVersion: the first in its JSON, which the API server writes in its metadata,
    before any data (whose quotes are escaped, so no value can look like it)."""
    found = _RESOURCE_VERSION.search(answer, 0, 4096) or _RESOURCE_VERSION.search(answer)
    if found is None:
        raise ValueError("the API server's answer carries no resourceVersion")
    return found.group(1).decode()


# ---------------------------------------------------------------- the watch


def _line_batches(response: Any) -> Iterator[list[bytes]]:
    """The stream's complete, non-empty lines, a batch per read.

    The client's own ``iter_resp_lines`` copies its whole buffer for every
    line, which turns a burst of events into quadratic work.
    """
    pending = b""
    # Reads of at most 256 KiB: a server (or proxy) may send a lagging watcher thousands of queued
    # events in one chunk, and all of them at once, as bytes, lines and dicts, is a lot of memory.
    for chunk in response.stream(amt=256 * 1024, decode_content=False):
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        if lines := [part for part in parts if part]:
            yield lines


@dataclass(frozen=True, slots=True)
class WatchListing:
    """A full list is about to be requested: a pod known before this is in its snapshot, if it exists."""


@dataclass(frozen=True, slots=True)
class WatchListed:
    """A full list of our pods (at start, and after the watch expired), each as ``reduce`` made it."""

    pods: list[Any]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One ADDED, MODIFIED or DELETED pod, as ``reduce`` made it."""

    type: str
    pod: Any


class PodWatcher:
    """One label-filtered list+watch of our pods (or, with ``list_call``, of another namespaced resource: the
    ModelServices, the ResourceQuotas), in a thread, handing what it sees to a callback.

    Resumes from the last resourceVersion (bookmarks included) when a stream
    ends or goes silent; lists afresh on ``Gone`` (410, as the answer to the
    watch request or as an ERROR event in its stream). Every failure goes
    through ``kube_errors.translate``. The callback gets a
    ``WatchListing`` before it requests a (re)list, the ``WatchListed`` before
    any event that follows it, and events in
    batches (what one read from the stream brought), so that ten thousand pod
    changes do not cost ten thousand wake-ups of the event loop.
    """

    def __init__(
        self,
        *,
        gateway: KubernetesGateway,
        label_selector: str,
        deliver: Callable[[WatchListing | WatchListed | list[WatchEvent]], None],
        reduce: Callable[[dict[str, Any]], Any],
        watch_timeout_seconds: int,
        silence_seconds: float,
        list_call: Callable[..., Any] | None = None,
        what: str = "pod",
    ) -> None:
        self._gateway = gateway
        # The list (and, with watch=True, the watch) of the resource: the gateway's, with the client's options.
        self._list_call = list_call or gateway.watch_pods
        self._what = what
        # Applied in the watch thread: what waits in the loop's queue is what the daemon needs of a pod,
        # not the whole pod (a few hundred bytes instead of tens of KB of dicts, times thousands).
        self._reduce = reduce
        self._selector = label_selector
        self._deliver = deliver
        self._watch_timeout = watch_timeout_seconds
        self._silence = silence_seconds
        self._stop = threading.Event()
        self._response: Any = None
        self.in_sync = False
        self.restarts = 0
        self.relists = 0
        self.resource_version: str | None = None

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        connection = getattr(response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            # Closing the response here would wait for the lock its reader holds; shutting the socket
            # down wakes the reader, which then closes the response itself. The plain socket's method,
            # because a TLS socket's own shutdown also drops the TLS object under the reader's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def run(self) -> None:
        """The thread's body: list, then watch from there, until stopped."""
        failures = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 (any failure of the stream: resume after a pause)
                error = translate(exc, f"watch {self._what}s")
                if isinstance(error, Gone):
                    _log.info(f"{self._what} watch expired, listing again")
                    self.resource_version = None
                    self.in_sync = False
                    continue
                if self._stop.is_set():
                    return
                failures += 1
                # Not a Kubernetes failure (a bug in reduce or deliver, say): paused and resumed all the same.
                self._pause(failures, exc if error is None else error)

    def _pause(self, failures: int, exc: BaseException) -> None:
        self.in_sync = False
        if isinstance(exc, Unreachable):
            self._gateway.reachable = False
        status = exc.status if isinstance(exc, KubeError) else None
        delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
        _log.warning(f"{self._what} watch failed, resuming", error=type(exc).__name__, status=status or None,
                     detail=str(exc)[:300], delay_seconds=round(delay, 2))
        self._stop.wait(delay)

    def _list(self) -> None:
        self._deliver(WatchListing())
        response: Any = self._list_call(
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=self._gateway.request_timeout,
        )
        body = orjson.loads(response.data)
        self.relists += 1
        self._gateway.reachable = True
        self._deliver(WatchListed([self._reduce(pod) for pod in body.get("items") or []]))
        self.resource_version = body["metadata"]["resourceVersion"]
        self.in_sync = True

    def _watch_once(self) -> None:
        # A server-side timeout spread like client-go's, so many watchers do not renew in step.
        timeout = int(self._watch_timeout * random.uniform(1.0, 1.2))  # noqa: S311
        response: Any = self._list_call(
            label_selector=self._selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(self._gateway.request_timeout, self._silence),
        )
        self._response = response
        self.restarts += 1
        ended = False
        try:
            # stop() sets the flag before it looks for a stream to close: one of the two sees the other.
            if self._stop.is_set():
                return
            if not 200 <= response.status <= 299:
                raise from_status(response.status, body=response.data, http_reason=str(response.reason or ""),
                                  headers=response.headers, what=f"watch {self._what}s")
            self.in_sync = True
            self._gateway.reachable = True
            for lines in _line_batches(response):
                if self._stop.is_set():
                    return
                events: list[WatchEvent] = []
                try:
                    for line in lines:
                        event = orjson.loads(line)
                        kind = event.get("type")
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            # A Status: 410 Expired when the watch fell behind the server's history.
                            raise from_status(int(obj.get("code") or 500), body=obj, what=f"watch {self._what}s")
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            events.append(WatchEvent(kind, self._reduce(obj)))
                        if version := (obj.get("metadata") or {}).get("resourceVersion"):
                            self.resource_version = version
                finally:
                    # What came before an error still happened: hand it over either way.
                    if events:
                        self._deliver(events)
            ended = True
        finally:
            self._response = None
            if not ended or self._stop.is_set():
                # A stream left half-read must not go back to the pool: the next call on that
                # connection would read the rest of the watch as its answer, and hang.
                with contextlib.suppress(Exception):
                    response.close()
            response.release_conn()

