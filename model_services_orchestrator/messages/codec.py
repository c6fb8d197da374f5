"""Decoding what arrives over MQTT into inventory events, and encoding what we publish.

The edge where protobuf ends: past this module nothing sees a ``_pb2``
class. A lifecycle message becomes the inventory's own event (one
vocabulary from the wire to the state machine); health messages, which the
inventory does not keep, become small types of their own. Anything
malformed raises ``DecodeError`` with a reason fit for a log line, so one bad
message costs a warning, never the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtobufDecodeError

from model_services_orchestrator.messages.healthcheck_pb2 import (
    HEALTHY,
    UNHEALTHY,
    PingHealthMSOToModel,
    PingHealthSOToMSO,
    PongHealthModelToMSO,
    PongHealthMSOToSO,
)
from model_services_orchestrator.messages.info_pb2 import MSOInfo
from model_services_orchestrator.messages.lifecycle_pb2 import (
    FAILED,
    NOPROGRESS,
    SUCCESSFULL,
    AllModelsHaveTerminated,
    DeployModels,
    ErrorOccurred,
    ModelHasTerminated,
    ModelsReady,
    UnhealthyModel,
)
from model_services_orchestrator.model_inventory import (
    DeployRequested,
    EndRequested,
    ModelSpec,
    ReadyReceived,
)
from model_services_orchestrator.protocol import PROTOCOL_VERSION
from model_services_orchestrator.topics import (
    IncomingKind,
    OutgoingTopics,
    level_problem,
    parse_incoming,
    topic_problem,
)

__all__ = [
    "DecodeError",
    "HealthPing",
    "Inbound",
    "ModelPong",
    "decode",
    "encode_all_models_have_terminated",
    "encode_error_occurred",
    "encode_model_has_terminated",
    "encode_models_ready",
    "encode_mso_info",
    "encode_ping_model",
    "encode_pong",
    "encode_unhealthy_model",
]

class DecodeError(ValueError):
    """A message we cannot act on; the text says why."""


@dataclass(frozen=True, slots=True)
class HealthPing:
    instance_id: str
    active_simulations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelPong:
    simulation_id: str
    model_id: str
    healthy: bool
    bids: int
    allocations: int


Inbound = DeployRequested | ReadyReceived | EndRequested | HealthPing | ModelPong


def _id_problem(topics: OutgoingTopics, simulation_id: str, model_id: str) -> str | None:
    """Why a model id cannot be answered: its ModelHasTerminated (the longest topic of a model) would be
    refused by the broker, which then disconnects the daemon and every simulation with it."""
    if not model_id:
        return "is empty"
    return level_problem(model_id) or topic_problem(topics.model_has_terminated(simulation_id, model_id))


def _parse_deploy(simulation_id: str, payload: bytes, so: str, now: float) -> DeployRequested:
    message = DeployModels()
    message.ParseFromString(payload)
    if not message.modelConfigurations:
        raise DecodeError("DeployModels names no models")
    if (problem := level_problem(simulation_id)) is not None:
        raise DecodeError(f"simulation id {simulation_id[:100]!r} cannot be part of an MQTT topic: it {problem}")
    topics = OutgoingTopics(so)
    models = []
    unusable: list[str] = []
    # Thousands of models mostly share their env vars (broker, database, passwords): keep one copy of each.
    shared: dict[tuple[str, str], tuple[str, str]] = {}
    for configuration in message.modelConfigurations:
        model_id = configuration.modelID
        if (problem := _id_problem(topics, simulation_id, model_id)) is not None:
            unusable.append(f"model id {model_id[:100]!r} {problem}")
            continue
        env = tuple(shared.setdefault(pair, pair) for pair in (
            (variable.name, variable.value) for variable in configuration.environmentVariables))
        models.append(ModelSpec(model_id=model_id, image=configuration.imageUrl, env=env))
    if unusable and not models:
        raise DecodeError(f"DeployModels names no model that can be answered: {'; '.join(unusable[:3])}")
    return DeployRequested(
        simulator_id=message.simulatorId,
        simulation_id=simulation_id,
        keep_logs_hours=message.keepLogsHours,
        models=tuple(models),
        now=now,
        refused=f"{len(unusable)} model id(s) cannot be MQTT topic levels: {'; '.join(unusable[:3])}"
        if unusable else "",
    )


def decode(topic: str, payload: bytes, *, so: str, max_payload_bytes: int, now: float) -> Inbound:
    """The event a message stands for, at ``now``; ``DecodeError`` when there is none we can act on."""
    parsed = parse_incoming(topic, so)
    if parsed is None:
        raise DecodeError("not a topic this daemon handles")
    if len(payload) > max_payload_bytes:
        raise DecodeError(f"payload of {len(payload)} bytes is over the limit of {max_payload_bytes}")
    try:
        match parsed.kind:
            case IncomingKind.DEPLOY_MODELS:
                return _parse_deploy(parsed.simulation_id, payload, so, now)
            case IncomingKind.READY_FOR_PROCESSING:
                # The payload is not relied upon (PROTOCOL.md section 2): models send it empty.
                return ReadyReceived(parsed.simulation_id, parsed.model_id, now)
            case IncomingKind.SIMULATION_DONE:
                return EndRequested(parsed.simulation_id, None, now)
            case IncomingKind.MODEL_SIMULATION_DONE:
                return EndRequested(parsed.simulation_id, parsed.model_id, now)
            case IncomingKind.PING_HEALTH_SO_TO_MSO:
                ping = PingHealthSOToMSO()
                ping.ParseFromString(payload)
                return HealthPing(parsed.instance_id, tuple(ping.activeSimulations))
            case IncomingKind.PONG_HEALTH_MODEL_TO_MSO:
                pong = PongHealthModelToMSO()
                pong.ParseFromString(payload)
                return ModelPong(
                    parsed.simulation_id,
                    parsed.model_id,
                    pong.healthy == HEALTHY,
                    pong.numberOfBids,
                    pong.numberOfAllocations,
                )
    except (ProtobufDecodeError, RuntimeWarning, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"malformed {parsed.kind.value}: {exc}") from exc


def encode_models_ready() -> bytes:
    return ModelsReady().SerializeToString()


def encode_model_has_terminated(exit_code: int) -> bytes:
    status = SUCCESSFULL if exit_code == 0 else FAILED
    return ModelHasTerminated(status=status, exitCode=exit_code).SerializeToString()


def encode_all_models_have_terminated() -> bytes:
    return AllModelsHaveTerminated().SerializeToString()


def encode_error_occurred(message: str) -> bytes:
    return ErrorOccurred(error_message=message).SerializeToString()


def encode_unhealthy_model() -> bytes:
    return UnhealthyModel(status=NOPROGRESS).SerializeToString()


def encode_pong(reasons: list[str]) -> bytes:
    return PongHealthMSOToSO(healthy=UNHEALTHY if reasons else HEALTHY, reasons=reasons,
                             protocol_version=PROTOCOL_VERSION).SerializeToString()


def encode_mso_info(daemon_version: str, capabilities: tuple[str, ...]) -> bytes:
    return MSOInfo(protocol_version=PROTOCOL_VERSION, daemon_version=daemon_version,
                   capabilities=capabilities).SerializeToString()


def encode_ping_model() -> bytes:
    return PingHealthMSOToModel(healthy=HEALTHY).SerializeToString()
