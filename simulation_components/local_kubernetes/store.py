"""The object store: every object, the global resourceVersion, the event history and the watchers.

It plays etcd plus the generic registry of kube-apiserver: create/update/patch/delete with the real
semantics (defaults, validation, preconditions, no-op updates that do not bump the resourceVersion,
graceful pod deletion, finalizers, owner-reference garbage collection), list at a resourceVersion
(current, exact from history, or 410), and watch from a resourceVersion with selector-aware fan-out.

All methods are synchronous and run on the event loop thread, so each write is atomic; stored objects
are immutable snapshots shared between the current state and the history (never mutate them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import defaults, patching, validation
from .errors import ApiError, already_exists, bad_request, conflict, expired, invalid, not_found
from .resources import KINDS_SERVED, RESOURCES, ResourceInfo
from .selectors import FieldSelector, LabelSelector

__all__ = ["DeleteOptions", "Event", "ListResult", "Store", "Stored", "Watcher"]

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace, name)

_JSON_SEPARATORS = (",", ":")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MAX_QUEUED_LINES = 200_000


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=_JSON_SEPARATORS, ensure_ascii=False).encode()


class Stored:
    """One immutable version of an object; its JSON is encoded at most once."""

    __slots__ = ("_full_json", "_item_json", "data", "info")

    def __init__(self, data: Obj, info: ResourceInfo) -> None:
        self.data = data
        self.info = info
        self._item_json: bytes | None = None
        self._full_json: bytes | None = None

    @property
    def metadata(self) -> Obj:
        """The object's metadata (read only)."""
        metadata: Obj = self.data["metadata"]
        return metadata

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        return str(self.metadata["namespace"])

    @property
    def uid(self) -> str:
        """``metadata.uid``."""
        return str(self.metadata["uid"])

    @property
    def resource_version(self) -> int:
        """``metadata.resourceVersion`` as a number."""
        return int(self.metadata["resourceVersion"])

    def item_json(self) -> bytes:
        """The object as it appears in ``items`` of a list (no kind/apiVersion, as on a real server)."""
        if self._item_json is None:
            self._item_json = _dumps(self.data)
        return self._item_json

    def full_json(self) -> bytes:
        """The object as a get or a watch event returns it (with kind and apiVersion)."""
        if self._full_json is None:
            self._full_json = b'{"kind":"' + self.info.kind.encode() + b'","apiVersion":"v1",' + self.item_json()[1:]
        return self._full_json

    def full(self) -> Obj:
        """A deep copy of the object with kind and apiVersion, safe to modify."""
        return {"kind": self.info.kind, "apiVersion": "v1", **copy.deepcopy(self.data)}


@dataclass(slots=True)
class Event:
    """One write, as kept in the history and offered to watchers and observers."""

    resource_version: int
    resource: str
    type: str  # ADDED, MODIFIED or DELETED
    obj: Stored
    prev: Stored | None


@dataclass(slots=True)
class ListResult:
    """The page of objects a list request returns."""

    items: list[Stored]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(slots=True)
