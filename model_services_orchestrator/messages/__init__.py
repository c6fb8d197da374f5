"""The wire messages of the DOTS lifecycle and health protocols.

Why this module exists: the protobuf classes are generated code
(``lifecycle_pb2``, ``healthcheck_pb2``, ``info_pb2``, made from ``message_definitions/`` by
``ci/build_protobuf_messages.sh`` and committed); this module is the one place
the rest of the package imports them from, so that the generated module names
stay an implementation detail. Only adapters at the edges should need them
(see DESIGN.md: edges decode once).
"""

from model_services_orchestrator.messages.healthcheck_pb2 import (
    HEALTHY,
    UNHEALTHY,
    HealthStatus,
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
    CalculationsDone,
    DeployModels,
    EnvironmentVariable,
    ErrorOccurred,
    ModelConfiguration,
    ModelHasTerminated,
    ModelParameters,
    ModelsReady,
    NewStep,
    Parameterized,
    ReadyForProcessing,
    SimulationDone,
    TerminationStatus,
    UnhealthyModel,
    UnhealthyModelStatus,
)

__all__ = [
    "FAILED",
    "HEALTHY",
    "NOPROGRESS",
    "SUCCESSFULL",
    "UNHEALTHY",
    "AllModelsHaveTerminated",
    "CalculationsDone",
    "DeployModels",
    "EnvironmentVariable",
    "ErrorOccurred",
    "HealthStatus",
    "MSOInfo",
    "ModelConfiguration",
    "ModelHasTerminated",
    "ModelParameters",
    "ModelsReady",
    "NewStep",
    "Parameterized",
    "PingHealthMSOToModel",
    "PingHealthSOToMSO",
    "PongHealthMSOToSO",
    "PongHealthModelToMSO",
    "ReadyForProcessing",
    "SimulationDone",
    "TerminationStatus",
    "UnhealthyModel",
    "UnhealthyModelStatus",
]
