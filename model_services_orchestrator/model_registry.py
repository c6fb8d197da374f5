"""The model registry: what the ModelServices of the namespace make of a model's image. Pure.

Upstream's design named an "external model registry" so that a model's
configuration is not repeated in every DeployModels. Here it is the
``ModelService`` custom resource (``k8s_cluster_configuration/modelservice-crd.yaml``):

1. a model whose image is ``modelservice:<name>`` runs the ModelService
   ``<name>``: its image and its default env vars (the SO's env var of the same
   name wins), and (2);
2. a model whose image equals a ModelService's ``spec.image`` gets its
   resources, nodeSelector, tolerations and startTimeoutSeconds, so today's SO,
   unchanged, benefits. Two ModelServices of one image: the first by name.

What each distinct image of a simulation resolved to (``Resolved``) is
decided once, at its DeployModels, and kept in the simulation's record: a
ModelService changed or deleted later changes nothing for that simulation,
across restarts too. The cache (``Registry``) is filled by the daemon's
list+watch of ModelServices (``k8s_api``); this module never does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GROUP",
    "PLURAL",
    "RECORDED_BYTES_MAX",
    "REFERENCE_PREFIX",
    "VERSION",
    "ModelService",
    "Registry",
    "Resolution",
    "Resolved",
    "decode_resolved",
    "encode_resolved",
    "merged_env",
    "model_service",
    "named_model_service",
    "recorded_size",
    "reference_name",
    "resolve",
    "resources",
]

GROUP = "dots.mso.io"
VERSION = "v1alpha1"
PLURAL = "modelservices"
REFERENCE_PREFIX = "modelservice:"


def reference_name(image: str) -> str | None:
    """The ModelService an image names (``modelservice:<name>``), or ``None`` for a plain image."""
    return image[len(REFERENCE_PREFIX):] if image.startswith(REFERENCE_PREFIX) else None


@dataclass(frozen=True, slots=True)
class ModelService:
    """What the daemon uses of one ModelService: its spec, as the API server validated it."""

    name: str
    image: str
    env: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Mapping[str, str]] | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    start_timeout_seconds: float | None = None


def named_model_service(obj: Mapping[str, Any]) -> tuple[str, ModelService | None]:
    """The name of a ModelService object and what it says (what the daemon's watch hands over)."""
    return str((obj.get("metadata") or {}).get("name") or ""), model_service(obj)


def model_service(obj: Mapping[str, Any]) -> ModelService | None:
    """The ModelService of an object as the API sends it; ``None`` for one without a name or an image (the
    CRD's schema refuses those; an object written before the schema is ignored, not guessed at)."""
    name = (obj.get("metadata") or {}).get("name")
    spec = obj.get("spec") or {}
    image = spec.get("image")
    if not isinstance(name, str) or not isinstance(image, str) or not image.strip():
        return None
    timeout = spec.get("startTimeoutSeconds")
    tolerations = spec.get("tolerations")
    return ModelService(
        name=name,
        image=image,
        env=tuple(dict(entry) for entry in spec.get("env") or ()),
        resources={kind: {key: str(amount) for key, amount in (spec["resources"].get(kind) or {}).items()}
                   for kind in ("requests", "limits") if kind in spec["resources"]}
        if isinstance(spec.get("resources"), dict) else None,
        node_selector=dict(spec["nodeSelector"]) if isinstance(spec.get("nodeSelector"), dict) else None,
        tolerations=tuple(dict(item) for item in tolerations) if isinstance(tolerations, list) else None,
        start_timeout_seconds=float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None,
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a model's image resolved to: kept in its simulation's record and applied to its pod.

    ``image`` and ``env`` only for a ``modelservice:`` reference (a plain image keeps its own image and
    gets no env vars); ``None`` in the other fields: the daemon's setting applies.
    """

    service: str
    image: str | None = None
    env: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Mapping[str, str]] | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    start_timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The images of one DeployModels: those the registry resolved, and the unknown references with why."""

    resolved: dict[str, Resolved]
    unknown: dict[str, str]


class Registry:
    """The namespace's ModelServices as last listed and watched; ``None`` as ``enabled``: not known yet.

    Changed only in the event loop (the watch hands its lists and events over), read by the deploys.
    """

    def __init__(self) -> None:
        self.enabled: bool | None = None  # False: the CRD is not installed, or the Role does not grant it
        self.synced = False  # a first list arrived
        self._by_name: dict[str, ModelService] = {}
        self._by_image: dict[str, ModelService] | None = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def listed(self, services: Iterable[tuple[str, ModelService | None]]) -> None:
        """A full list (of ``named_model_service``): the cache is exactly it."""
        self._by_name = {name: service for name, service in services if service is not None}
        self._by_image = None
        self.synced = True

    def changed(self, name: str, service: ModelService | None, *, deleted: bool) -> None:
        """The ModelService ``name`` added or modified (``service``: what it now says; ``None``: nothing
        usable), or deleted."""
        if deleted or service is None:
            self._by_name.pop(name, None)
        else:
            self._by_name[name] = service
        self._by_image = None

    def get(self, name: str) -> ModelService | None:
        return self._by_name.get(name)

    def of_image(self, image: str) -> ModelService | None:
        """The ModelService whose ``spec.image`` is ``image``: the first by name when several are."""
        if self._by_image is None:
            by_image: dict[str, ModelService] = {}
            for name in sorted(self._by_name):
                by_image.setdefault(self._by_name[name].image, self._by_name[name])
            self._by_image = by_image
        return self._by_image.get(image)


def _settings_of(service: ModelService) -> dict[str, Any]:
    return {"service": service.name, "resources": service.resources, "node_selector": service.node_selector,
            "tolerations": service.tolerations, "start_timeout_seconds": service.start_timeout_seconds}


def _literal_secret(service: ModelService, is_secret: Callable[[str], bool]) -> str | None:
    """The first env var the ModelService gives a literal value under a secret's name (``SECRET_ENV``)."""
    return next((str(entry["name"]) for entry in service.env
                 if is_secret(str(entry.get("name", ""))) and "value" in entry and "valueFrom" not in entry), None)


def resolve(images: Iterable[str], registry: Registry,
            is_secret: Callable[[str], bool] = lambda _name: False) -> Resolution:
    """What each distinct image resolves to (plain images no ModelService has are left out), and which
    references cannot be run (their models are answered FAILED -1, with why): unknown names, and a
    ModelService that gives a secret env var (``is_secret``) a literal value, which would stand in the pod
    spec and the record in clear and which no redaction knows (it must be a ``secretKeyRef``)."""
    resolved: dict[str, Resolved] = {}
    unknown: dict[str, str] = {}
    for image in dict.fromkeys(images):
        name = reference_name(image)
        if name is None:
            if registry.enabled and (service := registry.of_image(image)) is not None:
                resolved[image] = Resolved(**_settings_of(service))
            continue
        service = registry.get(name) if registry.enabled else None
        if service is not None and (secret := _literal_secret(service, is_secret)) is not None:
            unknown[image] = (f"ModelService {name!r} gives the secret env var {secret} a literal value: it must be "
                              "a secretKeyRef")
        elif service is not None:
            resolved[image] = Resolved(image=service.image, env=service.env, **_settings_of(service))
        elif registry.enabled:
            unknown[image] = f"unknown ModelService {name!r}: none of that name in the daemon's namespace"
        else:
            unknown[image] = (f"unknown ModelService {name!r}: the model registry is off (the ModelService CRD "
                              "is not installed, or the daemon's Role does not grant it)")
    return Resolution(resolved, unknown)


def merged_env(defaults: Sequence[Mapping[str, Any]], given: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ModelService's env vars the SO did not give (in their order), then the SO's: same name, SO wins.

    Entries are Kubernetes EnvVar JSON: a default's ``secretKeyRef`` stays a reference (the daemon never
    reads that Secret).
    """
    if not defaults:
        return list(given)
    names = {entry["name"] for entry in given}
    return [dict(entry) for entry in defaults if entry.get("name") not in names] + list(given)


def resources(defaults: Mapping[str, Mapping[str, str]],
              service: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    """The container's requests and limits: per resource (cpu, memory, ...), the ModelService's when it names
    that resource (in its requests or its limits), else the daemon's defaults.

    Per resource and not per amount: a ModelService whose memory limit is below the default memory request
    must not get a pod the API server refuses (request above limit).
    """
    if service is None:
        return {kind: dict(amounts) for kind, amounts in defaults.items() if amounts}
    named = {key for amounts in service.values() for key in amounts}
    merged: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        amounts = {key: amount for key, amount in (defaults.get(kind) or {}).items() if key not in named}
        amounts.update(service.get(kind) or {})
        if amounts:
            merged[kind] = amounts
    return merged


#: The most a simulation's resolved ModelServices may take in its record's head (a ConfigMap of at most 1 MiB, the
#: rest of which is the simulation's own state): beyond it the DeployModels is refused, rather than a head the API
#: server would refuse at every save.
RECORDED_BYTES_MAX = 256 * 1024


def recorded_size(resolved: Mapping[str, Resolved]) -> int:
    """How many bytes what was resolved takes in the record's head (a ConfigMap of at most 1 MiB)."""
    return len(json.dumps(encode_resolved(resolved), separators=(",", ":")))


def encode_resolved(resolved: Mapping[str, Resolved]) -> dict[str, Any]:
    """What a simulation's images resolved to, as JSON-able data for its record."""
    return {image: {
        "service": each.service, "image": each.image, "env": list(each.env), "resources": each.resources,
        "nodeSelector": each.node_selector,
        "tolerations": None if each.tolerations is None else list(each.tolerations),
        "startTimeoutSeconds": each.start_timeout_seconds,
    } for image, each in resolved.items()}


def decode_resolved(data: Mapping[str, Any]) -> dict[str, Resolved]:
    """``encode_resolved`` read back (``KeyError``, ``TypeError``, ``ValueError`` for what is not)."""
    decoded: dict[str, Resolved] = {}
    for image, each in data.items():
        tolerations = each["tolerations"]
        timeout = each["startTimeoutSeconds"]
        decoded[str(image)] = Resolved(
            service=str(each["service"]),
            image=None if each["image"] is None else str(each["image"]),
            env=tuple(dict(entry) for entry in each["env"]),
            resources=each["resources"],
            node_selector=each["nodeSelector"],
            tolerations=None if tolerations is None else tuple(dict(item) for item in tolerations),
            start_timeout_seconds=None if timeout is None else float(timeout),
        )
    return decoded
