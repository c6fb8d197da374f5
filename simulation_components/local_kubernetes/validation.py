"""Field validation with the rules and messages of kube-apiserver, so mistakes surface in tests, not in prod.

Each ``validate_*`` function returns a list of *causes* (``{"reason", "message", "field"}``) that the
store turns into a 422 Invalid ``Status``. Only what the orchestrator can get wrong is checked:
names, labels, annotations, owner references, the pod's containers and env, config map and secret keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "Cause",
    "dns1123_label_errors",
    "dns1123_subdomain_errors",
    "image_reference_is_valid",
    "label_key_errors",
    "label_value_errors",
    "validate_config_map",
    "validate_metadata",
    "validate_pod",
    "validate_pod_spec_update",
    "validate_secret",
]

Cause = dict[str, str]

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_INT32 = 2**31 - 1

_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_QUALIFIED_NAME_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_ENV_VAR_MESSAGE = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and "
    "must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
    "validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
)
_CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)

_TOTAL_ANNOTATION_BYTES = 256 * 1024
_MAX_DATA_BYTES = 1024 * 1024


def dns1123_label_errors(value: str) -> list[str]:
    """Why ``value`` is not a DNS-1123 label (at most 63 characters); empty when it is one."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        errors.append(_LABEL_MESSAGE)
    return errors


def dns1123_subdomain_errors(value: str) -> list[str]:
    """Why ``value`` is not a DNS-1123 subdomain (at most 253 characters); empty when it is one."""
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(_SUBDOMAIN_MESSAGE)
    return errors


def label_key_errors(key: str) -> list[str]:
    """Why ``key`` is not a qualified name (``[prefix/]name``) usable as a label or annotation key."""
    parts = key.split("/")
    if len(parts) == 1:
        prefix, name = "", parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
    else:
        return [f"a qualified name {_QUALIFIED_NAME_MESSAGE.removeprefix('name part ')} with an optional "
                "DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    errors: list[str] = []
    if not name:
        errors.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errors.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME.fullmatch(name):
            errors.append(_QUALIFIED_NAME_MESSAGE)
    if prefix:
        errors.extend(f"prefix part {message}" for message in dns1123_subdomain_errors(prefix))
    return errors


def label_value_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label value (at most 63 characters, may be empty)."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(_LABEL_VALUE_MESSAGE)
    return errors


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _invalid(field: str, value: Any, message: str) -> Cause:
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {_quote(value)}: {message}",
            "field": field}


def _required(field: str) -> Cause:
    return {"reason": "FieldValueRequired", "message": "Required value", "field": field}


def _duplicate(field: str, value: Any) -> Cause:
    return {"reason": "FieldValueDuplicate", "message": f"Duplicate value: {_quote(value)}", "field": field}


def _unsupported(field: str, value: Any, supported: list[str]) -> Cause:
    listed = ", ".join(_quote(item) for item in supported)
    return {"reason": "FieldValueNotSupported",
            "message": f"Unsupported value: {_quote(value)}: supported values: {listed}", "field": field}


def _forbidden(field: str, message: str) -> Cause:
    return {"reason": "FieldValueForbidden", "message": f"Forbidden: {message}", "field": field}


def _type_error(field: str, value: Any, expected: str) -> Cause:
    return _invalid(field, value, f"must be {expected}")


def _labels_errors(labels: Any, field: str) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [_type_error(field, labels, "a map of strings")]
    causes: list[Cause] = []
    for key, value in labels.items():
        causes.extend(_invalid(field, key, message) for message in label_key_errors(key))
        if not isinstance(value, str):
            causes.append(_type_error(f"{field}[{key}]", value, "a string"))
            continue
        causes.extend(_invalid(field, value, message) for message in label_value_errors(value))
    return causes


