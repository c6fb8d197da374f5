"""Admission of whole simulations by the namespace's ResourceQuota: who may create its pods now.

A DOTS simulation only makes sense whole: a model that never starts holds every
other at "waiting for ModelsReady". So when the namespace has a ResourceQuota,
the daemon creates no pod of a simulation before the quota's headroom holds
all of them: what its pods request (CPU, memory, the pods themselves) against
``hard - used``, less what simulations admitted earlier will still create
(the API server counts a pod in ``used`` when it is created, not before).

Pure: quantities, what a pod asks for, what a quota allows, and the decision
over the queue. The runtime reads the quotas (consistently, at the moment it
decides) and carries the verdicts out through the inventory.

The queue is strictly FIFO: a simulation that waits holds up every later
one, even one that would fit now. Otherwise a stream of small simulations
could keep a large one waiting for ever; DOTS simulations are all or nothing,
and a later one overtaking an earlier one is the surprise an operator would
have to explain. One that can never fit (it needs more than ``hard``) does not
hold anybody up: it is answered at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "RESOURCES",
    "Quota",
    "Resources",
    "Verdicts",
    "added",
    "decide",
    "describe",
    "parse_quantity",
    "pod_demand",
    "read_quota",
    "scaled",
]

Resources = dict[str, Fraction]

#: What a quota may limit that the daemon's pods use, in the quota's own words.
RESOURCES = ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
# Other names a quota may use for the same things.
_ALIASES = {"count/pods": "pods", "cpu": "requests.cpu", "memory": "requests.memory"}
# Quota scopes that hold the daemon's pods: they have no activeDeadlineSeconds when made, and have requests.
_OUR_SCOPES = frozenset({"NotTerminating", "NotBestEffort"})

_SUFFIXES = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^(?P<number>[+-]?(\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def parse_quantity(text: str | int | float) -> Fraction:
    """A Kubernetes quantity (``100m``, ``1.5``, ``128Mi``, ``1e3``) exactly; ``ValueError`` if it is none."""
    if isinstance(text, int | float):
        return Fraction(text)
    found = _QUANTITY.match(text.strip())
    if found is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    suffix = found["suffix"] or ""
    number = Fraction(found["number"])
    if len(suffix) > 1 and suffix[0] in "eE":
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def pod_demand(pod: Mapping[str, Any]) -> Resources:
    """What one pod takes of a quota: itself, and its containers' requests and limits (as the API server
    counts them, a limit without a request requesting as much)."""
    demand: Resources = {"pods": Fraction(1)}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for name in ("cpu", "memory"):
            request = requests.get(name, limits.get(name))
            if request is not None:
                demand[f"requests.{name}"] = demand.get(f"requests.{name}", Fraction(0)) + parse_quantity(request)
            if (limit := limits.get(name)) is not None:
                demand[f"limits.{name}"] = demand.get(f"limits.{name}", Fraction(0)) + parse_quantity(limit)
    return demand


def scaled(demand: Mapping[str, Fraction], count: int) -> Resources:
    return {name: value * count for name, value in demand.items()}


def added(*amounts: Mapping[str, Fraction]) -> Resources:
    total: Resources = {}
    for amount in amounts:
        for name, value in amount.items():
            total[name] = total.get(name, Fraction(0)) + value
    return total


@dataclass(frozen=True, slots=True)
class Quota:
    """A ResourceQuota as admission reads it; ``applies``: it counts the daemon's pods (its scopes hold them)."""

    name: str
    hard: Resources = field(default_factory=dict)
    used: Resources = field(default_factory=dict)
    applies: bool = True
    # Its controller has counted what it limits (``status.used`` names every resource of ``hard``): a quota
    # just made is not counted yet, and admitting against a ``used`` of nothing would admit too much.
    counted: bool = True


def _resources(values: Mapping[str, Any], pick: Any) -> Resources:
    """The quota's amounts of the resources the daemon's pods use, under their canonical names."""
    chosen: Resources = {}
    for name, value in values.items():
        canonical = _ALIASES.get(name, name)
        if canonical not in RESOURCES:
            continue  # services, storage, GPUs...: not what our pods take
        amount = parse_quantity(value)
        chosen[canonical] = pick(chosen[canonical], amount) if canonical in chosen else amount
    return chosen


