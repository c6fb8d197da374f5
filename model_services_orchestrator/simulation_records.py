"""The record each simulation leaves in the cluster, so a restarted daemon knows what it had said.

Pure: turns a ``Simulation`` into the data of a ConfigMap (compact: ten
thousand models must fit in the 1 MiB a ConfigMap may hold, so pod names,
which follow from the ids, are not stored) (mutable state:
which models exist, are ready, were reported, and whether ModelsReady and
AllModelsHaveTerminated went out) and the models' specs into the data of a
Secret (written once; it holds env vars, which may be passwords). Reading
them back gives the same ``Simulation``.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable
from typing import Any

from model_services_orchestrator.model_inventory import Model, ModelSpec, Simulation, Termination
from model_services_orchestrator.pod_specs import (
    LABEL_MANAGED_BY,
    LABEL_SIMULATION_ID,
    LABEL_SO,
    MANAGED_BY,
    dns_label,
    label_value,
    pod_name,
)

__all__ = [
    "RECORD_KEY",
    "SPECS_KEY",
    "RecordEncoder",
    "RecordError",
    "decode_record",
    "decode_specs",
    "encode_record",
    "encode_specs",
    "record_labels",
    "record_name",
    "records_selector",
]

RECORD_KEY = "simulation.json"
SPECS_KEY = "models.json.z"
_VERSION = 1
_CREATED = 1
_READY = 2


class RecordError(ValueError):
    """A record in the cluster that this version cannot read."""


def record_name(so: str, simulation_id: str) -> str:
    """The name of the simulation's ConfigMap and Secret."""
    return dns_label("mso", so, simulation_id)


def record_labels(so: str, simulation_id: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SO: label_value(so),
        LABEL_SIMULATION_ID: label_value(simulation_id),
    }


def records_selector(so: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SO}={label_value(so)}"


def _entry(model: Model) -> str:
    flags = (_CREATED if model.created else 0) | (_READY if model.ready else 0)
    termination = None if model.termination is None else [model.termination.exit_code, model.termination.reason]
    return json.dumps([model.model_id, flags, termination], separators=(",", ":"))


def _assemble(simulation: Simulation, entries: Iterable[str]) -> dict[str, str]:
    head = {
        "version": _VERSION,
        "simulatorId": simulation.simulator_id,
        "simulationId": simulation.simulation_id,
        "keepLogsHours": simulation.keep_logs_hours,
        "modelsReadySent": simulation.models_ready_sent,
        "allTerminatedSent": simulation.all_terminated_sent,
        "finishedAt": simulation.finished_at,
    }
    text = json.dumps(head, separators=(",", ":"))
    return {RECORD_KEY: text[:-1] + ',"models":[' + ",".join(entries) + "]}"}


def encode_record(simulation: Simulation) -> dict[str, str]:
    """The ConfigMap data for a simulation's state."""
    return _assemble(simulation, (_entry(model) for model in simulation.models.values()))


class RecordEncoder:
    """``encode_record`` for repeated saves: re-encodes only the models changed since the last one.

    A storm of terminations in a simulation of ten thousand models saves its
    record many times; each save then costs the changed models, plus one join.
    """

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, str]] = {}

    def encode(self, simulation: Simulation) -> dict[str, str]:
        entries = self._entries.get(simulation.simulation_id)
        if entries is None:
            entries = {model_id: _entry(model) for model_id, model in simulation.models.items()}
            self._entries[simulation.simulation_id] = entries
        else:
            for model_id in simulation.changed:
                entries[model_id] = _entry(simulation.models[model_id])
        simulation.changed.clear()
        return _assemble(simulation, entries.values())

    def forget(self, simulation_id: str) -> None:
        self._entries.pop(simulation_id, None)


def decode_record(data: dict[str, str], specs: dict[str, ModelSpec] | None = None) -> Simulation:
    """The ``Simulation`` a ConfigMap's data describes; ``specs`` from its Secret, where it still exists."""
    try:
        body: dict[str, Any] = json.loads(data[RECORD_KEY])
        if body.get("version") != _VERSION:
            raise RecordError(f"unknown record version {body.get('version')!r}")
        simulation = Simulation(
            simulator_id=str(body["simulatorId"]),
            simulation_id=str(body["simulationId"]),
            keep_logs_hours=float(body["keepLogsHours"]),
            models_ready_sent=bool(body["modelsReadySent"]),
            all_terminated_sent=bool(body["allTerminatedSent"]),
            finished_at=None if body["finishedAt"] is None else float(body["finishedAt"]),
        )
        for model_id, flags, termination in body["models"]:
            simulation.models[str(model_id)] = Model(
                model_id=str(model_id),
                pod_name=pod_name(simulation.simulator_id, simulation.simulation_id, str(model_id)),
                spec=(specs or {}).get(str(model_id)),
                created=bool(flags & _CREATED),
                ready=bool(flags & _READY),
                termination=None if termination is None else Termination(int(termination[0]), str(termination[1])),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"unreadable simulation record: {exc}") from exc
    return simulation


def encode_specs(specs: list[ModelSpec]) -> dict[str, str]:
    """The Secret data (base64, as the API wants it) holding the models' images and env vars."""
    plain = json.dumps([[s.model_id, s.image, [list(pair) for pair in s.env]] for s in specs]).encode()
    return {SPECS_KEY: base64.b64encode(zlib.compress(plain, 6)).decode("ascii")}


def decode_specs(data: dict[str, str]) -> dict[str, ModelSpec]:
    try:
        plain = zlib.decompress(base64.b64decode(data[SPECS_KEY]))
        return {
            str(model_id): ModelSpec(str(model_id), str(image), tuple((str(k), str(v)) for k, v in env))
            for model_id, image, env in json.loads(plain)
        }
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise RecordError(f"unreadable model specs: {exc}") from exc
