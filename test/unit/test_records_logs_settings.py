"""The cluster record round-trips, secrets never reach a log line, and settings fail clearly."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import ValidationError

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.logs import SecretRedactor, configure_logging, get_logger
from model_services_orchestrator.pod_specs import pod_name
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.simulation_records import (
    RecordError,
    decode_record,
    decode_specs,
    encode_record,
    encode_specs,
    record_name,
)


def test_a_record_reads_back_as_the_same_simulation() -> None:
    simulation = inv.Simulation(simulator_id="so", simulation_id="Sim_1", keep_logs_hours=0.25,
                                models_ready_sent=True, all_terminated_sent=False, finished_at=None)
    simulation.models["a"] = inv.Model("a", pod_name("so", "Sim_1", "a"), spec=None, created=True, ready=True,
                                       termination=inv.Termination(2, "Error"))
    simulation.models["b"] = inv.Model("b", pod_name("so", "Sim_1", "b"), spec=None)
    specs = {"a": inv.ModelSpec("a", "img", (("PASSWORD", "x"),)), "b": inv.ModelSpec("b", "img2")}
    back = decode_record(encode_record(simulation), decode_specs(encode_specs(list(specs.values()))))
    assert back.models_ready_sent and not back.all_terminated_sent and back.keep_logs_hours == 0.25
    assert back.models["a"].termination == inv.Termination(2, "Error")
    assert back.models["a"].created and back.models["a"].ready and not back.models["b"].created
    assert back.models["a"].spec == specs["a"] and back.models["b"].spec == specs["b"]
    assert back.models["b"].pod_name == simulation.models["b"].pod_name
    assert back.ready_count == 0 and back.terminated_count == 0, "restore() recounts, not decoding"


def test_ten_thousand_models_fit_in_a_configmap() -> None:
    simulation = inv.Simulation(simulator_id="so01", simulation_id="district-simulation-2026", keep_logs_hours=1)
    for i in range(10_000):
        model_id = f"house-model-{i:05d}"
        simulation.models[model_id] = inv.Model(model_id, "", spec=None, created=True, ready=True,
                                                termination=inv.Termination(137, "OOMKilled"))
    assert len(encode_record(simulation)["simulation.json"].encode()) < 1024 * 1024


def test_an_unreadable_record_is_an_error_not_a_crash() -> None:
    with pytest.raises(RecordError):
        decode_record({"simulation.json": "{not json"})
    with pytest.raises(RecordError):
        decode_record({"simulation.json": json.dumps({"version": 99})})


def test_record_names_are_valid_and_distinct() -> None:
    assert record_name("dots-so", "sim02-abc") == "mso-dots-so-sim02-abc"
    assert record_name("dots-so", "A_B") != record_name("dots-so", "a-b")


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
                                             ("LOG_FORMAT", "xml"), ("SECRET_ENV_NAME_PATTERN", "(")])
def test_unusable_settings_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_empty_optional_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_CA_CERT", "")
    monkeypatch.setenv("KUBERNETES_API_TOKEN", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kubernetes_ca_cert is None and settings.kubernetes_api_token is None
