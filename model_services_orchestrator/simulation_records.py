"""The record each simulation leaves in the cluster, so a restarted daemon knows what it had said.

Pure: turns a ``Simulation`` into the data of ConfigMaps and Secrets, and
back. A ConfigMap or Secret holds at most 1 MiB, and a simulation may have
tens of thousands of models, so the record is split:

- the head, a ConfigMap named ``record_name``: the simulation's own state
  (ModelsReady and AllModelsHaveTerminated sent, keepLogsHours, the end time,
  what the model registry made of its images at its DeployModels, since when
  it waits for admission by the namespace's quota: the queue is in the
  records, so it survives restarts and failover) and how many parts hold its
  models;
- the parts, ConfigMaps ``<record>-p<k>``: which models exist, are created,
  are ready and were reported, a bounded number of bytes each;
- the specs (images and env vars, which may be passwords, needed for pods
  not yet created when the daemon died): Secrets ``<record>.p<k>``,
  compressed;
- the secret env values the pods reference: Secrets ``<record>.v<k>``, as
  many as their size needs (ten thousand models with a token each are over
  1 MiB).

A save writes the parts that changed, then the head, so a head never claims
more than its parts hold.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from model_services_orchestrator.model_inventory import (
    Delivery,
    Model,
    ModelSpec,
    Phase,
    Simulation,
    StopReason,
    Termination,
)
from model_services_orchestrator.model_registry import decode_resolved, encode_resolved
from model_services_orchestrator.pod_specs import (
    ANNOTATION_SIMULATION_ID,
    ANNOTATION_SO,
    LABEL_MANAGED_BY,
    LABEL_SIMULATION_ID,
    LABEL_SIMULATION_KEY,
    LABEL_SO,
    MANAGED_BY,
    dns_label,
    label_value,
    pod_name,
    restarted_pod_name,
    secret_key,
    short_hash,
    simulation_candidates_selector,
    simulation_key,
)

__all__ = [
    "PART_KEY",
    "RECORD_KEY",
    "SPECS_KEY",
    "IncompleteRecordError",
    "RecordEncoder",
    "RecordError",
    "RecordWrite",
    "decode_receipts",
    "decode_record",
    "decode_specs",
    "encode_receipts",
    "encode_record",
    "encode_specs",
    "incomplete_head",
    "owner_uids",
    "pack_secret_values",
    "part_index",
    "part_name",
    "record_annotations",
    "record_labels",
    "record_name",
    "records_selector",
    "session_labels",
    "session_record_name",
    "simulation_records_selector",
    "values_index",
    "values_name",
]

RECORD_KEY = "simulation.json"
PART_KEY = "models.json"
SPECS_KEY = "models.json.z"
SESSION_KEY = "receipts.json"
_VERSION = 3
# A record an older daemon would misread (its resolved ModelServices, or its place in the admission queue, which
# it would not know to keep to): an older daemon refuses version 4 and leaves it alone.
_VERSION_WITH_ADDITIONS = 4
_CREATED = 1
_READY = 2
_REPORTED = 4
_STOPPING = 8
_RESTARTED = 16
# A part's JSON stays below this (the API's limit is 1 MiB per object, data and metadata).
PART_BYTES = 768 * 1024
# Specs are packed by their JSON size before compression; base64 adds a third in the worst case.
SPECS_PART_BYTES = 560 * 1024
# What a termination's reason may add to an entry: 64 characters, each escaped to at most 6.
_REASON_CHARS = 64
_ENTRY_OVERHEAD = len('[,63,[-2147483648,"",65535],[-1.0000000000000002e+100,3]]') + 6 * _REASON_CHARS


# The readable head of a record's name: 63 less the hash and room for ``.p<k>``... of a part.
_NAME_HEAD = 44


class RecordError(ValueError):
    """A record in the cluster that this version cannot read."""


class IncompleteRecordError(RecordError):
    """A head written whole for the first time, and the daemon killed before its parts: nothing was done
    from it (pods are made only once a save is through), so it is rolled back."""


def incomplete_head(head: dict[str, str]) -> dict[str, str]:
    """The head a whole write puts first, to own the parts that follow: it says it is not complete."""
    body = json.loads(head[RECORD_KEY])
    body.update(parts=0, complete=False)
    return {RECORD_KEY: json.dumps(body, separators=(",", ":"))}


def record_name(so: str, simulation_id: str) -> str:
    """The name of the simulation's head ConfigMap and of the Secret its pods reference.

    Readable, and ending in a hash of the exact ids: ``A-b`` and ``a-b``, or SO ``a`` with simulation
    ``b-c`` and SO ``a-b`` with ``c``, never share a record. A DNS label: no dot, unlike every part.
    """
    readable = dns_label("mso", so, simulation_id)
    head = readable[:_NAME_HEAD].rstrip("-")
    return f"{head}-r{short_hash(so, simulation_id)}"


def session_record_name(so: str) -> str:
    """The ConfigMap of the daemon's MQTT session (the broker's receipts): ``-s<hash>``, no simulation's ``-r``."""
    return f"{dns_label('mso', so, 'session')[:_NAME_HEAD].rstrip('-')}-s{short_hash(so)}"


