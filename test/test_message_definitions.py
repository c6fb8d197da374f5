"""Checks that the wire messages are what PROTOCOL.md section 1 says, byte for byte.

Why this exists: the SO and the models of DOTS are separate programs that
already speak this protocol; a renumbered field or a changed type would make
the orchestrator silently misread them. So the field numbers are checked
through the descriptors against a table copied from PROTOCOL.md, the encoding
against hand-written bytes, and the committed generated code against a fresh
run of the same protoc (so a .proto edit without regeneration fails here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from model_services_orchestrator.messages import (
    FAILED,
    HEALTHY,
    SUCCESSFULL,
    UNHEALTHY,
    AllModelsHaveTerminated,
    DeployModels,
    EnvironmentVariable,
    ErrorOccurred,
    ModelConfiguration,
    ModelHasTerminated,
    ModelsReady,
    MSOInfo,
    PingHealthMSOToModel,
    PingHealthSOToMSO,
    PongHealthModelToMSO,
    PongHealthMSOToSO,
    ReadyForProcessing,
    UnhealthyModel,
    healthcheck_pb2,
    info_pb2,
    lifecycle_pb2,
)
from model_services_orchestrator.messages.codec import encode_mso_info, encode_pong
from model_services_orchestrator.protocol import CAPABILITIES, MODEL_REGISTRY, PROTOCOL_VERSION, capabilities

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "ci" / "build_protobuf_messages.sh"
GENERATED_DIR = REPO_ROOT / "model_services_orchestrator" / "messages"
PROTO_FILES = ("lifecycle.proto", "healthcheck.proto", "info.proto")

S = FieldDescriptor.TYPE_STRING
D = FieldDescriptor.TYPE_DOUBLE
I32 = FieldDescriptor.TYPE_INT32
MSG = FieldDescriptor.TYPE_MESSAGE
ENUM = FieldDescriptor.TYPE_ENUM

# name -> (number, type, repeated, message/enum type name or "") per message, from PROTOCOL.md section 1.
FieldSpec = tuple[int, int, bool, str]
LIFECYCLE_MESSAGES: dict[str, dict[str, FieldSpec]] = {
    "EnvironmentVariable": {"name": (1, S, False, ""), "value": (2, S, False, "")},
    "ModelConfiguration": {
        "modelID": (1, S, False, ""),
        "imageUrl": (2, S, False, ""),
        "environmentVariables": (3, MSG, True, "EnvironmentVariable"),
    },
    "DeployModels": {
        "simulatorId": (1, S, False, ""),
        "modelConfigurations": (2, MSG, True, "ModelConfiguration"),
        "keepLogsHours": (3, D, False, ""),
    },
    "ReadyForProcessing": {},
    "ModelsReady": {},
    "Parameterized": {},
    "CalculationsDone": {},
    "SimulationDone": {},
    "AllModelsHaveTerminated": {},
    "ModelParameters": {"parameters_dict": (1, S, False, "")},
    "NewStep": {"parameters_dict": (1, S, False, "")},
    "ErrorOccurred": {"error_message": (1, S, False, "")},
    "UnhealthyModel": {"status": (1, ENUM, False, "UnhealthyModelStatus")},
    "ModelHasTerminated": {
        "status": (1, ENUM, False, "TerminationStatus"),
        "exitCode": (2, I32, False, ""),
    },
}
LIFECYCLE_ENUMS: dict[str, dict[str, int]] = {
    "UnhealthyModelStatus": {"NOPROGRESS": 0},
    "TerminationStatus": {"SUCCESSFULL": 0, "FAILED": 1},
}
_HEALTH_BASE: dict[str, FieldSpec] = {
    "healthy": (1, ENUM, False, "HealthStatus"),
    "reasons": (2, S, True, ""),
}
HEALTHCHECK_MESSAGES: dict[str, dict[str, FieldSpec]] = {
    "PingHealthSOToMSO": {**_HEALTH_BASE, "activeSimulations": (3, S, True, "")},
    "PongHealthMSOToSO": {**_HEALTH_BASE, "protocol_version": (3, S, False, "")},  # 3: protocol 1.1
    "PingHealthMSOToModel": dict(_HEALTH_BASE),
    "PongHealthModelToMSO": {
        **_HEALTH_BASE,
        "numberOfBids": (3, I32, False, ""),
        "numberOfAllocations": (4, I32, False, ""),
    },
}
HEALTHCHECK_ENUMS: dict[str, dict[str, int]] = {"HealthStatus": {"HEALTHY": 0, "UNHEALTHY": 1}}
# PROTOCOL.md section 7.
INFO_MESSAGES: dict[str, dict[str, FieldSpec]] = {
    "MSOInfo": {
        "protocol_version": (1, S, False, ""),
        "daemon_version": (2, S, False, ""),
        "capabilities": (3, S, True, ""),
    },
}


def _field_spec(field: FieldDescriptor) -> FieldSpec:
    type_name = ""
    if field.message_type is not None:
        type_name = field.message_type.full_name
    elif field.enum_type is not None:
        type_name = field.enum_type.full_name
    return (field.number, field.type, field.is_repeated, type_name)


def _check_file(
    file: FileDescriptor,
    messages: dict[str, dict[str, FieldSpec]],
    enums: dict[str, dict[str, int]],
) -> None:
    assert file.package == "", "the DOTS protos have no package line"
    assert set(file.message_types_by_name) == set(messages)
    assert set(file.enum_types_by_name) == set(enums)
    for name, expected_fields in messages.items():
        message: Descriptor = file.message_types_by_name[name]
        assert message.full_name == name
        actual = {field.name: _field_spec(field) for field in message.fields}
        assert actual == expected_fields, name
        assert not message.oneofs, f"{name} must not have oneofs (or proto3 optional fields)"
    for name, expected_values in enums.items():
        enum: EnumDescriptor = file.enum_types_by_name[name]
        assert {value.name: value.number for value in enum.values} == expected_values


def test_lifecycle_field_numbers_match_protocol() -> None:
    _check_file(lifecycle_pb2.DESCRIPTOR, LIFECYCLE_MESSAGES, LIFECYCLE_ENUMS)


def test_healthcheck_field_numbers_match_protocol() -> None:
    _check_file(healthcheck_pb2.DESCRIPTOR, HEALTHCHECK_MESSAGES, HEALTHCHECK_ENUMS)


def test_info_field_numbers_match_protocol() -> None:
    _check_file(info_pb2.DESCRIPTOR, INFO_MESSAGES, {})


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    """Regenerate with the build script and this interpreter's protoc (grpc_tools), and compare."""
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(BUILD_SCRIPT)],
        env={**os.environ, "OUT_DIR": str(tmp_path), "PYTHON": sys.executable},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for proto in PROTO_FILES:
        stem = proto.removesuffix(".proto")
        for generated in (f"{stem}_pb2.py", f"{stem}_pb2.pyi"):
            fresh = (tmp_path / generated).read_bytes()
            committed = (GENERATED_DIR / generated).read_bytes()
            assert committed == fresh, (
                f"{generated} is stale: run ci/build_protobuf_messages.sh and commit the result"
            )