def read_quota(obj: Mapping[str, Any]) -> Quota:
    """A ResourceQuota object as the API gives it. A quota with a scope that does not hold our pods
    (``Terminating``, ``BestEffort``, a priority class...) does not apply to them."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    scopes = set(spec.get("scopes") or [])
    scopes |= {str(expression.get("scopeName")) for expression
               in (spec.get("scopeSelector") or {}).get("matchExpressions") or []}
    hard, used = _resources(spec.get("hard") or {}, min), _resources(status.get("used") or {}, max)
    return Quota(
        name=str((obj.get("metadata") or {}).get("name", "")),
        # Two names for one resource (``cpu`` and ``requests.cpu``): the smaller limit holds.
        hard=hard,
        used=used,
        applies=scopes <= _OUR_SCOPES,
        counted=hard.keys() <= used.keys(),
    )


def describe(amounts: Mapping[str, Fraction]) -> str:
    """``requests.cpu=1500m, requests.memory=768Mi, pods=6``: as a person (and ``kubectl``) writes them."""
    return ", ".join(f"{name}={_quantity(name, amounts[name])}" for name in RESOURCES if name in amounts)


def _quantity(name: str, value: Fraction) -> str:
    if name.endswith("memory"):
        for suffix in ("Gi", "Mi", "Ki"):
            unit = _SUFFIXES[suffix]
            if value % unit == 0 and value >= unit:
                return f"{value // unit}{suffix}"
        return str(round(value))
    if name.endswith("cpu") and value.denominator != 1:
        return f"{round(value * 1000)}m"
    return str(round(value)) if value.denominator == 1 else f"{float(value):g}"


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What becomes of each queued simulation: admitted now (in queue order), never (why), or still waiting
    (what it needs and what is free)."""

    admitted: list[str]
    never: dict[str, str]
    waiting: dict[str, str]


def decide(queue: Sequence[tuple[str, Mapping[str, Fraction]]], quotas: Iterable[Quota],
           reserved: Mapping[str, Fraction]) -> Verdicts:
    """Admit from the head of ``queue`` (simulation id, what all its pods take) while each fits every quota
    that applies; ``reserved``: what admitted simulations are still to create (not in ``used`` yet)."""
    applying = [quota for quota in quotas if quota.applies and quota.hard]
    never: dict[str, str] = {}
    for simulation_id, demand in queue:
        for quota in applying:
            over = {name: demand[name] for name in quota.hard if demand.get(name, 0) > quota.hard[name]}
            if over:
                never[simulation_id] = (f"needs {describe(over)}, more than ResourceQuota {quota.name} allows "
                                        f"at all ({describe({name: quota.hard[name] for name in over})})")
                break
    free = {quota.name: {name: hard - quota.used.get(name, Fraction(0)) - reserved.get(name, Fraction(0))
                         for name, hard in quota.hard.items()} for quota in applying}
    admitted: list[str] = []
    waiting: dict[str, str] = {}
    blocked_by = ""
    if uncounted := next((quota.name for quota in applying if not quota.counted), ""):
        # Decided again when its controller writes its status (the quota watch says so).
        for simulation_id, _demand in queue:
            if simulation_id not in never:
                waiting[simulation_id] = f"ResourceQuota {uncounted} not counted yet by its controller"
        return Verdicts(admitted, never, waiting)
    for simulation_id, demand in queue:
        if simulation_id in never:
            continue
        if blocked_by:
            waiting[simulation_id] = f"behind simulation {blocked_by}, first in the queue"
            continue
        short = [(quota_name, name) for quota_name, room in free.items() for name in room
                 if demand.get(name, 0) > room[name]]
        if not short:
            admitted.append(simulation_id)
            for room in free.values():
                for name in room:
                    room[name] -= demand.get(name, Fraction(0))
            continue
        blocked_by = simulation_id
        quota_name = short[0][0]
        names = [name for each, name in short if each == quota_name]
        room = {name: max(free[quota_name][name], Fraction(0)) for name in names}
        waiting[simulation_id] = (f"needs {describe({name: demand[name] for name in names})}; free in "
                                  f"ResourceQuota {quota_name}: {describe(room)}")
    return Verdicts(admitted, never, waiting)