def encode_receipts(receipts: dict[int, tuple[str, str, str]]) -> dict[str, str]:
    return {SESSION_KEY: json.dumps(sorted([packet_id, *key] for packet_id, key in receipts.items()),
                                    separators=(",", ":"))}


def decode_receipts(data: dict[str, str]) -> dict[int, tuple[str, str, str]]:
    try:
        return {int(packet_id): (str(simulation), str(kind), str(model))
                for packet_id, simulation, kind, model in json.loads(data[SESSION_KEY])}
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"unreadable session record: {exc}") from exc


def part_name(record: str, index: int) -> str:
    """The name of a part of a record: a ConfigMap of model states, or a Secret of specs.

    The dot keeps every part name apart from every head name (a head is a DNS label, without dots).
    """
    return f"{record}.p{index}"


def values_name(record: str, index: int) -> str:
    """The name of a Secret of secret env values that the pods reference."""
    return f"{record}.v{index}"


def values_index(record: str, name: str) -> int | None:
    """Which Secret of values of ``record`` the object ``name`` is (``record`` itself before 0.3)."""
    if name == record:
        return 0
    prefix = record + ".v"
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def part_index(record: str, name: str) -> int | None:
    """Which part of ``record`` the object ``name`` is (also in the layout before 0.3, ``-p<k>``)."""
    for separator in (".p", "-p"):
        prefix = record + separator
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


def owner_uids(obj: dict[str, Any]) -> set[str]:
    """The uids of an object's owners: the parts of a record are owned by its head, and only by it."""
    return {str(reference.get("uid")) for reference in (obj.get("metadata") or {}).get("ownerReferences") or []}


def record_labels(so: str, simulation_id: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SO: label_value(so),
        LABEL_SIMULATION_ID: label_value(simulation_id),
        LABEL_SIMULATION_KEY: simulation_key(so, simulation_id),
    }


def record_annotations(so: str, simulation_id: str) -> dict[str, str]:
    """The exact ids, which the labels may only stand in for: what the record's deletion checks."""
    return {ANNOTATION_SO: so, ANNOTATION_SIMULATION_ID: simulation_id}


def session_labels(so: str) -> dict[str, str]:
    """The labels of the session record: the daemon's, and no simulation's."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SO: label_value(so)}


def records_selector(so: str) -> str:
    return ",".join(f"{key}={value}" for key, value in session_labels(so).items())


def simulation_records_selector(so: str, simulation_id: str) -> str:
    """Every ConfigMap and Secret that may be one simulation's (head, parts, specs), and those of others
    whose ids share its ``simulation_id`` label: to be told apart by their annotations and owners."""
    return simulation_candidates_selector(so, simulation_id)


def _entry(model: Model) -> str:
    flags = ((_CREATED if model.has_pod else 0) | (_READY if model.ready else 0)
             | (_REPORTED if model.reported else 0) | (_STOPPING if model.phase is Phase.STOPPING else 0)
             | (_RESTARTED if model.restarted else 0))
    termination = (None if model.termination is None
                   else [model.termination.exit_code, model.termination.reason[:_REASON_CHARS], model.packet_id])
    entry: list[Any] = [model.model_id, flags, termination]
    if model.stop_at is not None and model.termination is None:
        entry.append([model.stop_at, int(model.stop_reason)])  # a deadline a restart must keep
    return json.dumps(entry, separators=(",", ":"))


def _largest_entry(model_id: str) -> int:
    """The most bytes a model's entry can take, whatever becomes of the model."""
    return len(json.dumps(model_id)) + _ENTRY_OVERHEAD


def _head(simulation: Simulation, parts: int) -> dict[str, str]:
    # What the model registry made of its images: a few entries per simulation (one per distinct image a
    # ModelService knows), never one per model.
    services = {"services": encode_resolved(simulation.services)} if simulation.services else {}
    additions = bool(simulation.services) or simulation.queued_at is not None
    return {RECORD_KEY: json.dumps({
        "version": _VERSION_WITH_ADDITIONS if additions else _VERSION,
        "simulatorId": simulation.simulator_id,
        "simulationId": simulation.simulation_id,
        "keepLogsHours": simulation.keep_logs_hours,
        "modelsReady": int(simulation.models_ready),
        "allTerminated": int(simulation.all_terminated),
        "modelsReadyId": simulation.models_ready_id,
        "allTerminatedId": simulation.all_terminated_id,
        "finishedAt": simulation.finished_at,
        "endedBySo": simulation.ended_by_so,
        "groupSize": simulation.group_size,
        "queuedAt": simulation.queued_at,
        "parts": parts,
        **services,
    }, separators=(",", ":"))}