def test_generated_modules_do_not_import_each_other() -> None:
    """Generated code importing a sibling by absolute name would break inside the package."""
    for generated in ("lifecycle_pb2.py", "healthcheck_pb2.py", "info_pb2.py"):
        text = (GENERATED_DIR / generated).read_text()
        assert "_pb2 import" not in text
        for sibling in PROTO_FILES:
            assert f"import {sibling.removesuffix('.proto')}_pb2" not in text


# --- encodings, written out by hand -------------------------------------------------------------


def test_deploy_models_bytes() -> None:
    message = DeployModels(
        simulatorId="s",
        modelConfigurations=[
            ModelConfiguration(
                modelID="m",
                imageUrl="i",
                environmentVariables=[EnvironmentVariable(name="A", value="b")],
            )
        ],
        keepLogsHours=0.5,
    )
    env_var = b"\x0a\x01A" + b"\x12\x01b"  # name=1, value=2 (length-delimited)
    model = b"\x0a\x01m" + b"\x12\x01i" + b"\x1a\x06" + env_var  # modelID=1, imageUrl=2, env=3
    expected = (
        b"\x0a\x01s"  # simulatorId = 1
        + b"\x12\x0e"
        + model  # modelConfigurations = 2, 14 bytes
        + b"\x19\x00\x00\x00\x00\x00\x00\xe0\x3f"  # keepLogsHours = 3, fixed64 double 0.5
    )
    assert message.SerializeToString(deterministic=True) == expected

    decoded = DeployModels.FromString(expected)
    assert decoded.simulatorId == "s"
    assert decoded.keepLogsHours == 0.5
    [config] = decoded.modelConfigurations
    assert (config.modelID, config.imageUrl) == ("m", "i")
    [variable] = config.environmentVariables
    assert (variable.name, variable.value) == ("A", "b")


def test_deploy_models_keeps_env_var_order() -> None:
    names = ["MQTT_HOST", "MQTT_PORT", "MODEL_ID", "MQTT_HOST"]
    config = ModelConfiguration(
        modelID="x",
        environmentVariables=[EnvironmentVariable(name=n, value=str(i)) for i, n in enumerate(names)],
    )
    decoded = ModelConfiguration.FromString(config.SerializeToString())
    assert [(v.name, v.value) for v in decoded.environmentVariables] == [
        (n, str(i)) for i, n in enumerate(names)
    ]


def test_model_has_terminated_failed() -> None:
    assert ModelHasTerminated(status=FAILED, exitCode=2).SerializeToString() == b"\x08\x01\x10\x02"
    decoded = ModelHasTerminated.FromString(b"\x08\x01\x10\x02")
    assert (decoded.status, decoded.exitCode) == (FAILED, 2)


