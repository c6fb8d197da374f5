"""The cluster record round-trips, secrets never reach a log line, and settings fail clearly."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import ValidationError

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.logs import SecretRedactor, configure_logging, get_logger
from model_services_orchestrator.pod_specs import pod_name, restarted_pod_name
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.simulation_records import (
    PART_KEY,
    SPECS_KEY,
    RecordEncoder,
    RecordError,
    decode_record,
    decode_specs,
    encode_record,
    encode_specs,
    part_name,
    record_name,
)


def test_a_record_reads_back_as_the_same_simulation() -> None:
    simulation = inv.Simulation(simulator_id="so", simulation_id="Sim_1", keep_logs_hours=0.25,
                                models_ready=inv.Delivery.DELIVERED, all_terminated=inv.Delivery.DECIDED,
                                finished_at=12.5)
    simulation.models["a"] = inv.Model("a", pod_name("so", "Sim_1", "a"), spec=None, phase=inv.Phase.ENDED,
                                       has_pod=True, ready=True, termination=inv.Termination(2, "Error"),
                                       reported=True)
    simulation.models["b"] = inv.Model("b", pod_name("so", "Sim_1", "b"), spec=None)
    simulation.models["c"] = inv.Model("c", pod_name("so", "Sim_1", "c"), spec=None, phase=inv.Phase.STOPPING,
                                       has_pod=True, termination=inv.Termination(-4, "ended early"))
    specs = {"a": inv.ModelSpec("a", "img", (("PASSWORD", "x"),)), "b": inv.ModelSpec("b", "img2")}
    written = encode_record(simulation)
    back = decode_record(written.head, written.parts.get, decode_specs(encode_specs(list(specs.values()))))
    assert back.models_ready is inv.Delivery.DELIVERED and back.all_terminated is inv.Delivery.DECIDED
    assert back.keep_logs_hours == 0.25 and back.finished_at == 12.5
    assert back.models["a"].termination == inv.Termination(2, "Error") and back.models["a"].reported
    assert back.models["a"].has_pod and back.models["a"].ready and not back.models["b"].has_pod
    assert [back.models[m].phase for m in "abc"] == [inv.Phase.ENDED, inv.Phase.PENDING, inv.Phase.STOPPING]
    assert not back.models["c"].reported
    assert back.models["a"].spec == specs["a"] and back.models["b"].spec == specs["b"]
    assert back.models["b"].pod_name == simulation.models["b"].pod_name
    assert back.ready_count == 0 and back.terminated_count == 0, "restore() recounts, not decoding"


def test_the_sos_end_a_restart_and_a_stop_deadline_read_back() -> None:
    simulation = inv.Simulation(simulator_id="so", simulation_id="s", keep_logs_hours=0, ended_by_so=True,
                                group_size=7)
    simulation.models["a"] = inv.Model("a", restarted_pod_name("so", "s", "a", "dots-so"), spec=None,
                                       phase=inv.Phase.CREATED, has_pod=True, restarted=True,
                                       stop_at=1234.5, stop_reason=inv.StopReason.FINISH_TIMEOUT)
    written = encode_record(simulation)
    back = decode_record(written.head, written.parts.get, so="dots-so")
    assert back.ended_by_so
    assert back.group_size == 7, "the Kueue pod group's size, for pods created after a restart"
    model = back.models["a"]
    assert model.restarted and model.pod_name == simulation.models["a"].pod_name
    assert (model.stop_at, model.stop_reason) == (1234.5, inv.StopReason.FINISH_TIMEOUT)


def _large_simulation(models: int) -> tuple[inv.Simulation, list[inv.ModelSpec]]:
    """A district: long ids, long failure reasons, the env vars the DOTS SO gives."""
    simulation = inv.Simulation(simulator_id="so01", simulation_id="district-simulation-2026", keep_logs_hours=1)
    specs = []
    for i in range(models):
        model_id = f"EConnection-{i:08d}-3fa85f64-5717-4562-b3fc-2c963f66afa6"
        simulation.models[model_id] = inv.Model(model_id, "", spec=None, phase=inv.Phase.ENDED, has_pod=True,
                                                ready=True, reported=True,
                                                termination=inv.Termination(-1, "422 Unprocessable Entity: é" * 20))
        specs.append(inv.ModelSpec(model_id, "dots/house-model:1.4.2", tuple(
            (f"ENV_{k}", f"value-{k}-{i}-{'x' * 20}") for k in range(13))))
    return simulation, specs


def test_fifty_thousand_models_fit_in_objects_of_at_most_one_mib_and_read_back() -> None:
    simulation, specs = _large_simulation(50_000)
    written = encode_record(simulation)
    spec_parts = encode_specs(specs)
    assert len(written.parts) > 1 and len(spec_parts) > 1
    for data in [written.head, *written.parts.values(), *spec_parts]:
        assert sum(len(key) + len(value.encode()) for key, value in data.items()) < 1024 * 1024 - 8 * 1024
    back = decode_record(written.head, written.parts.get, decode_specs(spec_parts))
    assert list(back.models) == list(simulation.models)
    assert all(model.spec is not None and model.termination is not None for model in back.models.values())
    assert back.models[specs[-1].model_id].spec == specs[-1]


def test_a_save_writes_only_the_parts_whose_models_changed() -> None:
    simulation, _ = _large_simulation(3_000)
    for model in simulation.models.values():
        model.termination = None
    encoder = RecordEncoder(part_bytes=64 * 1024)
    first = encoder.encode(simulation)
    assert len(first.parts) >= 3, "the first save writes every part"
    last_id = list(simulation.models)[-1]
    simulation.models[last_id].termination = inv.Termination(0, "Completed")
    simulation.models[last_id].reported = False
    second = encoder.encode(simulation, {last_id})
    assert list(second.parts) == [len(first.parts) - 1]
    assert json.loads(second.parts[len(first.parts) - 1][PART_KEY])[-1] == [last_id, 3, [0, "Completed", 0]]
    merged = {**first.parts, **second.parts}
    assert decode_record(second.head, merged.get).models[last_id].termination == inv.Termination(0, "Completed")
    assert not encoder.encode(simulation).parts, "nothing changed, no part to write"


def test_an_unreadable_record_is_an_error_not_a_crash() -> None:
    with pytest.raises(RecordError):
        decode_record({"simulation.json": "{not json"}, lambda _index: None)
    with pytest.raises(RecordError):
        decode_record({"simulation.json": json.dumps({"version": 99})}, lambda _index: None)
    simulation, _ = _large_simulation(10)
    written = encode_record(simulation, part_bytes=4096)
    with pytest.raises(RecordError, match="missing"):
        decode_record(written.head, {**written.parts, 1: None}.get)
    with pytest.raises(RecordError):
        decode_specs([{SPECS_KEY: "not base64 zlib"}])


def test_record_names_are_valid_and_distinct() -> None:
    assert record_name("dots-so", "sim02-abc").startswith("mso-dots-so-sim02-abc-r")
    assert record_name("dots-so", "A_B") != record_name("dots-so", "a-b")
    assert record_name("dots-so", "A-b") != record_name("dots-so", "a-b")
    assert record_name("a", "b-c") != record_name("a-b", "c")
    long_id = "S" * 300
    assert len(part_name(record_name("dots-so", long_id), 9999)) <= 63


def test_no_head_is_named_like_a_part_of_another_record() -> None:
    assert part_name(record_name("dots-so", "r"), 0) != record_name("dots-so", "r-p0")
    assert "." in part_name(record_name("dots-so", "r"), 0) and "." not in record_name("dots-so", "r-p0")


def test_secrets_are_redacted_in_our_lines_and_library_lines() -> None:
    stream = io.StringIO()
    redactor = SecretRedactor()
    redactor.add(["hunter22", "s3cr3t-token"])
    configure_logging(level="DEBUG", log_format="json", redactor=redactor, stream=stream)
    get_logger("test").info("connecting", password="hunter22", nested={"env": ["x", "s3cr3t-token"]})
    logging.getLogger("kubernetes.client.rest").warning("header Authorization: Bearer s3cr3t-token")
    text = stream.getvalue()
    assert "hunter22" not in text and "s3cr3t-token" not in text
    assert text.count("***") == 3
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "connecting"


def test_kubelet_service_link_port_does_not_break_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_PORT", "tcp://10.0.0.1:443")
    assert Settings(_env_file=None).kubernetes_port == 443  # type: ignore[call-arg]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBERNETES_PORT", "SIMULATOR_NAME", "KUBERNETES_NAMESPACE", "MQTT_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.simulator_name == "dots-so" and settings.kubernetes_namespace == "dots"
    assert settings.kubernetes_port == 6443 and settings.mqtt_port == 1883


@pytest.mark.parametrize(("name", "value"), [("MQTT_PORT", "abc"), ("KUBERNETES_NAMESPACE", "Bad_NS"),
                                             ("LOG_FORMAT", "xml"), ("SECRET_ENV_NAME_PATTERN", "("),
                                             ("KUEUE_QUEUE_NAME", "Not A Queue"),
                                             ("MODEL_MEMORY_REQUEST", "128MB"), ("MODEL_CPU_LIMIT", "one")])
def test_unusable_settings_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_kueue_mode_turns_the_daemons_own_quota_admission_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).admits_by_quota  # type: ignore[call-arg]
    monkeypatch.setenv("KUEUE_QUEUE_NAME", "dots-queue")
    assert not Settings(_env_file=None).admits_by_quota  # type: ignore[call-arg]


def test_empty_optional_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_CA_CERT", "")
    monkeypatch.setenv("KUBERNETES_API_TOKEN", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kubernetes_ca_cert is None and settings.kubernetes_api_token is None


def test_a_record_of_the_layout_before_is_read_as_said_and_confirmed() -> None:
    # Version 2 recorded "sent": it was handed out, and the version that wrote it took that as done.
    head = {"simulation.json": json.dumps({
        "version": 2, "simulatorId": "so", "simulationId": "s", "keepLogsHours": 1.0, "modelsReadySent": True,
        "allTerminatedSent": False, "finishedAt": None, "parts": 1})}
    part = {PART_KEY: json.dumps([["a", 3, [0, "Completed"]], ["b", 1, None], ["c", 0, None]])}
    back = decode_record(head, {0: part}.get)
    assert back.models_ready is inv.Delivery.DELIVERED and back.all_terminated is inv.Delivery.NONE
    assert back.models["a"].reported and back.models["a"].phase is inv.Phase.ENDED
    assert back.models["b"].phase is inv.Phase.CREATED and back.models["c"].phase is inv.Phase.PENDING