def _part(entries: Iterable[str]) -> dict[str, str]:
    return {PART_KEY: "[" + ",".join(entries) + "]"}


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """What a save writes: the head's data, and the data of the parts that changed, by index."""

    head: dict[str, str]
    parts: dict[int, dict[str, str]]


class RecordEncoder:
    """Encodes records for repeated saves: only the parts whose models changed since the last save.

    Models go into parts in the order they were deployed, as many as fit in
    ``part_bytes`` however they end, so a model's part never changes. A storm of
    terminations then costs, per save, the entries of the models that changed
    and a join of their parts.
    """

    def __init__(self, part_bytes: int = PART_BYTES) -> None:
        self._part_bytes = part_bytes
        self._layouts: dict[str, _Layout] = {}

    def encode(self, simulation: Simulation, changed: Iterable[str] = (), *, everything: bool = False) -> RecordWrite:
        """The head, and the parts holding the ``changed`` models (all of them the first time, or with
        ``everything``)."""
        layout = self._layouts.get(simulation.simulation_id)
        if layout is None:
            layout = self._layouts[simulation.simulation_id] = _Layout(self._part_bytes)
            everything = True
        touched: set[int] = set()
        if everything:
            changed = simulation.models
        elif new := {model_id for model_id in changed if not layout.holds(model_id)}:
            # Models new to the record take their places in the order they were deployed in.
            changed = [*(model_id for model_id in simulation.models if model_id in new),
                       *(model_id for model_id in changed if model_id not in new)]
        for model_id in changed:
            model = simulation.models.get(model_id)
            if model is not None:
                touched.add(layout.put(model_id, _entry(model)))
        parts = range(len(layout.entries)) if everything else sorted(touched)
        return RecordWrite(head=_head(simulation, len(layout.entries)),
                           parts={index: _part(layout.entries[index].values()) for index in parts})

    def forget(self, simulation_id: str) -> None:
        self._layouts.pop(simulation_id, None)


class _Packer:
    """Puts items, in order, into JSON lists of at most ``part_bytes`` each ("[", "]" and commas counted)."""

    def __init__(self, part_bytes: int) -> None:
        self._part_bytes = part_bytes
        self._room = 0
        self.parts = 0

    def place(self, size: int) -> int:
        """The part an item of ``size`` bytes goes into: the last one, or a new one when it is full."""
        if not self.parts or size + 1 > self._room:
            self.parts += 1
            self._room = self._part_bytes - 2
        self._room -= size + 1
        return self.parts - 1


class _Layout:
    """Which part each model of a simulation is in, and the encoded entries of each part."""

    def __init__(self, part_bytes: int) -> None:
        self._packer = _Packer(part_bytes)
        self._part_of: dict[str, int] = {}
        self.entries: list[dict[str, str]] = []

    def holds(self, model_id: str) -> bool:
        return model_id in self._part_of

    def put(self, model_id: str, entry: str) -> int:
        index = self._part_of.get(model_id)
        if index is None:
            index = self._part_of[model_id] = self._packer.place(_largest_entry(model_id))
            if index == len(self.entries):
                self.entries.append({})
        self.entries[index][model_id] = entry
        return index


def encode_record(simulation: Simulation, part_bytes: int = PART_BYTES) -> RecordWrite:
    """The whole record of a simulation: its head and every part."""
    return RecordEncoder(part_bytes).encode(simulation, everything=True)