def test_model_has_terminated_success_is_empty() -> None:
    assert ModelHasTerminated(status=SUCCESSFULL, exitCode=0).SerializeToString() == b""
    decoded = ModelHasTerminated.FromString(b"")
    assert (decoded.status, decoded.exitCode) == (SUCCESSFULL, 0)


def test_negative_exit_code_is_a_ten_byte_varint() -> None:
    """int32 negatives are sign-extended to 64 bits on the wire (not zigzag)."""
    expected = b"\x08\x01\x10" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"
    assert ModelHasTerminated(status=FAILED, exitCode=-2).SerializeToString() == expected
    assert ModelHasTerminated.FromString(expected).exitCode == -2
    assert len(expected) - 3 == 10


@pytest.mark.parametrize("exit_code", [-4, -3, -1, 1, 137, 143, 255, 2**31 - 1, -(2**31)])
def test_exit_codes_round_trip(exit_code: int) -> None:
    payload = ModelHasTerminated(status=FAILED, exitCode=exit_code).SerializeToString()
    assert ModelHasTerminated.FromString(payload).exitCode == exit_code


def test_pong_health_model_to_mso_bytes() -> None:
    message = PongHealthModelToMSO(healthy=UNHEALTHY, reasons=["x"], numberOfBids=5, numberOfAllocations=300)
    expected = b"\x08\x01" + b"\x12\x01x" + b"\x18\x05" + b"\x20\xac\x02"
    assert message.SerializeToString() == expected
    decoded = PongHealthModelToMSO.FromString(b"\x18\x07\x20\x09")
    assert (decoded.healthy, decoded.numberOfBids, decoded.numberOfAllocations) == (HEALTHY, 7, 9)


def test_ping_health_so_to_mso_bytes() -> None:
    message = PingHealthSOToMSO(healthy=HEALTHY, activeSimulations=["a", "b"])
    assert message.SerializeToString() == b"\x1a\x01a\x1a\x01b"


def test_empty_messages_are_empty_and_ignore_payload() -> None:
    assert ReadyForProcessing().SerializeToString() == b""
    assert ModelsReady().SerializeToString() == b""
    assert AllModelsHaveTerminated().SerializeToString() == b""
    # Unknown fields (a model sending something in ReadyForProcessing) must still parse.
    ReadyForProcessing.FromString(b"\x0a\x03abc")


def test_error_occurred_and_unhealthy_model_bytes() -> None:
    assert ErrorOccurred(error_message="no").SerializeToString() == b"\x0a\x02no"
    # UnhealthyModel(NOPROGRESS) is the enum default, so it is empty on the wire.
    assert UnhealthyModel().SerializeToString() == b""
    assert UnhealthyModel.FromString(b"\x08\x00").status == 0


def test_mso_info_bytes() -> None:
    message = MSOInfo(protocol_version="1.1.0", daemon_version="0.1.0", capabilities=["a", "bc"])
    expected = b"\x0a\x051.1.0" + b"\x12\x050.1.0" + b"\x1a\x01a" + b"\x1a\x02bc"
    assert message.SerializeToString() == expected


def test_the_daemons_mso_info_names_its_versions_and_capabilities() -> None:
    decoded = MSOInfo.FromString(encode_mso_info("9.8.7", capabilities(model_registry=True)))
    assert (decoded.protocol_version, decoded.daemon_version) == (PROTOCOL_VERSION, "9.8.7")
    assert list(decoded.capabilities) == [*CAPABILITIES, MODEL_REGISTRY]
    assert CAPABILITIES == ("health-check", "early-end") == capabilities(model_registry=False)
    assert MODEL_REGISTRY == "model-registry"
    assert capabilities(model_registry=False, admission=True) == (*CAPABILITIES, "admission")
    major, minor, patch = (int(part) for part in PROTOCOL_VERSION.split("."))
    assert (major, minor) >= (1, 1) and major == 1 and patch >= 0, "1.x: the wire of today, with additions"


def test_the_pong_carries_the_protocol_version_in_a_field_old_sos_skip() -> None:
    payload = encode_pong(["down"])
    expected = b"\x08\x01" + b"\x12\x04down" + b"\x1a\x05" + PROTOCOL_VERSION.encode()
    assert payload == expected
    # An SO built from the old healthcheck.proto reads the same pong as before: PingHealthMSOToModel has the very
    # fields of the old PongHealthMSOToSO (1 and 2 only), and skips field 3.
    as_old = PingHealthMSOToModel.FromString(payload)
    assert (as_old.healthy, list(as_old.reasons)) == (UNHEALTHY, ["down"])
    old_pong = PongHealthMSOToSO.FromString(b"\x08\x01\x12\x04down")  # what an older MSO sends
    assert (old_pong.healthy, list(old_pong.reasons), old_pong.protocol_version) == (UNHEALTHY, ["down"], "")