def validate_metadata(  # noqa: PLR0912 - one branch per metadata field rule
        metadata: Mapping[str, Any], *, namespaced_name_check: str = "subdomain") -> list[Cause]:
    """Check the object's name (subdomain or label), labels, annotations and owner references."""
    causes: list[Cause] = []
    name = metadata.get("name")
    if not name:
        causes.append({"reason": "FieldValueRequired", "message": "Required value: name or generateName is "
                       "required", "field": "metadata.name"})
    elif not isinstance(name, str):
        causes.append(_type_error("metadata.name", name, "a string"))
    else:
        checker = dns1123_label_errors if namespaced_name_check == "label" else dns1123_subdomain_errors
        causes.extend(_invalid("metadata.name", name, message) for message in checker(name))
    causes.extend(_labels_errors(metadata.get("labels"), "metadata.labels"))
    annotations = metadata.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, Mapping):
            causes.append(_type_error("metadata.annotations", annotations, "a map of strings"))
        else:
            total = 0
            for key, value in annotations.items():
                causes.extend(_invalid("metadata.annotations", key, message) for message in label_key_errors(key))
                if not isinstance(value, str):
                    causes.append(_type_error(f"metadata.annotations[{key}]", value, "a string"))
                    continue
                total += len(key) + len(value)
            if total > _TOTAL_ANNOTATION_BYTES:
                causes.append({"reason": "FieldValueTooLong", "field": "metadata.annotations",
                               "message": f"Too long: may not be more than {_TOTAL_ANNOTATION_BYTES} bytes"})
    owners = metadata.get("ownerReferences")
    if owners is not None:
        if not isinstance(owners, list):
            causes.append(_type_error("metadata.ownerReferences", owners, "a list"))
        else:
            controllers = 0
            for index, owner in enumerate(owners):
                field = f"metadata.ownerReferences[{index}]"
                if not isinstance(owner, Mapping):
                    causes.append(_type_error(field, owner, "an object"))
                    continue
                for key in ("apiVersion", "kind", "name", "uid"):
                    if not owner.get(key):
                        causes.append(_required(f"{field}.{key}"))
                if owner.get("controller"):
                    controllers += 1
            if controllers > 1:
                causes.append(_invalid("metadata.ownerReferences", owners,
                                       "Only one reference can have Controller set to true"))
    finalizers = metadata.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list) or not all(isinstance(item, str) for item in finalizers):
            causes.append(_type_error("metadata.finalizers", finalizers, "a list of strings"))
        else:
            for index, finalizer in enumerate(finalizers):
                causes.extend(_invalid(f"metadata.finalizers[{index}]", finalizer, message)
                              for message in label_key_errors(finalizer))
    return causes