class DeleteOptions:
    """The parts of ``DeleteOptions`` (body or query) that change what a delete does."""

    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str], body: Any) -> DeleteOptions:
        """Read the options from the query string and an optional JSON ``DeleteOptions`` body."""
        options = cls()
        source: Obj = dict(body) if isinstance(body, Mapping) else {}
        if "gracePeriodSeconds" in query:
            source["gracePeriodSeconds"] = query["gracePeriodSeconds"]
        if "propagationPolicy" in query:
            source["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            source["orphanDependents"] = query["orphanDependents"] == "true"
        if "dryRun" in query:
            source["dryRun"] = [query["dryRun"]]
        grace = source.get("gracePeriodSeconds")
        if grace is not None:
            try:
                options.grace_period_seconds = int(grace)
            except (TypeError, ValueError) as error:
                raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from error
        policy = source.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise invalid("DeleteOptions", "DeleteOptions", "", [{
                "reason": "FieldValueNotSupported", "field": "propagationPolicy",
                "message": f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                           '"Orphan"'}])
        if source.get("orphanDependents") is True:
            policy = "Orphan"
        options.propagation_policy = policy
        preconditions = source.get("preconditions")
        if isinstance(preconditions, Mapping):
            options.precondition_uid = preconditions.get("uid")
            options.precondition_resource_version = preconditions.get("resourceVersion")
        dry_run = source.get("dryRun")
        options.dry_run = isinstance(dry_run, list) and "All" in dry_run
        return options


@dataclass(eq=False)
class Watcher:
    """One open watch stream: which objects it wants and the event lines queued for it."""

    resource: str
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    after_resource_version: int = 0
    lines: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    close_reason: str = ""
    delivered_resource_version: int = 0

    def selects(self, stored: Stored) -> bool:
        """Whether this watch wants events about ``stored``."""
        if self.namespace is not None and stored.namespace != self.namespace:
            return False
        if self.labels and not self.labels.matches(stored.metadata.get("labels")):
            return False
        return not self.fields or self.fields.matches(stored.data)

    def push(self, event_type: str, stored: Stored) -> None:
        """Queue an event line for the stream."""
        self.push_line(b'{"type":"' + event_type.encode() + b'","object":' + stored.full_json() + b"}\n")

    def push_line(self, line: bytes) -> None:
        """Queue a raw line (e.g. an ERROR event) and wake the writer."""
        if self.closed:
            return
        self.lines.append(line)
        if len(self.lines) > _MAX_QUEUED_LINES:  # a reader that stopped reading: drop it like the real cacher
            self.close("too slow")
        self.wake.set()

    def offer(self, event: Event) -> None:
        """Translate a store event to what this watch sees (selectors turn MODIFIED into ADDED/DELETED)."""
        if event.resource_version <= self.after_resource_version:
            return
        now = self.selects(event.obj)
        before = event.prev is not None and event.type != "ADDED" and self.selects(event.prev)
        if event.type == "ADDED":
            if now:
                self.push("ADDED", event.obj)
        elif event.type == "DELETED":
            if now:
                self.push("DELETED", event.obj)
        elif now and before:
            self.push("MODIFIED", event.obj)
        elif now:
            self.push("ADDED", event.obj)
        elif before and event.prev is not None:
            # the object left the selection: DELETED with the old state at the new resourceVersion
            gone = copy.copy(event.prev.data)
            gone["metadata"] = {**event.prev.metadata, "resourceVersion": str(event.resource_version)}
            self.push("DELETED", Stored(gone, event.prev.info))

    def close(self, reason: str) -> None:
        """End the stream after the queued lines are written."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.wake.set()


def _encode_continue(resource_version: int, start_after: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": start_after})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(raw["rv"]), str(raw["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise bad_request(f"continue key is not valid: {error}") from error


def _parse_resource_version(text: str | None, what: str = "resourceVersion") -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError as error:
        raise bad_request(f"{what}: Invalid value: {text!r}: must be a positive integer") from error
    if value < 0:
        raise bad_request(f"{what}: Invalid value: {text!r}: must be a positive integer")
    return value


class Store:
    """All objects of all namespaces, the resourceVersion clock, the bounded history and the watchers."""

    def __init__(self, *, history_size: int = 20_000) -> None:
        # Start the clock at the current time in microseconds: after a restart (state lost) every
        # resourceVersion a client remembers is older than the new history, so it gets 410 and re-lists.
        self._resource_version = int(time.time() * 1_000_000)
        self._history: deque[Event] = deque(maxlen=history_size)
        self._objects: dict[str, dict[str, dict[str, Stored]]] = {name: {} for name in RESOURCES}
        self._by_uid: dict[str, Key] = {}
        self._dependents: dict[str, set[Key]] = {}
        self._orphan_on_removal: set[str] = set()
        self._watchers: dict[str, set[Watcher]] = {name: set() for name in RESOURCES}
        self._observers: list[Callable[[Event], None]] = []
        self.watches_frozen = False
        self.unfrozen = asyncio.Event()
        self.unfrozen.set()

    # ------------------------------------------------------------------ bookkeeping

    @property
    def resource_version(self) -> int:
        """The resourceVersion of the latest write."""
        return self._resource_version

    @property
    def oldest_resumable(self) -> int:
        """The oldest resourceVersion a watch (or exact list) can start from; older ones get 410."""
        if self._history:
            return self._history[0].resource_version - 1
        return self._resource_version

    def add_observer(self, observer: Callable[[Event], None]) -> None:
        """Call ``observer`` synchronously after every write (the kubelet and the GC use this)."""
        self._observers.append(observer)

    def compact(self) -> None:
        """Forget the history: every resourceVersion before now gives 410 Gone."""
        self._history.clear()

    def counts(self) -> dict[str, int]:
        """How many objects of each resource exist (for the admin API)."""
        return {resource: sum(len(names) for names in spaces.values())
                for resource, spaces in self._objects.items()}

    def watchers(self) -> list[Watcher]:
        """The open watches."""
        return [watcher for watchers in self._watchers.values() for watcher in watchers]

    def close_watchers(self, reason: str = "closed by the admin API") -> int:
        """End every open watch stream cleanly; returns how many were open."""
        watchers = self.watchers()
        for watcher in watchers:
            watcher.close(reason)
        return len(watchers)

    def expire_watchers(self) -> int:
        """End every open watch with an ERROR 410 Expired event (what a watch that fell behind an etcd
        compaction gets), after the events already queued; returns how many were open."""
        watchers = self.watchers()
        for watcher in watchers:
            error = expired(f"too old resource version: {watcher.delivered_resource_version} "
                            f"({self._resource_version})")
            watcher.push_line(_dumps({"type": "ERROR", "object": error.body()}) + b"\n")
            watcher.close("expired by the admin API")
        return len(watchers)

    def freeze_watches(self, frozen: bool) -> None:
        """Keep watch streams open but silent (no events, no bookmarks) until unfrozen."""
        self.watches_frozen = frozen
        if frozen:
            self.unfrozen.clear()
        else:
            self.unfrozen.set()

    def _next_resource_version(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def _commit(self, info: ResourceInfo, event_type: str, data: Obj, prev: Stored | None) -> Stored:
        resource_version = self._next_resource_version()
        data["metadata"] = {**data["metadata"], "resourceVersion": str(resource_version)}
        stored = Stored(data, info)
        namespace, name = stored.namespace, stored.name
        spaces = self._objects[info.plural]
        if event_type == "DELETED":
            names = spaces.get(namespace)
            if names is not None:
                names.pop(name, None)
                if not names:
                    del spaces[namespace]
            self._by_uid.pop(stored.uid, None)
            self._index_owners((info.plural, namespace, name), prev, None)
        else:
            spaces.setdefault(namespace, {})[name] = stored
            self._by_uid[stored.uid] = (info.plural, namespace, name)
            self._index_owners((info.plural, namespace, name), prev, stored)
        event = Event(resource_version, info.plural, event_type, stored, prev)
        self._history.append(event)
        for watcher in self._watchers[info.plural]:
            watcher.offer(event)
        for observer in self._observers:
            observer(event)
        if event_type == "DELETED":
            self._collect_dependents_of(stored.uid)
        return stored

    def _index_owners(self, key: Key, prev: Stored | None, new: Stored | None) -> None:
        old_uids = {str(o.get("uid")) for o in (prev.metadata.get("ownerReferences") or [])} if prev else set()
        new_uids = {str(o.get("uid")) for o in (new.metadata.get("ownerReferences") or [])} if new else set()
        for uid in old_uids - new_uids:
            dependents = self._dependents.get(uid)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[uid]
        for uid in new_uids - old_uids:
            self._dependents.setdefault(uid, set()).add(key)

    # ------------------------------------------------------------------ garbage collection

    def _owner_alive(self, owner: Mapping[str, Any], namespace: str) -> bool:
        if owner.get("kind") not in KINDS_SERVED or owner.get("apiVersion") != "v1":
            return True  # a kind we do not serve: we cannot tell, so keep the dependent
        key = self._by_uid.get(str(owner.get("uid")))
        return key is not None and key[1] == namespace and key[2] == owner.get("name")

    def _schedule(self, callback: Callable[[], None]) -> None:
        try:
            asyncio.get_running_loop().call_soon(callback)
        except RuntimeError:
            callback()

    def _collect_dependents_of(self, uid: str) -> None:
        dependents = self._dependents.get(uid)
        if not dependents:
            self._orphan_on_removal.discard(uid)
            return
        orphan = uid in self._orphan_on_removal
        self._orphan_on_removal.discard(uid)
        for key in list(dependents):
            if orphan:
                self._schedule(functools.partial(self._orphan, key, uid))
            else:
                self._schedule(functools.partial(self._collect, key))

    def _orphan(self, key: Key, owner_uid: str) -> None:
        resource, namespace, name = key

        def drop_owner(data: Obj) -> Obj:
            owners = [o for o in data["metadata"].get("ownerReferences") or [] if o.get("uid") != owner_uid]
            data["metadata"]["ownerReferences"] = owners
            if not owners:
                del data["metadata"]["ownerReferences"]
            return data

        self.system_update(resource, namespace, name, drop_owner)

    def _collect(self, key: Key) -> None:
        resource, namespace, name = key
        stored = self.find(resource, namespace, name)
        if stored is None or stored.metadata.get("deletionTimestamp"):
            return
        owners = stored.metadata.get("ownerReferences") or []
        if owners and not any(self._owner_alive(owner, namespace) for owner in owners):
            self.delete(resource, namespace, name, DeleteOptions(propagation_policy="Background"))

    # ------------------------------------------------------------------ reads

    def _info(self, resource: str) -> ResourceInfo:
        return RESOURCES[resource]

    def find(self, resource: str, namespace: str, name: str) -> Stored | None:
        """The current version of an object, or None."""
        names = self._objects[resource].get(namespace)
        return names.get(name) if names is not None else None

    def find_by_uid(self, uid: str) -> Stored | None:
        """The current version of the object with this uid, or None."""
        key = self._by_uid.get(uid)
        return self.find(*key) if key is not None else None

    def get(self, resource: str, namespace: str, name: str) -> Stored:
        """The current version of an object; 404 NotFound if there is none."""
        stored = self.find(resource, namespace, name)
        if stored is None:
            raise not_found(resource, name)
        return stored

    def objects(self, resource: str, namespace: str | None = None) -> Iterable[Stored]:
        """Every current object of a resource (of one namespace, or all)."""
        spaces = self._objects[resource]
        if namespace is not None:
            return list(spaces.get(namespace, {}).values())
        return [stored for names in spaces.values() for stored in names.values()]

    def _snapshot(self, resource: str, namespace: str | None, at: int) -> dict[tuple[str, str], Stored]:
        state = {(s.namespace, s.name): s for s in self.objects(resource, namespace)}
        for event in reversed(self._history):
            if event.resource_version <= at:
                break
            if event.resource != resource or (namespace is not None and event.obj.namespace != namespace):
                continue
            key = (event.obj.namespace, event.obj.name)
            if event.type == "ADDED" or event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    def _too_large(self, requested: int) -> ApiError:
        return ApiError(504, f"Too large resource version: {requested}, current: {self._resource_version}",
                        "Timeout", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}],
                                    "retryAfterSeconds": 1})

    def list_objects(  # noqa: PLR0912 - resourceVersion, match, limit and continue each have their own rule
            self, resource: str, namespace: str | None, *, labels: LabelSelector, fields: FieldSelector,
             resource_version: str | None = None, resource_version_match: str | None = None,
             limit: int | None = None, continue_token: str | None = None) -> ListResult:
        """List with the resourceVersion semantics of a real server (current, exact, 410 when too old)."""
        requested = _parse_resource_version(resource_version)
        start_after = ""
        at = self._resource_version
        if resource_version_match and requested is None and resource_version != "0":
            raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if resource_version_match not in (None, "", "NotOlderThan", "Exact"):
            raise bad_request(f"resourceVersionMatch: Unsupported value: {resource_version_match!r}")
        if continue_token:
            if requested:
                raise bad_request("specifying resource version is not allowed when using continue")
            at, start_after = _decode_continue(continue_token)
            if at < self.oldest_resumable and at != self._resource_version:
                raise expired("The provided continue parameter is too old to display a consistent list "
                              "result. You can start a new list without the continue parameter.")
        elif requested is not None and requested > 0:
            if requested > self._resource_version:
                raise self._too_large(requested)
            if resource_version_match == "Exact":
                if requested < self.oldest_resumable:
                    raise expired(f"too old resource version: {requested} ({self.oldest_resumable})")
                at = requested
        if at == self._resource_version:
            candidates = {(s.namespace, s.name): s for s in self.objects(resource, namespace)}
        else:
            candidates = self._snapshot(resource, namespace, at)
        keys = sorted(key for key in candidates if f"{key[0]}/{key[1]}" > start_after)
        items: list[Stored] = []
        next_token = None
        remaining = None
        for index, key in enumerate(keys):
            stored = candidates[key]
            if labels and not labels.matches(stored.metadata.get("labels")):
                continue
            if fields and not fields.matches(stored.data):
                continue
            if limit and len(items) >= limit:
                last = items[-1]
                next_token = _encode_continue(at, f"{last.namespace}/{last.name}")
                if not labels and not fields:
                    remaining = len(keys) - index
                break
            items.append(stored)
        return ListResult(items, at, next_token, remaining)

    def watch(self, resource: str, namespace: str | None, *, labels: LabelSelector, fields: FieldSelector,
              resource_version: str | None = None, send_initial_events: bool = False) -> Watcher:
        """Open a watch: replay the history after ``resource_version`` (or the current state as ADDED
        events when it is empty or "0"), then stream live events. 410 if the history is gone."""
        requested = _parse_resource_version(resource_version)
        watcher = Watcher(resource, namespace, labels, fields)
        if requested is None or requested == 0 or send_initial_events:
            for stored in sorted(self.objects(resource, namespace), key=lambda s: (s.namespace, s.name)):
                if watcher.selects(stored):
                    watcher.push("ADDED", stored)
            watcher.after_resource_version = self._resource_version
        else:
            if requested < self.oldest_resumable:
                raise expired(f"too old resource version: {requested} ({self.oldest_resumable})")
            watcher.after_resource_version = requested
            replay = []
            for event in reversed(self._history):
                if event.resource_version <= requested:
                    break
                if event.resource == resource:
                    replay.append(event)
            for event in reversed(replay):
                watcher.offer(event)
        watcher.delivered_resource_version = max(requested or 0, self._resource_version)
        self._watchers[resource].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        """Forget a watch whose stream ended."""
        self._watchers[watcher.resource].discard(watcher)

    # ------------------------------------------------------------------ writes

    def _prepare_new(self, info: ResourceInfo, data: Obj) -> Obj:
        if info.plural == "pods":
            return defaults.default_pod(data)
        if info.plural == "secrets":
            return defaults.default_secret(data)
        return defaults.default_config_map(data)

    def _validate(self, info: ResourceInfo, data: Obj, name: str) -> None:
        if info.plural == "pods":
            causes = validation.validate_pod(data)
        elif info.plural == "secrets":
            causes = validation.validate_secret(data)
        else:
            causes = validation.validate_config_map(data)
        if causes:
            raise invalid(info.kind, info.plural, name, causes)

    @staticmethod
    def _check_kind(info: ResourceInfo, body: Mapping[str, Any]) -> None:
        kind = body.get("kind")
        if kind not in (None, "", info.kind):
            raise bad_request(f"the object provided is unrecognized (must be of type {info.kind}): {kind}")
        api_version = body.get("apiVersion")
        if api_version not in (None, "", "v1"):
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected "
                              "API version (v1)")

    def create(self, resource: str, namespace: str, body: Any, *, dry_run: bool = False) -> Stored:
        """POST: default, validate and store a new object (409 if the name is taken)."""
        info = self._info(resource)
        if not isinstance(body, Mapping):
            raise bad_request(f"the object provided is unrecognized (must be of type {info.kind})")
        self._check_kind(info, body)
        data: Obj = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, Mapping):
            raise bad_request("metadata must be an object")
        metadata = dict(metadata)
        if metadata.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on "
                              "the request")
        if metadata.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created",
                           "InternalError")
        if not metadata.get("name") and metadata.get("generateName"):
            suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            metadata["name"] = f"{metadata['generateName']}{suffix}"
        for system_field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                             "selfLink", "managedFields", "generation"):
            metadata.pop(system_field, None)
        metadata["namespace"] = namespace
        data["metadata"] = metadata
        name = str(metadata.get("name") or "")
        data = self._prepare_new(info, data)
        self._validate(info, data, name)
        if self.find(resource, namespace, name) is not None:
            raise already_exists(resource, name)
        data["metadata"] = {**data["metadata"], "uid": str(uuid.uuid4()),
                            "creationTimestamp": defaults.now_rfc3339()}
        if dry_run:
            data["metadata"]["resourceVersion"] = ""
            return Stored(data, info)
        stored = self._commit(info, "ADDED", data, None)
        if stored.metadata.get("ownerReferences"):
            self._schedule(lambda: self._collect((resource, namespace, stored.name)))
        return stored

    def replace(self, resource: str, namespace: str, name: str, body: Any, *, subresource: str | None = None,
                dry_run: bool = False) -> Stored:
        """PUT (of the object or its status): optimistic concurrency on ``metadata.resourceVersion``."""
        info = self._info(resource)
        old = self.get(resource, namespace, name)
        if not isinstance(body, Mapping):
            raise bad_request(f"the object provided is unrecognized (must be of type {info.kind})")
        self._check_kind(info, body)
        return self._update(info, old, {k: v for k, v in body.items() if k not in ("kind", "apiVersion")},
                            subresource=subresource, dry_run=dry_run)

    def patch(self, resource: str, namespace: str, name: str, content_type: str, body: Any, *,
              subresource: str | None = None, dry_run: bool = False) -> Stored:
        """PATCH with a JSON patch, a merge patch or a strategic merge patch."""
        info = self._info(resource)
        old = self.get(resource, namespace, name)
        current = old.full()
        if content_type == "application/json-patch+json":
            patched = patching.apply_json_patch(current, body)
        elif content_type == "application/merge-patch+json":
            if not isinstance(body, Mapping):
                raise bad_request("a merge patch must be a JSON object")
            patched = patching.apply_merge_patch(current, body)
        else:
            if not isinstance(body, Mapping):
                raise bad_request("a strategic merge patch must be a JSON object")
            patched = patching.apply_strategic_merge_patch(current, body)
        if not isinstance(patched, Mapping):
            raise ApiError(422, "the patch turned the object into something that is not an object", "Invalid")
        self._check_kind(info, patched)
        return self._update(info, old, {k: v for k, v in patched.items() if k not in ("kind", "apiVersion")},
                            subresource=subresource, dry_run=dry_run, from_patch=True)

    def _update(  # noqa: PLR0912, PLR0915 - the update strategy of three resources and a subresource
            self, info: ResourceInfo, old: Stored, data: Obj, *, subresource: str | None, dry_run: bool,
            from_patch: bool = False) -> Stored:
        name = old.name
        metadata = data.get("metadata")
        if not isinstance(metadata, Mapping):
            if from_patch:
                raise ApiError(422, "metadata: Required value", "Invalid")
            metadata = {}
        metadata = dict(metadata)
        if metadata.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({metadata.get('name')}) does not match the name on the "
                              f"URL ({name})")
        if metadata.get("namespace") not in (None, "", old.namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on "
                              "the request")
        wanted_version = metadata.get("resourceVersion")
        if wanted_version not in (None, "") and str(wanted_version) != old.metadata["resourceVersion"]:
            raise conflict(info.plural, name, "the object has been modified; please apply your changes to the "
                                              "latest version and try again")
        if metadata.get("uid") not in (None, "", old.uid):
            raise invalid(info.kind, info.plural, name, [{
                "reason": "FieldValueInvalid", "field": "metadata.uid",
                "message": f'Invalid value: "{metadata.get("uid")}": field is immutable'}])
        if subresource == "status":
            new = dict(old.data)
            new["status"] = data.get("status") or {}  # a fresh object decoded from the request
        else:
            for system_field in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                                 "deletionGracePeriodSeconds", "generation"):
                if system_field in old.metadata:
                    metadata[system_field] = old.metadata[system_field]
                else:
                    metadata.pop(system_field, None)
            metadata.pop("managedFields", None)
            metadata.pop("selfLink", None)
            new = dict(data)
            new["metadata"] = metadata
            if info.plural == "pods":
                new["status"] = old.data.get("status", {})
                spec = new.get("spec")
                if not isinstance(spec, Mapping):
                    raise invalid(info.kind, info.plural, name, [{
                        "reason": "FieldValueRequired", "field": "spec", "message": "Required value"}])
                causes = validation.validate_pod(new)
                causes.extend(validation.validate_pod_spec_update(old.data.get("spec", {}), spec))
                if causes:
                    raise invalid(info.kind, info.plural, name, causes)
            else:
                if info.plural == "secrets":
                    new = defaults.default_secret(new)
                    if new.get("type") != old.data.get("type"):
                        raise invalid(info.kind, info.plural, name, [{
                            "reason": "FieldValueInvalid", "field": "type",
                            "message": f'Invalid value: "{new.get("type")}": field is immutable'}])
                self._validate(info, new, name)
                if old.data.get("immutable"):
                    for key in ("data", "binaryData", "immutable"):
                        if new.get(key) != old.data.get(key):
                            raise invalid(info.kind, info.plural, name, [{
                                "reason": "FieldValueForbidden", "field": key,
                                "message": "Forbidden: field is immutable when `immutable` is set"}])
            if old.metadata.get("deletionTimestamp"):
                added = set(metadata.get("finalizers") or []) - set(old.metadata.get("finalizers") or [])
                if added:
                    raise invalid(info.kind, info.plural, name, [{
                        "reason": "FieldValueForbidden", "field": "metadata.finalizers",
                        "message": "Forbidden: no new finalizers can be added if the object is being deleted"}])
        # A write that changes nothing is a no-op: same resourceVersion, no event (like the real server).
        comparable = {**new, "metadata": {**new["metadata"], "resourceVersion": old.metadata["resourceVersion"]}}
        if comparable == old.data:
            return old
        if dry_run:
            return Stored(comparable, info)
        stored = self._commit(info, "MODIFIED", new, old)
        return self._finish_if_deletable(stored)

    def system_update(self, resource: str, namespace: str, name: str, mutate: Callable[[Obj], Obj | None],
                      *, uid: str | None = None) -> Stored | None:
        """A write by the control plane itself (kubelet, scheduler, GC): no validation, no preconditions.

        ``mutate`` gets a copy of the object in which the top level and the dicts ``metadata``, ``spec``
        and ``status`` are new (deeper values are shared with the stored version: replace them, never
        change them in place) and returns the new object (or None to leave it alone).
        Returns the stored result, or None if the object is gone (or has another uid).
        """
        old = self.find(resource, namespace, name)
        if old is None or (uid is not None and old.uid != uid):
            return None
        draft = dict(old.data)
        for part in ("metadata", "spec", "status"):
            if isinstance(draft.get(part), dict):
                draft[part] = dict(draft[part])
        new = mutate(draft)
        if new is None or new == old.data:
            return old
        stored = self._commit(self._info(resource), "MODIFIED", new, old)
        return self._finish_if_deletable(stored)

    def _finish_if_deletable(self, stored: Stored) -> Stored:
        metadata = stored.metadata
        if not metadata.get("deletionTimestamp") or metadata.get("finalizers"):
            return stored
        if stored.info.plural == "pods" and metadata.get("deletionGracePeriodSeconds") != 0:
            return stored
        return self._remove(stored)

    def _remove(self, stored: Stored) -> Stored:
        data = copy.copy(stored.data)
        data["metadata"] = dict(stored.metadata)
        return self._commit(stored.info, "DELETED", data, stored)

    def delete(self, resource: str, namespace: str, name: str, options: DeleteOptions) -> tuple[Stored, bool]:
        """DELETE: returns the object and whether it is gone already (False while graceful deletion runs)."""
        info = self._info(resource)
        old = self.get(resource, namespace, name)
        if options.precondition_uid and options.precondition_uid != old.uid:
            raise conflict(resource, name, f"Precondition failed: UID in precondition: "
                                           f"{options.precondition_uid}, UID in object meta: {old.uid}")
        if (options.precondition_resource_version
                and options.precondition_resource_version != old.metadata["resourceVersion"]):
            raise conflict(resource, name, "Precondition failed: ResourceVersion in precondition: "
                                           f"{options.precondition_resource_version}, ResourceVersion in object "
                                           f"meta: {old.metadata['resourceVersion']}")
        grace = 0
        if info.plural == "pods":
            spec = old.data.get("spec") or {}
            phase = (old.data.get("status") or {}).get("phase")
            grace = options.grace_period_seconds if options.grace_period_seconds is not None else int(
                spec.get("terminationGracePeriodSeconds", 30))
            if grace < 0:
                grace = 1
            if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
        if options.dry_run:
            return old, False
        if options.propagation_policy == "Orphan":
            self._orphan_on_removal.add(old.uid)
        current_grace = old.metadata.get("deletionGracePeriodSeconds")
        if old.metadata.get("deletionTimestamp"):
            if current_grace is not None and grace < int(current_grace):
                if grace == 0 and not old.metadata.get("finalizers"):
                    return self._remove(old), True
                shortened = self.system_update(resource, namespace, name, lambda data: _mark_deleted(data, grace))
                assert shortened is not None
                return shortened, self.find(resource, namespace, name) is None
            return old, False
        if grace == 0 and not old.metadata.get("finalizers"):
            return self._remove(old), True
        marked = self.system_update(resource, namespace, name, lambda data: _mark_deleted(data, grace))
        assert marked is not None
        return marked, self.find(resource, namespace, name) is None

    def delete_collection(self, resource: str, namespace: str, *, labels: LabelSelector, fields: FieldSelector,
                          options: DeleteOptions) -> list[Stored]:
        """DELETE on the collection: delete every selected object, return what was deleted."""
        deleted = []
        for stored in sorted(self.objects(resource, namespace), key=lambda s: s.name):
            if labels and not labels.matches(stored.metadata.get("labels")):
                continue
            if fields and not fields.matches(stored.data):
                continue
            result, _ = self.delete(resource, namespace, stored.name, options)
            deleted.append(result)
        return deleted

    def finish_pod_deletion(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final delete of a pod whose containers stopped (grace period 0)."""
        stored = self.find("pods", namespace, name)
        if stored is None or stored.uid != uid:
            return
        if stored.metadata.get("deletionGracePeriodSeconds") == 0:
            self._finish_if_deletable(stored)
            return
        if not stored.metadata.get("finalizers"):
            self._remove(stored)  # a delete with grace period 0 removes at once, without another MODIFIED
            return
        self.system_update("pods", namespace, name, lambda data: _mark_deleted(data, 0), uid=uid)


def _mark_deleted(data: Obj, grace: int) -> Obj:
    data["metadata"]["deletionTimestamp"] = defaults.rfc3339(time.time() + grace)
    data["metadata"]["deletionGracePeriodSeconds"] = grace
    return data
