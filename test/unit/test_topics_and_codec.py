"""Topics and payloads at the MQTT edge: exact wire topics, and nothing malformed gets past the decoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_services_orchestrator.messages import (
    DeployModels,
    EnvironmentVariable,
    ModelConfiguration,
    ModelHasTerminated,
    PingHealthSOToMSO,
    codec,
)
from model_services_orchestrator.model_inventory import DeployRequested, EndRequested, ReadyReceived
from model_services_orchestrator.topics import IncomingKind, OutgoingTopics, parse_incoming, subscriptions

SO = "dots-so"
NOW = 1_000.0


def decode(topic: str, payload: bytes) -> codec.Inbound:
    return codec.decode(topic, payload, so=SO, max_payload_bytes=1024 * 1024, now=NOW)


def deploy_payload(*model_ids: str, keep: float = 1.5) -> bytes:
    return DeployModels(simulatorId="so01", keepLogsHours=keep, modelConfigurations=[
        ModelConfiguration(modelID=m, imageUrl="img", environmentVariables=[EnvironmentVariable(name="A", value="1")])
        for m in model_ids]).SerializeToString()


def test_outgoing_topics_are_the_wire_topics() -> None:
    topics = OutgoingTopics(SO)
    assert topics.models_ready("s") == "/lifecycle/mso/dots-so/s/ModelsReady"
    assert topics.model_has_terminated("s", "m") == "/lifecycle/mso/dots-so/s/m/ModelHasTerminated"
    assert topics.all_models_have_terminated("s") == "/lifecycle/mso/dots-so/s/AllModelsHaveTerminated"
    assert topics.error_occurred("s", "m") == "/lifecycle/model/dots-so/s/m/ErrorOccurred"
    assert topics.pong_health("i") == "/healthcheck/mso/dots-so/i/PongHealthMSOToSO"


def test_subscriptions_never_take_everything() -> None:
    assert all("#" not in topic for topic in subscriptions(SO))
    assert "/lifecycle/dots-so/mso/+/DeployModels" in subscriptions(SO)
    assert "/lifecycle/model/mso/+/+/ReadyForProcessing" in subscriptions(SO)


@pytest.mark.parametrize(("topic", "kind"), [
    ("/lifecycle/dots-so/mso/s/DeployModels", IncomingKind.DEPLOY_MODELS),
    ("/lifecycle/model/mso/s/m/ReadyForProcessing", IncomingKind.READY_FOR_PROCESSING),
    ("/lifecycle/dots-so/mso/s/SimulationDone", IncomingKind.SIMULATION_DONE),
    ("/lifecycle/dots-so/model/s/m/SimulationDone", IncomingKind.MODEL_SIMULATION_DONE),
    ("/healthcheck/dots-so/mso/i/PingHealthSOToMSO", IncomingKind.PING_HEALTH_SO_TO_MSO),
])
def test_incoming_topics_parse(topic: str, kind: IncomingKind) -> None:
    parsed = parse_incoming(topic, SO)
    assert parsed is not None and parsed.kind is kind


@pytest.mark.parametrize("topic", [
    "/lifecycle/other-so/mso/s/DeployModels",
    "/lifecycle/dots-so/mso//DeployModels",
    "lifecycle/dots-so/mso/s/DeployModels",
    "/lifecycle/model/mso/s/ReadyForProcessing",
    "/lifecycle/dots-so/mso/s/Unknown",
    "/",
    "",
])
def test_other_topics_do_not_parse(topic: str) -> None:
    assert parse_incoming(topic, SO) is None


def test_deploy_models_decodes_into_specs_in_order() -> None:
    request = decode("/lifecycle/dots-so/mso/sim-9/DeployModels", deploy_payload("m1", "m2"))
    assert isinstance(request, DeployRequested) and request.now == NOW
    assert request.simulation_id == "sim-9" and request.simulator_id == "so01" and request.keep_logs_hours == 1.5
    assert [(m.model_id, m.image, m.env) for m in request.models] == [("m1", "img", (("A", "1"),)),
                                                                        ("m2", "img", (("A", "1"),))]


def test_ready_for_processing_ignores_its_payload() -> None:
    assert decode("/lifecycle/model/mso/s/m/ReadyForProcessing", b"\xff\x00junk") == ReadyReceived("s", "m", NOW)


def test_simulation_done_for_the_simulation_and_for_one_model() -> None:
    assert decode("/lifecycle/dots-so/mso/s/SimulationDone", b"") == EndRequested("s", None, NOW)
    assert decode("/lifecycle/dots-so/model/s/m/SimulationDone", b"") == EndRequested("s", "m", NOW)


def test_health_ping_carries_active_simulations() -> None:
    payload = PingHealthSOToMSO(activeSimulations=["a", "b"]).SerializeToString()
    assert decode("/healthcheck/dots-so/mso/x/PingHealthSOToMSO", payload) == codec.HealthPing("x", ("a", "b"))


@pytest.mark.parametrize(("topic", "payload", "why"), [
    ("/lifecycle/dots-so/mso/s/DeployModels", b"\xff\xff\xff", "malformed"),
    ("/lifecycle/dots-so/mso/s/DeployModels", DeployModels(simulatorId="x").SerializeToString(), "no models"),
    ("/lifecycle/dots-so/mso/s/DeployModels", deploy_payload(""), "no model that can be answered.*is empty"),
    ("/lifecycle/dots-so/mso/s/DeployModels", deploy_payload("a/b"), "no model that can be answered.*holds '/'"),
    ("/lifecycle/dots-so/mso/s\x85/DeployModels", deploy_payload("a"), "simulation id .* U\\+0085"),
    ("/lifecycle/dots-so/mso/s/DeployModels", b"x" * (1024 * 1024 + 1), "over the limit"),
    ("/lifecycle/dots-so/mso/s/Nope", b"", "not a topic"),
])
def test_bad_messages_raise_a_decode_error_that_says_why(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(codec.DecodeError, match=why):
        decode(topic, payload)


@pytest.mark.parametrize(("bad", "why"), [
    ("b\x00", "U+0000"), ("b\x1b[31m", "U+001B"), ("b\x7f", "U+007F"), ("b\x9f", "U+009F"),
    ("b\ufdd0", "U+FDD0"), ("b\uffff", "U+FFFF"), ("b\U0010fffe", "U+10FFFE"), ("b+", "wildcard"),
    ("b#", "wildcard"), ("b" * 70_000, "longer than 65535 bytes"),
])
def test_a_deploy_with_an_id_no_topic_may_carry_is_refused_and_its_other_models_listed(bad: str, why: str) -> None:
    decoded = decode("/lifecycle/dots-so/mso/s/DeployModels", deploy_payload("a", bad, "c"))
    assert isinstance(decoded, DeployRequested)
    assert [spec.model_id for spec in decoded.models] == ["a", "c"]
    assert why in decoded.refused


def test_ids_any_topic_may_carry_are_accepted() -> None:
    decoded = decode("/lifecycle/dots-so/mso/s/DeployModels", deploy_payload("é 日本 ~!", "a b", "A_b-c.d"))
    assert isinstance(decoded, DeployRequested) and decoded.refused == "" and len(decoded.models) == 3


@given(st.binary(max_size=2048), st.sampled_from([
    "/lifecycle/dots-so/mso/s/DeployModels", "/lifecycle/model/mso/s/m/ReadyForProcessing",
    "/healthcheck/dots-so/mso/i/PingHealthSOToMSO", "/healthcheck/model/mso/s/m/PongHealthModelToMSO",
    "/lifecycle/dots-so/mso/s/SimulationDone"]) | st.text(max_size=80))
def test_arbitrary_bytes_either_decode_or_raise_decode_error(payload: bytes, topic: str) -> None:
    with contextlib.suppress(codec.DecodeError):
        decode(topic, payload)


def test_model_has_terminated_encoding() -> None:
    assert codec.encode_model_has_terminated(0) == b""
    failed = ModelHasTerminated()
    failed.ParseFromString(codec.encode_model_has_terminated(-2))
    assert failed.status == 1 and failed.exitCode == -2
