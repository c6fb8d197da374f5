"""The three PATCH flavours of the API server: JSON merge patch, strategic merge patch and JSON patch.

Strategic merge patch is merge patch plus "lists of objects merge by a key" for the lists that have a
``patchMergeKey`` in the Kubernetes types we serve (containers by name, conditions by type, ...) and the
``$patch``/``$retainKeys``/``$deleteFromPrimitiveList`` directives. Lists without a merge key are
replaced, as on a real server. All functions return new objects and never mutate their inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import ApiError, bad_request

__all__ = ["apply_json_patch", "apply_merge_patch", "apply_strategic_merge_patch"]

_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})

# (parent field, field) -> merge key; a merge key of "" means "set of primitives" (union on merge).
_MERGE_KEYS: dict[tuple[str, str], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): "",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("status", "conditions"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
}
_CONTAINER_MERGE_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath",
                         "volumeDevices": "devicePath"}


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _merge_key(path: tuple[str, ...], field: str) -> str | None:
    parent = path[-1] if path else ""
    if len(path) >= 1 and parent in _CONTAINER_LISTS and field in _CONTAINER_MERGE_KEYS:
        return _CONTAINER_MERGE_KEYS[field]
    return _MERGE_KEYS.get((parent, field))


def apply_strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for the fields of pods, config maps and secrets."""
    return _strategic(target, patch, ())


def _strategic(target: Any, patch: Any, path: tuple[str, ...]) -> Any:  # noqa: PLR0912 - one branch per directive
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise bad_request(f"Unknown patch type: {directive}")
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$retainKeys",) or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise bad_request("invalid patch: $deleteFromPrimitiveList must hold a list")
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [item for item in current if item not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        merge_key = _merge_key(path, key)
        if isinstance(value, list) and merge_key is not None:
            result[key] = _merge_list(result.get(key), value, merge_key, (*path, key))
        elif isinstance(value, Mapping):
            merged = _strategic(result.get(key), value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if retain is not None:
        if not isinstance(retain, list):
            raise bad_request("invalid patch: $retainKeys must hold a list")
        result = {key: value for key, value in result.items() if key in retain}
    return result


def _merge_list(current: Any, patch: list[Any], merge_key: str, path: tuple[str, ...]) -> list[Any]:
    existing: list[Any] = list(current) if isinstance(current, list) else []
    if not merge_key:  # a set of primitives: union, keeping order
        result = list(existing)
        for item in patch:
            if isinstance(item, Mapping) and item.get("$patch") == "replace":
                return [value for value in patch if not isinstance(value, Mapping)]
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, Mapping) and "$patch" in item)]
    result = list(existing)
    for item in patch:
        if not isinstance(item, Mapping) or merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        key_value = item[merge_key]
        index = next((i for i, old in enumerate(result)
                      if isinstance(old, Mapping) and old.get(merge_key) == key_value), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strategic({}, item, path))
        else:
            result[index] = _strategic(result[index], item, path)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f'JSON pointer must start with "/": {path!r}')
    return [_unescape(token) for token in path[1:].split("/")]


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message, "Invalid")


def _parent(document: Any, tokens: list[str], path: str) -> Any:
    current = document
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise _unprocessable(f"doc is missing path: {path!r}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, path, allow_end=False)]
        else:
            raise _unprocessable(f"doc is missing path: {path!r}")
    return current


def _index(container: list[Any], segment: str, path: str, *, allow_end: bool) -> int:
    if segment == "-" and allow_end:
        return len(container)
    if not segment.isdigit() or (len(segment) > 1 and segment.startswith("0")):
        raise _unprocessable(f"invalid array index {segment!r} in {path!r}")
    index = int(segment)
    if index > len(container) or (index == len(container) and not allow_end):
        raise _unprocessable(f"index {index} out of bounds in {path!r}")
    return index


def _get(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return document
    parent = _parent(document, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f"doc is missing key: {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, allow_end=False)]
    raise _unprocessable(f"doc is missing path: {path!r}")


def _add(document: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(document, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise _unprocessable(f"doc is missing path: {path!r}")
    return document


def _remove(document: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise _unprocessable("cannot remove the whole document")
    parent = _parent(document, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f"unable to remove nonexistent key: {last}: missing value")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, last, path, allow_end=False))
    raise _unprocessable(f"doc is missing path: {path!r}")


def apply_json_patch(target: Any, operations: Any) -> Any:  # noqa: PLR0912 - one branch per operation
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); a failing operation is a 422."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    document = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, Mapping) or "op" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation!r}")
        op = operation["op"]
        path = operation.get("path")
        source = operation.get("from", "")
        if not isinstance(path, str) or not isinstance(source, str):
            raise bad_request(f"invalid JSON patch operation (path/from must be strings): {operation!r}")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise _unprocessable(f"missing value for {op} operation at {path!r}")
        if op == "add":
            document = _add(document, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            document, _ = _remove(document, path)
        elif op == "replace":
            document, _ = _remove(document, path)
            document = _add(document, path, copy.deepcopy(operation["value"]))
        elif op == "move":
            document, value = _remove(document, source)
            document = _add(document, path, value)
        elif op == "copy":
            document = _add(document, path, copy.deepcopy(_get(document, source)))
        elif op == "test":
            if _get(document, path) != operation["value"]:
                raise _unprocessable(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {op}")
    return document
