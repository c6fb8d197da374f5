"""The HTTP(S) front of the local Kubernetes API server: routing, auth, watch streams, logs, admin API.

URL layout, verbs, status codes and bodies follow kube-apiserver for namespaced core/v1 pods,
config maps and secrets, so the official ``kubernetes`` client works unchanged. Requests are
handled on one asyncio loop; the store does the object semantics, the kubelet the pod lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request, forbidden, method_not_allowed, unsupported_media_type
from .faults import Faults, RequestCounter
from .images import ImageTable
from .kubelet import Kubelet
from .logs import serve_log
from .resources import RESOURCES
from .selectors import FieldSelector, LabelSelector
from .store import DeleteOptions, Store, Stored, Watcher
from .tables import table, wants_table
from .validation import dns1123_label_errors

__all__ = ["LocalKubernetesServer", "ServerSettings"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json")
_SERVICE_ACCOUNT = "system:serviceaccount:dots:model-services-orchestrator"
_NAMESPACED = re.compile(
    r"^/api/v1/(?P<watch>watch/)?namespaces/(?P<namespace>[^/]+)"
    r"(?:/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?)?/?$")
_CLUSTER = re.compile(r"^/api/v1/(?P<watch>watch/)?(?P<resource>[^/]+)/?$")
_PUBLIC = frozenset({"/version", "/healthz", "/livez", "/readyz"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type=_JSON, headers=headers)


def _raw_json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _error_response(error: ApiError) -> web.Response:
    return _json_response(error.body(), error.code, error.headers or None)


def _not_found_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound")


class ServerSettings:
    """What the server is started with."""

    def __init__(self, *, token: str, kubelet_mode: str = "process", images: ImageTable | None = None,
                 repo_root: Path | None = None, bookmark_interval: float = 5.0, history_size: int = 20_000,
                 default_watch_timeout: float = 1800.0) -> None:
        self.token = token
        self.kubelet_mode = kubelet_mode
        self.images: ImageTable = images or {}
        self.repo_root = repo_root or Path(__file__).resolve().parents[2]
        self.bookmark_interval = bookmark_interval
        self.history_size = history_size
        self.default_watch_timeout = default_watch_timeout


class LocalKubernetesServer:
    """The API server plus its kubelet; ``start()`` listens, ``stop()`` ends streams and processes."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store = Store(history_size=settings.history_size)
        self.kubelet = Kubelet(self.store, mode=settings.kubelet_mode, images=settings.images,
                               repo_root=settings.repo_root)
        self.faults = Faults()
        self.requests = RequestCounter()
        self._runner: web.AppRunner | None = None
        self._stream_tasks: set[asyncio.Task[Any]] = set()
        self.app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port."""
        self.kubelet.start()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context, shutdown_timeout=1.0)
        await site.start()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Close watch streams, stop containers, stop listening."""
        self.store.freeze_watches(False)
        self.store.close_watchers("server shutting down")
        await self.kubelet.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_local/"):
            if request.remote not in _LOOPBACK:
                return _error_response(forbidden("the admin API is served to loopback clients only"))
            try:
                return await self._admin(request)
            except ApiError as error:
                return _error_response(error)
        key = self._request_kind(request)
        self.requests.count(key)
        try:
            self.faults.check(request.method, key.split(" ", 1)[0], path)
            if path not in _PUBLIC:
                self._authenticate(request)
            response = await handler(request)
        except ApiError as error:
            response = _error_response(error)
        except web.HTTPException:
            raise
        except Exception as error:  # a bug here must still answer like a server, not hang the client
            log.exception("internal error handling %s %s", request.method, request.path_qs)
            response = _error_response(ApiError(500, f"Internal error occurred: {error!r}", "InternalError"))
        self.requests.answered(response.status)
        return response

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.settings.token:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    @staticmethod
    def _request_kind(request: web.Request) -> str:
        match = _NAMESPACED.match(request.path) or _CLUSTER.match(request.path)
        resource = (match.group("resource") if match else None) or "other"
        groups = match.groupdict() if match else {}
        name = groups.get("name")
        subresource = groups.get("subresource")
        if subresource:
            resource = f"{resource}/{subresource}"
        method = request.method
        watch = bool(groups.get("watch")) or request.query.get("watch") in ("true", "1")
        if method == "GET" and not name:
            verb = "WATCH" if watch else "LIST"
        elif method == "GET" and watch:
            verb = "WATCH"
        elif method == "DELETE" and not name:
            verb = "DELETECOLLECTION"
        else:
            verb = method
        return f"{verb} {resource}"

    # ------------------------------------------------------------------ routing

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/version", "/version/"):
            return _json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-local",
                                   "gitCommit": "local", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                                   "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"})
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path in ("/", ""):
            return _json_response({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz",
                                             "/version"]})
        if path in ("/api", "/api/"):
            return _json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})
        if path in ("/apis", "/apis/"):
            return _json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if path in ("/api/v1", "/api/v1/"):
            return _json_response(self._discovery())
        match = _NAMESPACED.match(path)
        if match:
            return await self._namespaced(request, match)
        match = _CLUSTER.match(path)
        if match:
            return self._cluster_scope(request, match.group("resource"), bool(match.group("watch")))
        raise _not_found_path()

    def _discovery(self) -> dict[str, Any]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        resources: list[dict[str, Any]] = [{"name": "namespaces", "singularName": "namespace", "namespaced": False,
                                            "kind": "Namespace", "verbs": ["get"], "shortNames": ["ns"]}]
        for info in RESOURCES.values():
            resources.append({"name": info.plural, "singularName": info.singular, "namespaced": True,
                              "kind": info.kind, "verbs": verbs, "shortNames": list(info.short_names)})
            if "status" in info.subresources:
                resources.append({"name": f"{info.plural}/status", "singularName": "", "namespaced": True,
                                  "kind": info.kind, "verbs": ["get", "patch", "update"]})
            if "log" in info.subresources:
                resources.append({"name": f"{info.plural}/log", "singularName": "", "namespaced": True,
                                  "kind": "Pod", "verbs": ["get"]})
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}

    def _cluster_scope(self, request: web.Request, resource: str, watch_path: bool) -> web.StreamResponse:
        if resource == "namespaces":
            raise forbidden(f'namespaces is forbidden: User "{_SERVICE_ACCOUNT}" cannot list resource '
                            '"namespaces" in API group "" at the cluster scope')
        if resource not in RESOURCES:
            raise _not_found_path()
        if request.method != "GET":
            raise method_not_allowed(request.method)
        verb = "watch" if watch_path or request.query.get("watch") in ("true", "1") else "list"
        raise forbidden(f'{resource} is forbidden: User "{_SERVICE_ACCOUNT}" cannot {verb} resource "{resource}" '
                        'in API group "" at the cluster scope')

    async def _namespaced(  # noqa: PLR0912 - the REST verb table of a resource, one branch per verb
            self, request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        namespace = match.group("namespace")
        resource = match.group("resource")
        name = match.group("name")
        subresource = match.group("subresource")
        watch_path = bool(match.group("watch"))
        if dns1123_label_errors(namespace):
            raise ApiError(404, f'namespaces "{namespace}" not found', "NotFound",
                           {"name": namespace, "kind": "namespaces"})
        if resource is None:
            if request.method != "GET" or watch_path:
                raise method_not_allowed(request.method)
            return _json_response({"kind": "Namespace", "apiVersion": "v1", "metadata": {
                "name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        info = RESOURCES.get(resource)
        query = request.query
        method = request.method
        if info is None:
            if resource == "events" and name is None and method == "GET" and not watch_path:
                # kubectl describe lists events; there are none here
                return _json_response({"kind": "EventList", "apiVersion": "v1", "items": [], "metadata": {
                    "resourceVersion": str(self.store.resource_version)}})
            raise _not_found_path()
        if watch_path:
            if method != "GET" or subresource:
                raise method_not_allowed(method)
            return await self._watch(request, resource, namespace, name)
        if subresource is not None:
            if subresource not in info.subresources or name is None:
                raise _not_found_path()
            return await self._subresource(request, resource, namespace, name, subresource)
        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return await self._watch(request, resource, namespace, None)
                return self._list(resource, namespace, query, as_table=wants_table(request.headers.get("Accept", "")))
            if method == "POST":
                body = await self._read_json(request)
                stored = self.store.create(resource, namespace, body, dry_run=query.get("dryRun") == "All")
                return _raw_json_response(stored.full_json(), 201)
            if method == "DELETE":
                options = DeleteOptions.parse(query, await self._read_json(request, optional=True))
                deleted = self.store.delete_collection(
                    resource, namespace, labels=LabelSelector(query.get("labelSelector")),
                    fields=FieldSelector(query.get("fieldSelector"), resource), options=options)
                return self._list_body(resource, deleted, self.store.resource_version, None, None)
            raise method_not_allowed(method)
        if method == "GET":
            if query.get("watch") in ("true", "1"):
                return await self._watch(request, resource, namespace, name)
            stored = self.store.get(resource, namespace, name)
            if wants_table(request.headers.get("Accept", "")):
                return _json_response(table(resource, [stored]))
            return _raw_json_response(stored.full_json())
        if method == "PUT":
            body = await self._read_json(request)
            stored = self.store.replace(resource, namespace, name, body, dry_run=query.get("dryRun") == "All")
            return _raw_json_response(stored.full_json())
        if method == "PATCH":
            content_type, body = await self._read_patch(request)
            stored = self.store.patch(resource, namespace, name, content_type, body,
                                      dry_run=query.get("dryRun") == "All")
            return _raw_json_response(stored.full_json())
        if method == "DELETE":
            options = DeleteOptions.parse(query, await self._read_json(request, optional=True))
            stored, gone = self.store.delete(resource, namespace, name, options)
            if resource == "pods" or not gone:
                return _raw_json_response(stored.full_json())
            return _json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                   "details": {"name": name, "kind": resource, "uid": stored.uid}})
        raise method_not_allowed(method)

    async def _subresource(self, request: web.Request, resource: str, namespace: str, name: str,
                           subresource: str) -> web.StreamResponse:
        method = request.method
        if subresource == "log":
            if method != "GET":
                raise method_not_allowed(method)
            return await self._log(request, namespace, name)
        if method == "GET":
            return _raw_json_response(self.store.get(resource, namespace, name).full_json())
        if method == "PUT":
            body = await self._read_json(request)
            stored = self.store.replace(resource, namespace, name, body, subresource=subresource,
                                        dry_run=request.query.get("dryRun") == "All")
            return _raw_json_response(stored.full_json())
        if method == "PATCH":
            content_type, body = await self._read_patch(request)
            stored = self.store.patch(resource, namespace, name, content_type, body, subresource=subresource,
                                      dry_run=request.query.get("dryRun") == "All")
            return _raw_json_response(stored.full_json())
        raise method_not_allowed(method)

    @staticmethod
    async def _read_json(request: web.Request, *, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the request body is empty; expected a JSON object")
        content_type = request.content_type
        if content_type not in (_JSON, "application/octet-stream", "") and not optional:
            raise unsupported_media_type(content_type, (_JSON,))
        try:
            return json.loads(raw)
        except ValueError as error:
            raise bad_request(f"couldn't get version/kind; json parse error: {error}") from error

    @staticmethod
    async def _read_patch(request: web.Request) -> tuple[str, Any]:
        content_type = request.content_type
        if content_type not in _PATCH_TYPES:
            raise unsupported_media_type(content_type, _PATCH_TYPES)
        raw = await request.read()
        try:
            return content_type, json.loads(raw)
        except ValueError as error:
            raise bad_request(f"error decoding patch: {error}") from error

    # ------------------------------------------------------------------ list

    @staticmethod
    def _int_query(query: Any, name: str, minimum: int = 0) -> int | None:
        text = query.get(name)
        if text is None or text == "":
            return None
        try:
            value = int(text)
        except ValueError as error:
            raise bad_request(f"invalid {name}: {text!r}") from error
        if value < minimum:
            raise ApiError(422, f"{name}: Invalid value: {value}: must be greater than or equal to {minimum}",
                           "Invalid")
        return value

    def _list(self, resource: str, namespace: str, query: Any, *, as_table: bool = False) -> web.Response:
        result = self.store.list_objects(
            resource, namespace, labels=LabelSelector(query.get("labelSelector")),
            fields=FieldSelector(query.get("fieldSelector"), resource),
            resource_version=query.get("resourceVersion"),
            resource_version_match=query.get("resourceVersionMatch"),
            limit=self._int_query(query, "limit"), continue_token=query.get("continue"))
        if as_table:
            body = table(resource, result.items, result.resource_version)
            if result.continue_token:
                body["metadata"]["continue"] = result.continue_token
            return _json_response(body)
        return self._list_body(resource, result.items, result.resource_version, result.continue_token,
                               result.remaining)

    @staticmethod
    def _list_body(resource: str, items: list[Stored], resource_version: int, continue_token: str | None,
                   remaining: int | None) -> web.Response:
        metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
        if continue_token:
            metadata["continue"] = continue_token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        head = json.dumps({"kind": RESOURCES[resource].list_kind, "apiVersion": "v1", "metadata": metadata},
                          separators=(",", ":")).encode()
        body = head[:-1] + b',"items":[' + b",".join(item.item_json() for item in items) + b"]}"
        return _raw_json_response(body)

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, resource: str, namespace: str, name: str | None) -> web.StreamResponse:
        query = request.query
        fields_text = query.get("fieldSelector") or ""
        if name is not None:
            fields_text = ",".join(filter(None, [fields_text, f"metadata.name={name}"]))
        labels = LabelSelector(query.get("labelSelector"))
        fields = FieldSelector(fields_text, resource)
        timeout_query = self._int_query(query, "timeoutSeconds")
        # like kube-apiserver: no timeoutSeconds (or 0) means the server's own, randomised timeout
        timeout = float(timeout_query) if timeout_query else (
            self.settings.default_watch_timeout * (1 + random.random()))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        send_initial = query.get("sendInitialEvents") == "true"
        if send_initial and not bookmarks:
            raise ApiError(422, "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true "
                                "when sendInitialEvents is set", "Invalid")
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(resource, namespace, labels=labels, fields=fields,
                                       resource_version=query.get("resourceVersion"),
                                       send_initial_events=send_initial)
        except ApiError as error:
            if error.code != 410:
                raise
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": error.body()},
                                            separators=(",", ":")).encode() + b"\n")
            await response.write_eof()
            return response
        kind = RESOURCES[resource].kind
        try:
            await response.prepare(request)
            if send_initial:
                watcher.push_line(self._bookmark(kind, watcher, initial_end=True))
            await self._stream(request, response, watcher, kind=kind, timeout=timeout, bookmarks=bookmarks)
        except ConnectionResetError:
            return response
        finally:
            self.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _bookmark(self, kind: str, watcher: Watcher, *, initial_end: bool = False) -> bytes:
        resource_version = max(self.store.resource_version, watcher.after_resource_version)
        metadata: dict[str, Any] = {"resourceVersion": str(resource_version), "creationTimestamp": None}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj: dict[str, Any] = {"kind": kind, "apiVersion": "v1", "metadata": metadata}
        if kind == "Pod":
            obj["spec"] = {"containers": None}
            obj["status"] = {}
        return json.dumps({"type": "BOOKMARK", "object": obj}, separators=(",", ":")).encode() + b"\n"

    async def _stream(self, request: web.Request, response: web.StreamResponse, watcher: Watcher, *, kind: str,
                      timeout: float, bookmarks: bool) -> None:
        started = time.monotonic()
        deadline = started + timeout
        interval = self.settings.bookmark_interval
        next_bookmark = started + interval
        while True:
            while self.store.watches_frozen and not watcher.closed:
                await asyncio.sleep(0.05)  # silent but open, like a stuck proxy
                next_bookmark = time.monotonic() + interval
            watcher.wake.clear()
            if watcher.lines:
                chunk = b"".join(watcher.lines)
                watcher.lines.clear()
                await response.write(chunk)
            if watcher.closed:
                return
            now = time.monotonic()
            if now >= deadline:
                if bookmarks:
                    await response.write(self._bookmark(kind, watcher))
                return
            if bookmarks and now >= next_bookmark:
                await response.write(self._bookmark(kind, watcher))
                next_bookmark = now + interval
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            wake_at = min(deadline, next_bookmark) if bookmarks else deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.wake.wait(), min(max(wake_at - now, 0.0), 5.0))

    # ------------------------------------------------------------------ logs

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        query = request.query
        pod = self.store.get("pods", namespace, name)
        tail_lines = self._int_query(query, "tailLines")
        limit_bytes = self._int_query(query, "limitBytes", minimum=1)
        buffer = self.kubelet.log_buffer(pod, query.get("container"), previous=query.get("previous") == "true")

        def still_there() -> bool:
            current = self.store.find("pods", namespace, name)
            return current is not None and current.uid == pod.uid

        return await serve_log(request, buffer, tail_lines=tail_lines, limit_bytes=limit_bytes, still_there=still_there)

    # ------------------------------------------------------------------ admin API

    async def _admin(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0912 - one branch per endpoint
        path = request.path.rstrip("/")
        method = request.method
        if path == "/_local/healthz":
            return _json_response({"ok": True})
        if path == "/_local/faults":
            if method == "POST":
                spec = await self._read_json(request)
                if not isinstance(spec, dict):
                    raise bad_request("expected a JSON object")
                try:
                    rule = self.faults.add(spec)
                except ValueError as error:
                    raise bad_request(str(error)) from error
                return _json_response(rule.describe(), 201)
            if method == "DELETE":
                self.faults.clear()
                return _json_response({"cleared": True})
            if method == "GET":
                return _json_response([rule.describe() for rule in self.faults.rules()])
        elif method == "POST" and path == "/_local/watches/close":
            return _json_response({"closed": self.store.close_watchers()})
        elif method == "POST" and path == "/_local/compact":
            options = await self._read_json(request, optional=True) or {}
            self.store.compact()
            expired = self.store.expire_watchers() if options.get("expire_watches", True) else 0
            return _json_response({"resourceVersion": str(self.store.resource_version), "expiredWatches": expired})
        elif method == "POST" and path == "/_local/watches/expire":
            return _json_response({"expired": self.store.expire_watchers()})
        elif path == "/_local/requests" and method == "GET":
            return _json_response(self.requests.snapshot())
        elif path == "/_local/requests/reset" and method == "POST":
            self.requests.reset()
            return _json_response({"reset": True})
        elif path in ("/_local/freeze_watches", "/_local/watches/freeze") and method == "POST":
            self.store.freeze_watches(True)
            return _json_response({"frozen": True})
        elif path in ("/_local/unfreeze_watches", "/_local/unfreeze", "/_local/watches/unfreeze") \
                and method == "POST":
            self.store.freeze_watches(False)
            return _json_response({"frozen": False})
        elif path == "/_local/stats" and method == "GET":
            return _json_response({
                "resourceVersion": str(self.store.resource_version),
                "oldestResumableResourceVersion": str(self.store.oldest_resumable),
                "objects": self.store.counts(), "watches": len(self.store.watchers()),
                "kubelet": self.settings.kubelet_mode, "watchesFrozen": self.store.watches_frozen})
        else:
            match = re.fullmatch(r"/_local/pods/([^/]+)/([^/]+)/log", path)
            if match and method == "POST":
                pod = self.store.get("pods", match.group(1), match.group(2))
                buffer = self.kubelet.log_buffer(pod, request.query.get("container"))
                buffer.append(await request.read())
                return _json_response({"appended": True})
        raise _not_found_path()