_RESTART_POLICIES = ["Always", "OnFailure", "Never"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def _env_errors(env: Any, field: str) -> list[Cause]:  # noqa: PLR0912 - one branch per env source rule
    if env is None:
        return []
    if not isinstance(env, list):
        return [_type_error(field, env, "a list")]
    causes: list[Cause] = []
    for index, variable in enumerate(env):
        item = f"{field}[{index}]"
        if not isinstance(variable, Mapping):
            causes.append(_type_error(item, variable, "an object"))
            continue
        name = variable.get("name")
        if not name:
            causes.append(_required(f"{item}.name"))
        elif not isinstance(name, str) or not _ENV_VAR_NAME.fullmatch(name):
            causes.append(_invalid(f"{item}.name", name, _ENV_VAR_MESSAGE))
        value = variable.get("value")
        if value is not None and not isinstance(value, str):
            causes.append(_type_error(f"{item}.value", value, "a string"))
        source = variable.get("valueFrom")
        if source is None:
            continue
        if value:
            causes.append(_invalid(f"{item}.valueFrom", "", "may not be specified when `value` is not empty"))
        if not isinstance(source, Mapping):
            causes.append(_type_error(f"{item}.valueFrom", source, "an object"))
            continue
        present = [key for key in _ENV_SOURCES if source.get(key) is not None]
        if len(present) != 1:
            causes.append(_invalid(f"{item}.valueFrom", "", "must specify one of: `fieldRef`, "
                                   "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
            continue
        reference = source[present[0]]
        if present[0] in ("configMapKeyRef", "secretKeyRef"):
            if not isinstance(reference, Mapping):
                causes.append(_type_error(f"{item}.valueFrom.{present[0]}", reference, "an object"))
                continue
            if not reference.get("key"):
                causes.append(_required(f"{item}.valueFrom.{present[0]}.key"))
            elif not _CONFIG_KEY.fullmatch(str(reference["key"])):
                causes.append(_invalid(f"{item}.valueFrom.{present[0]}.key", reference["key"],
                                       _CONFIG_KEY_MESSAGE))
            if not reference.get("name"):
                causes.append(_required(f"{item}.valueFrom.{present[0]}.name"))
        elif present[0] == "fieldRef" and (not isinstance(reference, Mapping) or not reference.get("fieldPath")):
            causes.append(_required(f"{item}.valueFrom.fieldRef.fieldPath"))
    return causes


def _container_errors(  # noqa: PLR0912 - one branch per container field rule
        container: Any, field: str, names: set[str]) -> list[Cause]:
    if not isinstance(container, Mapping):
        return [_type_error(field, container, "an object")]
    causes: list[Cause] = []
    name = container.get("name")
    if not name:
        causes.append(_required(f"{field}.name"))
    elif not isinstance(name, str):
        causes.append(_type_error(f"{field}.name", name, "a string"))
    else:
        causes.extend(_invalid(f"{field}.name", name, message) for message in dns1123_label_errors(name))
        if name in names:
            causes.append(_duplicate(f"{field}.name", name))
        names.add(name)
    image = container.get("image")
    if not image:
        causes.append(_required(f"{field}.image"))
    elif not isinstance(image, str):
        causes.append(_type_error(f"{field}.image", image, "a string"))
    elif image != image.strip():
        causes.append(_invalid(f"{field}.image", image, "must not have leading or trailing whitespace"))
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in _PULL_POLICIES:
        causes.append(_unsupported(f"{field}.imagePullPolicy", policy, _PULL_POLICIES))
    for key in ("command", "args"):
        value = container.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            causes.append(_type_error(f"{field}.{key}", value, "a list of strings"))
    causes.extend(_env_errors(container.get("env"), f"{field}.env"))
    ports = container.get("ports")
    if isinstance(ports, list):
        for index, port in enumerate(ports):
            number = port.get("containerPort") if isinstance(port, Mapping) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                causes.append(_invalid(f"{field}.ports[{index}].containerPort", number,
                                       "must be between 1 and 65535, inclusive"))
    return causes


def validate_pod(pod: Mapping[str, Any]) -> list[Cause]:  # noqa: PLR0912 - one branch per spec field rule
    """Check a whole pod on create (metadata and spec)."""
    causes = validate_metadata(pod.get("metadata") or {})
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return [*causes, _required("spec.containers")]
    containers = spec.get("containers")
    if not containers:
        causes.append(_required("spec.containers"))
    elif not isinstance(containers, list):
        causes.append(_type_error("spec.containers", containers, "a list"))
    else:
        names: set[str] = set()
        for index, container in enumerate(containers):
            causes.extend(_container_errors(container, f"spec.containers[{index}]", names))
        for index, container in enumerate(spec.get("initContainers") or []):
            causes.extend(_container_errors(container, f"spec.initContainers[{index}]", names))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in _RESTART_POLICIES:
        causes.append(_unsupported("spec.restartPolicy", policy, _RESTART_POLICIES))
    dns_policy = spec.get("dnsPolicy")
    if dns_policy is not None and dns_policy not in _DNS_POLICIES:
        causes.append(_unsupported("spec.dnsPolicy", dns_policy, _DNS_POLICIES))
    causes.extend(_labels_errors(spec.get("nodeSelector"), "spec.nodeSelector"))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        causes.append(_invalid("spec.terminationGracePeriodSeconds", grace,
                               "must be greater than or equal to 0"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or not 1 <= deadline <= _MAX_INT32):
        causes.append(_invalid("spec.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, "
                               "inclusive"))
    secrets = spec.get("imagePullSecrets")
    if isinstance(secrets, list):
        for index, secret in enumerate(secrets):
            secret_name = secret.get("name") if isinstance(secret, Mapping) else None
            if secret_name:
                causes.extend(_invalid(f"spec.imagePullSecrets[{index}].name", secret_name, message)
                              for message in dns1123_subdomain_errors(str(secret_name)))
    node_name = spec.get("nodeName")
    if node_name:
        causes.extend(_invalid("spec.nodeName", node_name, message)
                      for message in dns1123_subdomain_errors(str(node_name)))
    return causes


_MUTABLE_SPEC_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
    "previously negative)"
)


def _without_mutable(spec: Mapping[str, Any]) -> dict[str, Any]:
    copy = dict(spec)
    for key in ("activeDeadlineSeconds", "tolerations"):
        copy.pop(key, None)
    for key in ("containers", "initContainers"):
        if isinstance(copy.get(key), list):
            copy[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, Mapping) else c
                         for c in copy[key]]
    return copy


def _deadline_update_errors(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> list[Cause]:
    """activeDeadlineSeconds may go from unset to a value, or down; never up, never back to unset."""
    field = "spec.activeDeadlineSeconds"
    old, new = old_spec.get("activeDeadlineSeconds"), new_spec.get("activeDeadlineSeconds")
    if new is None:
        return [] if old is None else [{"reason": "FieldValueInvalid", "field": field, "message": (
            "Invalid value: null: must not update from a positive integer to nil value")}]
    if not isinstance(new, int):
        return []  # validate_pod reports the type
    if not 0 <= new <= _MAX_INT32:
        return [_invalid(field, new, "must be between 0 and 2147483647, inclusive")]
    if isinstance(old, int) and old < new:
        return [_invalid(field, new, "must be less than or equal to previous value")]
    return []


def validate_pod_spec_update(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> list[Cause]:
    """A pod's spec is immutable but for images, activeDeadlineSeconds (set, or lowered) and tolerations.

    As in the real ValidatePodUpdate, a refused activeDeadlineSeconds change ends the check (no
    'may not change fields' error is added to it).
    """
    deadline_errors = _deadline_update_errors(old_spec, new_spec)
    if deadline_errors:
        return deadline_errors
    if _without_mutable(old_spec) != _without_mutable(new_spec):
        return [_forbidden("spec", _MUTABLE_SPEC_MESSAGE)]
    return []


def _data_keys_errors(obj: Mapping[str, Any], fields: tuple[str, ...]) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    total = 0
    for field in fields:
        data = obj.get(field)
        if data is None:
            continue
        if not isinstance(data, Mapping):
            causes.append(_type_error(field, data, "a map"))
            continue
        for key, value in data.items():
            if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
                causes.append(_invalid(f"{field}[{key}]", key, _CONFIG_KEY_MESSAGE))
            if key in seen:
                causes.append(_duplicate(f"{field}[{key}]", key))
            seen.add(key)
            if not isinstance(value, str):
                causes.append(_type_error(f"{field}[{key}]", value, "a string"))
                continue
            total += len(key) + len(value)
    if total > _MAX_DATA_BYTES:
        causes.append({"reason": "FieldValueTooLong", "field": "data",
                       "message": f"Too long: must have at most {_MAX_DATA_BYTES} bytes"})
    return causes


def validate_config_map(config_map: Mapping[str, Any]) -> list[Cause]:
    """Check a ConfigMap: metadata and the keys of ``data`` and ``binaryData``."""
    return validate_metadata(config_map.get("metadata") or {}) + _data_keys_errors(
        config_map, ("data", "binaryData"))


def validate_secret(secret: Mapping[str, Any]) -> list[Cause]:
    """Check a Secret: metadata and the keys of ``data`` (``stringData`` is folded in before this)."""
    causes = validate_metadata(secret.get("metadata") or {}) + _data_keys_errors(secret, ("data",))
    secret_type = secret.get("type")
    if secret_type is not None and not isinstance(secret_type, str):
        causes.append(_type_error("type", secret_type, "a string"))
    return causes


_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


def image_reference_is_valid(image: str) -> bool:
    """Whether the kubelet could parse ``image`` as a docker reference (else: InvalidImageName)."""
    if not image or len(image) > 255 + 128 + 100:
        return False
    name = image
    if "@" in name:
        name, digest = name.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            return False
    components = name.split("/")
    last = components[-1]
    if ":" in last:
        last, tag = last.split(":", 1)
        if not _TAG.fullmatch(tag):
            return False
        components[-1] = last
    if len(components) > 1 and ("." in components[0] or ":" in components[0] or components[0] == "localhost"):
        if not _DOMAIN.fullmatch(components[0]):
            return False
        components = components[1:]
    if len("/".join(components)) > 255:
        return False
    return all(_PATH_COMPONENT.fullmatch(component) for component in components)
