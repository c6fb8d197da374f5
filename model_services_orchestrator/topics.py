"""MQTT topics of the DOTS lifecycle: what we subscribe to, parse and publish on.

Pure: topics go in as strings and come out as small value objects, so the
protocol's topic layout (PROTOCOL.md section 2) lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "MAX_TOPIC_BYTES",
    "IncomingKind",
    "IncomingTopic",
    "OutgoingTopics",
    "level_problem",
    "parse_incoming",
    "subscriptions",
    "topic_problem",
]

MAX_TOPIC_BYTES = 65535  # a UTF-8 string of MQTT (3.1.1 section 1.5.3) has a two-byte length
# What a broker may refuse in a topic (MQTT 3.1.1 section 1.5.3, which Mosquitto enforces by
# disconnecting the client): U+0000, the C0 and C1 controls and DEL, surrogates, and the noncharacters
# (U+FDD0..U+FDEF and the last two code points of every plane).
_REFUSED_RANGES = [(0x00, 0x1F), (0x7F, 0x9F), (0xD800, 0xDFFF), (0xFDD0, 0xFDEF),
                   *((plane * 0x10000 + 0xFFFE, plane * 0x10000 + 0xFFFF) for plane in range(17))]
_REFUSED_CHARACTERS = re.compile(
    "[" + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _REFUSED_RANGES) + "]")
_WILDCARDS = ("+", "#")


def topic_problem(topic: str) -> str | None:
    """Why a broker would refuse ``topic`` as the name of a published message; ``None`` if it would not."""
    if not topic:
        return "empty"
    if any(wildcard in topic for wildcard in _WILDCARDS):
        return "holds a wildcard (+ or #)"
    if (found := _REFUSED_CHARACTERS.search(topic)) is not None:
        return f"holds U+{ord(found.group()):04X}, which MQTT forbids in a topic"
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"is longer than {MAX_TOPIC_BYTES} bytes"
    return None


def level_problem(value: str) -> str | None:
    """Why ``value`` (a simulation or model id) cannot be one level of a topic; ``None`` if it can."""
    if "/" in value:
        return "holds '/'"
    return topic_problem(value)


class IncomingKind(Enum):
    """The messages the daemon acts on."""

    DEPLOY_MODELS = "DeployModels"
    READY_FOR_PROCESSING = "ReadyForProcessing"
    SIMULATION_DONE = "SimulationDone"
    MODEL_SIMULATION_DONE = "ModelSimulationDone"
    PING_HEALTH_SO_TO_MSO = "PingHealthSOToMSO"
    PONG_HEALTH_MODEL_TO_MSO = "PongHealthModelToMSO"


@dataclass(frozen=True, slots=True)
class IncomingTopic:
    """A parsed incoming topic: what kind of message, and for which simulation or model."""

    kind: IncomingKind
    simulation_id: str = ""
    model_id: str = ""
    instance_id: str = ""


def subscriptions(so: str) -> list[str]:
    """The topic filters the daemon subscribes to: exactly what it handles, never ``#``."""
    return [
        f"/lifecycle/{so}/mso/+/DeployModels",
        f"/lifecycle/{so}/mso/+/SimulationDone",
        "/lifecycle/model/mso/+/+/ReadyForProcessing",
        f"/lifecycle/{so}/model/+/+/SimulationDone",
        f"/healthcheck/{so}/mso/+/PingHealthSOToMSO",
        "/healthcheck/model/mso/+/+/PongHealthModelToMSO",
    ]


def parse_incoming(topic: str, so: str) -> IncomingTopic | None:
    """Parse a topic we subscribed to; ``None`` when it is not one we act on or has empty parts."""
    if not topic.startswith("/"):
        return None
    parts = topic[1:].split("/")
    if any(part == "" for part in parts):
        return None
    match parts:
        case ["lifecycle", s, "mso", sim, "DeployModels"] if s == so:
            return IncomingTopic(IncomingKind.DEPLOY_MODELS, simulation_id=sim)
        case ["lifecycle", s, "mso", sim, "SimulationDone"] if s == so:
            return IncomingTopic(IncomingKind.SIMULATION_DONE, simulation_id=sim)
        case ["lifecycle", "model", "mso", sim, model, "ReadyForProcessing"]:
            return IncomingTopic(IncomingKind.READY_FOR_PROCESSING, simulation_id=sim, model_id=model)
        case ["lifecycle", s, "model", sim, model, "SimulationDone"] if s == so:
            return IncomingTopic(IncomingKind.MODEL_SIMULATION_DONE, simulation_id=sim, model_id=model)
        case ["healthcheck", s, "mso", instance, "PingHealthSOToMSO"] if s == so:
            return IncomingTopic(IncomingKind.PING_HEALTH_SO_TO_MSO, instance_id=instance)
        case ["healthcheck", "model", "mso", sim, model, "PongHealthModelToMSO"]:
            return IncomingTopic(IncomingKind.PONG_HEALTH_MODEL_TO_MSO, simulation_id=sim, model_id=model)
    return None


@dataclass(frozen=True, slots=True)
class OutgoingTopics:
    """Builds the topics the daemon publishes on, for one SO name."""

    so: str

    def models_ready(self, simulation_id: str) -> str:
        return f"/lifecycle/mso/{self.so}/{simulation_id}/ModelsReady"

    def model_has_terminated(self, simulation_id: str, model_id: str) -> str:
        return f"/lifecycle/mso/{self.so}/{simulation_id}/{model_id}/ModelHasTerminated"

    def all_models_have_terminated(self, simulation_id: str) -> str:
        return f"/lifecycle/mso/{self.so}/{simulation_id}/AllModelsHaveTerminated"

    def unhealthy_model(self, simulation_id: str, model_id: str) -> str:
        return f"/lifecycle/mso/{self.so}/{simulation_id}/{model_id}/UnhealthyModel"

    def error_occurred(self, simulation_id: str, model_id: str) -> str:
        return f"/lifecycle/model/{self.so}/{simulation_id}/{model_id}/ErrorOccurred"

    def pong_health(self, instance_id: str) -> str:
        return f"/healthcheck/mso/{self.so}/{instance_id}/PongHealthMSOToSO"

    def mso_info(self) -> str:
        """Where the daemon's retained MSOInfo lives while it is connected (section 7)."""
        return f"/lifecycle/mso/{self.so}/MSOInfo"

    def ping_model(self, simulation_id: str, model_id: str) -> str:
        return f"/healthcheck/mso/model/{simulation_id}/{model_id}/PingHealthMSOToModel"
