"""The records in the cluster: reading, saving and deleting the objects of each simulation's record.

``simulation_records`` says what a record holds, purely; this module is its
I/O, behind the small ``ObjectApi`` the Kubernetes gateway implements (and
``testing`` fakes). Per simulation: a head ConfigMap, part ConfigMaps owned
by it, spec Secrets and the Secrets of the secret env values the pods
reference. A save writes the parts that changed and then the head; a save
after a failure, or after someone deleted the head, writes everything again,
because which objects landed is unknown. Nothing here retries: the runtime
does, with the rest of the simulation's sync.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from model_services_orchestrator.logs import get_logger
from model_services_orchestrator.model_inventory import ModelSpec, Simulation
from model_services_orchestrator.pod_specs import LABEL_SIMULATION_ID, label_value, secret_key
from model_services_orchestrator.simulation_records import (
    RECORD_KEY,
    IncompleteRecordError,
    RecordEncoder,
    RecordError,
    decode_receipts,
    decode_record,
    decode_specs,
    encode_receipts,
    encode_specs,
    incomplete_head,
    owner_uids,
    pack_secret_values,
    part_index,
    part_name,
    record_annotations,
    record_labels,
    record_name,
    records_selector,
    session_labels,
    session_record_name,
    simulation_records_selector,
    values_index,
    values_name,
)

__all__ = ["ObjectApi", "RecordStore", "Restored"]

_log = get_logger(__name__)


class ObjectApi(Protocol):
    """The calls on ConfigMaps and Secrets (``kind``: ``configmaps`` or ``secrets``) the store needs."""

    async def list_objects(self, kind: str, label_selector: str, *,
                           metadata_only: bool = False) -> list[dict[str, Any]]: ...

    async def put_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_object(self, kind: str, body: dict[str, Any]) -> bool: ...

    async def delete_object(self, kind: str, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Restored:
    """A simulation read back from its record, and the secret env values its specs carry."""

    simulation: Simulation
    secret_env: list[tuple[str, str]]


class RecordStore:
    """Saves, reads and deletes the records of one SO's simulations."""

    def __init__(self, *, api: ObjectApi, so: str, is_secret: Callable[[str], bool]) -> None:
        self._api = api
        self._so = so
        self._is_secret = is_secret
        self._encoder = RecordEncoder()
        # What the cluster holds, as far as this store knows: the head's uid (absent: write everything
        # on the next save), and which Secret holds each secret env value.
        self._uids: dict[str, str] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        # The MQTT session's receipts as ``load`` found them (packet id -> the message's key).
        self.receipts_at_start: dict[int, tuple[str, str, str]] = {}

    def secret_for(self, simulation_id: str) -> Callable[[str], str]:
        """Which Secret holds a secret env value of the simulation (for the pods' ``secretKeyRef``)."""
        held = self._secrets.get(simulation_id, {})
        fallback = values_name(record_name(self._so, simulation_id), 0)
        # A value no Secret holds cannot happen once the record is saved; were it to, the pod waits for
        # a Secret (CreateContainerConfigError) rather than carrying the value in its spec.
        return lambda value: held.get(secret_key(value), fallback)

    def forget(self, simulation_id: str) -> None:
        self._uids.pop(simulation_id, None)
        self._secrets.pop(simulation_id, None)
        self._encoder.forget(simulation_id)

    # -- saving

    async def save(self, simulation: Simulation, changed: Iterable[str]) -> None:
        """Write the simulation as it is now; ``changed``: the models changed since the last save."""
        simulation_id = simulation.simulation_id
        uid = self._uids.pop(simulation_id, None)  # put back only once this save is through
        # Encoded before anything is awaited: the record is the state of one moment.
        write = self._encoder.encode(simulation, changed, everything=uid is None)
        specs = [model.spec for model in simulation.models.values() if model.spec is not None] if uid is None else []
        if uid is not None:
            # The parts first, the head last: a head never claims more than its parts hold.
            await self._write_parts(simulation_id, uid, write.parts)
            if await self._api.replace_object("configmaps", self._body("ConfigMap", record_name(
                    self._so, simulation_id), simulation_id, None, write.head)):
                self._uids[simulation_id] = uid
                return
            # Deleted by someone: written again whole, with the specs and the values it owns.
            write = self._encoder.encode(simulation, everything=True)
            specs = [model.spec for model in simulation.models.values() if model.spec is not None]
        # The head first (the parts are owned by it), saying it is incomplete until they are all written:
        # a kill in between leaves a record the next daemon rolls back, never one it cannot read.
        name = record_name(self._so, simulation_id)
        saved = await self._api.put_object("configmaps", self._body(
            "ConfigMap", name, simulation_id, None, incomplete_head(write.head)))
        uid = saved["metadata"]["uid"]
        await self._save_specs(simulation_id, uid, specs)
        await self._write_parts(simulation_id, uid, write.parts)
        await self._write_config_map(self._body("ConfigMap", name, simulation_id, None, write.head))
        self._uids[simulation_id] = uid

    def _body(self, kind: str, name: str, simulation_id: str, owner_uid: str | None,
              data: dict[str, str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "labels": record_labels(self._so, simulation_id),
                                    "annotations": record_annotations(self._so, simulation_id)}
        if owner_uid is not None:
            # Gone with the head when someone deletes it, even while the daemon is down.
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                            "name": record_name(self._so, simulation_id), "uid": owner_uid}]
        body: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}
        if kind == "Secret":
            body["type"] = "Opaque"
        return body

    # Replace an object believed to exist, or create it. One per kind, each naming its resource: the
    # Role's test reads the resources the daemon touches from these calls.

    async def _write_config_map(self, body: dict[str, Any]) -> None:
        if not await self._api.replace_object("configmaps", body):
            await self._api.put_object("configmaps", body)

    async def _write_secret(self, body: dict[str, Any]) -> None:
        if not await self._api.replace_object("secrets", body):
            await self._api.put_object("secrets", body)

    async def _write_parts(self, simulation_id: str, owner_uid: str, parts: dict[int, dict[str, str]]) -> None:
        name = record_name(self._so, simulation_id)
        await asyncio.gather(*(
            self._write_config_map(self._body("ConfigMap", part_name(name, index), simulation_id, owner_uid, data))
            for index, data in parts.items()))

    async def _save_specs(self, simulation_id: str, owner_uid: str, specs: list[ModelSpec]) -> None:
        name = record_name(self._so, simulation_id)
        values = pack_secret_values(value for spec in specs for env_name, value in spec.env
                                    if self._is_secret(env_name))
        await asyncio.gather(
            *(self._write_secret(self._body("Secret", values_name(name, index), simulation_id, owner_uid, data))
              for index, data in enumerate(values)),
            *(self._write_secret(self._body("Secret", part_name(name, index), simulation_id, owner_uid, data))
              for index, data in enumerate(encode_specs(specs))))
        self._secrets[simulation_id] = {key: values_name(name, index)
                                        for index, data in enumerate(values) for key in data}

    async def save_receipts(self, receipts: dict[int, tuple[str, str, str]]) -> None:
        """Write the MQTT session's receipts: the broker has these messages and waits for their PUBREL.

        Small and apart from the simulations' records, so a PUBREL never waits behind a large save.
        """
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": encode_receipts(receipts), "metadata": {
            "name": session_record_name(self._so), "labels": session_labels(self._so)}}
        await self._write_config_map(body)

    async def delete_receipts(self) -> None:
        """No message is half delivered any more: the session record goes (it is written again when needed)."""
        await self._api.delete_object("configmaps", session_record_name(self._so))

    # -- deleting

    async def delete(self, simulation_id: str) -> None:
        """Delete the record: the head first, so what a crash leaves behind is owned by nothing and collected.

        Only objects of this exact simulation: those whose annotations name it, or (written before the
        annotations were) the head and what it owns. Others' objects may share the label selected by.
        """
        head = record_name(self._so, simulation_id)
        selector = simulation_records_selector(self._so, simulation_id)
        listed = {"configmaps": await self._api.list_objects("configmaps", selector, metadata_only=True),
                  "secrets": await self._api.list_objects("secrets", selector, metadata_only=True)}
        head_uids = {item["metadata"]["uid"] for item in listed["configmaps"] if item["metadata"]["name"] == head}
        expected = record_annotations(self._so, simulation_id)

        def ours(item: dict[str, Any]) -> bool:
            metadata = item["metadata"]
            if annotations := metadata.get("annotations"):
                return all(annotations.get(key) == value for key, value in expected.items())
            return metadata["name"] == head or bool(head_uids & set(owner_uids(item)))

        await self._api.delete_object("configmaps", head)
        for item in listed["configmaps"]:
            if item["metadata"]["name"] != head and ours(item):
                await self._api.delete_object("configmaps", item["metadata"]["name"])
        for item in listed["secrets"]:
            if ours(item):
                await self._api.delete_object("secrets", item["metadata"]["name"])
        self.forget(simulation_id)

    # -- reading

    async def load(self, *, roll_back: bool = True) -> list[Restored]:
        """Every readable record of this SO; the unreadable ones are logged and left alone, the incomplete
        ones rolled back (``roll_back``: the daemon, which alone writes records, not a reader beside it)."""
        selector = records_selector(self._so)
        configmaps = await self._api.list_objects("configmaps", selector)
        secrets = await self._api.list_objects("secrets", selector)
        session = session_record_name(self._so)
        for configmap in configmaps:
            if configmap["metadata"]["name"] == session:
                try:
                    self.receipts_at_start = decode_receipts(configmap.get("data") or {})
                except RecordError as exc:
                    _log.error("session record unreadable, ignored", record=session, reason=str(exc))
        # A part belongs to the head that owns it (by uid) and is named after it: never to a head
        # whose name merely resembles its own (simulation ``r-p0`` and part 0 of simulation ``r``).
        owned: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for kind, items in (("configmaps", configmaps), ("secrets", secrets)):
            for item in items:
                for owner in owner_uids(item):
                    owned.setdefault(owner, []).append((kind, item))
        restored: list[Restored] = []
        for configmap in configmaps:
            if RECORD_KEY not in (configmap.get("data") or {}):
                continue  # a part, read with its head
            try:
                found = self._read(configmap, owned.get(configmap["metadata"]["uid"], []))
            except IncompleteRecordError:
                if not roll_back:
                    continue
                # Its first whole write was cut short: no pod was made from it (creates wait for a save that
                # is through), and its DeployModels, acknowledged only after that save, comes again.
                _log.warning("incomplete simulation record rolled back", record=configmap["metadata"]["name"])
                await self._roll_back(configmap, owned.get(configmap["metadata"]["uid"], []))
                continue
            if found is not None:
                restored.append(found)
        return restored

    async def _roll_back(self, head: dict[str, Any], owned: list[tuple[str, dict[str, Any]]]) -> None:
        await self._api.delete_object("configmaps", head["metadata"]["name"])
        for kind, item in owned:
            if kind == "configmaps":
                await self._api.delete_object("configmaps", item["metadata"]["name"])
            else:
                await self._api.delete_object("secrets", item["metadata"]["name"])

    def _read(self, head: dict[str, Any], owned: list[tuple[str, dict[str, Any]]]) -> Restored | None:
        name, uid = head["metadata"]["name"], head["metadata"]["uid"]
        parts: dict[int, dict[str, str]] = {}
        specs_parts: dict[int, dict[str, str]] = {}
        held: dict[str, str] = {}
        for kind, item in owned:
            item_name, data = item["metadata"]["name"], item.get("data") or {}
            if (index := part_index(name, item_name)) is not None:
                (parts if kind == "configmaps" else specs_parts)[index] = data
            elif kind == "secrets" and values_index(name, item_name) is not None:
                held.update(dict.fromkeys(data, item_name))
        try:
            specs = decode_specs(specs_parts[index] for index in itertools.takewhile(
                specs_parts.__contains__, itertools.count()))
            simulation = decode_record(head["data"], parts.get, specs, self._so)
            labels = head["metadata"].get("labels") or {}
            if labels.get(LABEL_SIMULATION_ID) != label_value(simulation.simulation_id):
                raise RecordError(f"labelled for another simulation than {simulation.simulation_id!r}")
        except IncompleteRecordError:
            raise
        except RecordError as exc:
            _log.error("simulation record unreadable, ignored", record=name, reason=str(exc))
            return None
        simulation_id = simulation.simulation_id
        if name == record_name(self._so, simulation_id):
            self._uids[simulation_id] = uid
        # else: a record of the layout before 0.3; the first save writes it whole under its new name, and
        # the cleanup deletes both (by label).
        self._secrets[simulation_id] = held
        secret_env = [(env_name, value) for spec in specs.values() for env_name, value in spec.env
                      if self._is_secret(env_name)]
        return Restored(simulation, secret_env)
