"""MQTT topics of the DOTS lifecycle: what we subscribe to, parse and publish on.

Pure: topics go in as strings and come out as small value objects, so the
protocol's topic layout (PROTOCOL.md section 2) lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "IncomingKind",
    "IncomingTopic",
    "OutgoingTopics",
    "parse_incoming",
    "subscriptions",
]


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

    def ping_model(self, simulation_id: str, model_id: str) -> str:
        return f"/healthcheck/mso/model/{simulation_id}/{model_id}/PingHealthMSOToModel"