def decode_record(head: dict[str, str], part: Callable[[int], dict[str, str] | None],
                  specs: dict[str, ModelSpec] | None = None, so: str = "") -> Simulation:
    """The ``Simulation`` a head and its parts describe; ``part(k)`` gives the data of part k, or None.

    ``specs`` come from the specs Secrets, where they still exist.
    """
    try:
        body: dict[str, Any] = json.loads(head[RECORD_KEY])
        version = body.get("version")
        if version not in (2, _VERSION, _VERSION_WITH_ADDITIONS):
            raise RecordError(f"unknown record version {version!r}")
        if body.get("complete") is False:
            raise IncompleteRecordError("written whole for the first time, not finished")
        if version == 2:
            # Sent meant decided and handed out: taken as delivered, as version 2 itself took it.
            ready, ended = (Delivery.DELIVERED if body[key] else Delivery.NONE
                            for key in ("modelsReadySent", "allTerminatedSent"))
        else:
            ready, ended = Delivery(int(body["modelsReady"])), Delivery(int(body["allTerminated"]))
        simulation = Simulation(
            simulator_id=str(body["simulatorId"]),
            simulation_id=str(body["simulationId"]),
            keep_logs_hours=float(body["keepLogsHours"]),
            models_ready=ready,
            all_terminated=ended,
            finished_at=None if body["finishedAt"] is None else float(body["finishedAt"]),
            ended_by_so=bool(body.get("endedBySo", False)),
            group_size=int(body.get("groupSize", 0)),
            # Waiting for admission when it was saved (absent: written before admission existed, so admitted).
            queued_at=None if body.get("queuedAt") is None else float(body["queuedAt"]),
            models_ready_id=int(body.get("modelsReadyId", 0)),
            all_terminated_id=int(body.get("allTerminatedId", 0)),
            services=decode_resolved(body.get("services") or {}),
        )
        for index in range(int(body["parts"])):
            data = part(index)
            if data is None:
                raise RecordError(f"part {index} of {body['parts']} is missing")
            for model_id, flags, termination, *stop in json.loads(data[PART_KEY]):
                model = simulation.models[str(model_id)] = _model(
                    simulation, str(model_id), int(flags), termination, (specs or {}).get(str(model_id)),
                    legacy=version == 2, so=so)
                if stop:
                    model.stop_at, model.stop_reason = float(stop[0][0]), StopReason(int(stop[0][1]))
    except RecordError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"unreadable simulation record: {exc}") from exc
    return simulation


def _model(simulation: Simulation, model_id: str, flags: int, termination: Any, spec: ModelSpec | None, *,
           legacy: bool, so: str) -> Model:
    ended = None if termination is None else Termination(int(termination[0]), str(termination[1]))
    packet_id = int(termination[2]) if termination is not None and len(termination) > 2 else 0
    if ended is not None:
        phase = Phase.STOPPING if flags & _STOPPING else Phase.ENDED
    else:
        phase = Phase.CREATED if flags & _CREATED else Phase.PENDING
    name = (restarted_pod_name(simulation.simulator_id, simulation.simulation_id, model_id, so)
            if flags & _RESTARTED else pod_name(simulation.simulator_id, simulation.simulation_id, model_id))
    return Model(
        model_id=model_id,
        pod_name=name,
        restarted=bool(flags & _RESTARTED),
        packet_id=packet_id,
        spec=spec,
        phase=phase,
        has_pod=bool(flags & _CREATED),
        ready=bool(flags & _READY),
        termination=ended,
        reported=bool(flags & _REPORTED) or (legacy and ended is not None),
    )


def encode_specs(specs: Iterable[ModelSpec], part_bytes: int = SPECS_PART_BYTES) -> list[dict[str, str]]:
    """The data of the specs Secrets (base64, as the API wants it): images and env vars, compressed."""
    packer = _Packer(part_bytes)
    parts: list[list[str]] = []
    for spec in specs:
        text = json.dumps([spec.model_id, spec.image, [list(pair) for pair in spec.env]])
        if packer.place(len(text)) == len(parts):
            parts.append([])
        parts[-1].append(text)
    return [{SPECS_KEY: base64.b64encode(zlib.compress(("[" + ",".join(texts) + "]").encode(), 6)).decode("ascii")}
            for texts in parts]


def decode_specs(parts: Iterable[dict[str, str]]) -> dict[str, ModelSpec]:
    """The specs the given Secrets' data hold, by model id."""
    specs: dict[str, ModelSpec] = {}
    try:
        for data in parts:
            plain = zlib.decompress(base64.b64decode(data[SPECS_KEY]))
            for model_id, image, env in json.loads(plain):
                specs[str(model_id)] = ModelSpec(str(model_id), str(image), tuple((str(k), str(v)) for k, v in env))
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise RecordError(f"unreadable model specs: {exc}") from exc
    return specs


def pack_secret_values(values: Iterable[str], part_bytes: int = SPECS_PART_BYTES) -> list[dict[str, str]]:
    """The data of the Secrets of secret env values (``secret_key(value)`` -> base64), each below 1 MiB.

    In the order given, each distinct value once: a password shared by a thousand models is stored once.
    """
    packer = _Packer(part_bytes)
    parts: list[dict[str, str]] = []
    seen: set[str] = set()
    for value in values:
        key = secret_key(value)
        if key in seen:
            continue
        seen.add(key)
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        if packer.place(len(key) + len(encoded) + 6) == len(parts):
            parts.append({})
        parts[-1][key] = encoded
    return parts
