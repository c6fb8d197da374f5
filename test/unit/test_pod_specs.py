"""The pod a model gets: name, labels and env exactly as PROTOCOL.md section 6 says, valid for any ids."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from model_services_orchestrator.pod_specs import (
    PodSettings,
    build_pod,
    label_value,
    merge_env,
    pod_name,
    simulation_key,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_plain_ids_give_the_upstream_pod_name() -> None:
    assert pod_name("204-asd", "sim02-abc", "0-model") == "204-asd-sim02-abc-0-model"
    assert pod_name("SO1", "Sim", "Model") == "so1-sim-model"


def test_invalid_ids_give_a_valid_deterministic_name() -> None:
    name = pod_name("so", "sim_1", "Model_With_Underscores")
    assert DNS_LABEL.match(name) and len(name) <= 63
    assert name == pod_name("so", "sim_1", "Model_With_Underscores")
    assert name.startswith("so-sim-1-model-with-underscores-")


def test_long_ids_are_shortened_without_collisions() -> None:
    a = pod_name("so", "simulation", "x" * 80 + "1")
    b = pod_name("so", "simulation", "x" * 80 + "2")
    assert a != b and len(a) <= 63 and len(b) <= 63


def test_ids_that_clean_to_the_same_text_still_differ() -> None:
    assert pod_name("so", "sim", "a_b") != pod_name("so", "sim", "a.b")


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_every_name_is_a_dns_label(simulator: str, simulation: str, model: str) -> None:
    name = pod_name(simulator, simulation, model)
    assert DNS_LABEL.match(name) and len(name) <= 63


@given(st.text(max_size=100))
def test_every_label_value_is_valid(value: str) -> None:
    made = label_value(value)
    assert LABEL_VALUE.match(made) and len(made) <= 63


def test_env_keeps_order_and_a_later_duplicate_wins() -> None:
    assert merge_env([("A", "1"), ("B", "2"), ("A", "3")]) == [("B", "2"), ("A", "3")]


def test_pod_body_is_the_upstream_pod() -> None:
    body = build_pod(
        settings=PodSettings(so="dots-so", pull_image_secret_name="regcred"),
        simulator_id="204-asd", simulation_id="sim02-abc", model_id="0-model", image="fake_model:0.0.1",
        env=[("MQTT_HOST", "h"), ("MODEL_ID", "0-model")], keep_logs_hours=0.01)
    spec = body["spec"]
    container = spec["containers"][0]
    assert body["metadata"]["name"] == "204-asd-sim02-abc-0-model"
    labels = body["metadata"]["labels"]
    assert {k: labels[k] for k in ("simulator_id", "simulation_id", "model_id", "keep_logs_hours")} == {
        "simulator_id": "204-asd", "simulation_id": "sim02-abc", "model_id": "0-model", "keep_logs_hours": "0.01"}
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"type": "worker"}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["image"] == "fake_model:0.0.1" and container["imagePullPolicy"] == "Always"
    assert container["env"] == [{"name": "MQTT_HOST", "value": "h"}, {"name": "MODEL_ID", "value": "0-model"}]


def test_with_a_kueue_queue_every_pod_of_a_simulation_is_one_group_of_its_size() -> None:
    def pod(settings: PodSettings, simulation_id: str, model_id: str) -> dict[str, dict[str, dict[str, str]]]:
        return build_pod(settings=settings, simulator_id="so01", simulation_id=simulation_id, model_id=model_id,
                         image="i:1", env=[], keep_logs_hours=0, group_size=3)

    queued = PodSettings(so="dots-so", kueue_queue_name="dots-queue")
    a, b, other = pod(queued, "Sim A", "a"), pod(queued, "Sim A", "b"), pod(queued, "sim_a", "a")
    group = a["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"]
    assert group == b["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == simulation_key("dots-so", "Sim A")
    assert other["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] != group, "exact ids, not label values"
    assert a["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "dots-queue"
    assert a["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "3"
    assert a["metadata"]["annotations"]["kueue.x-k8s.io/retriable-in-group"] == "false"
    plain = pod(PodSettings(so="dots-so"), "Sim A", "a")
    assert not [key for key in (*plain["metadata"]["labels"], *plain["metadata"]["annotations"]) if "kueue" in key]


def test_only_kueues_own_gate_holds_a_pods_start_deadline() -> None:
    from model_services_orchestrator.pod_observation import observe_pod  # noqa: PLC0415

    pod = build_pod(settings=PodSettings(so="dots-so", kueue_queue_name="q"), simulator_id="so01",
                    simulation_id="s", model_id="m", image="i:1", env=[], keep_logs_hours=0, group_size=1)
    pod["metadata"]["creationTimestamp"] = "2026-12-03T00:00:00Z"
    pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                         "reason": "SchedulingGated"}]}
    pod["spec"]["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
    seen = observe_pod(pod)
    assert seen is not None and seen.gated
    pod["spec"]["schedulingGates"] = [{"name": "example.com/someone-elses"}]
    seen = observe_pod(pod)
    assert seen is not None and not seen.gated, "another's gate: waiting, with its start deadline"


def test_no_pull_secret_when_none_is_named() -> None:
    body = build_pod(settings=PodSettings(so="dots-so"), simulator_id="a", simulation_id="b", model_id="c",
                     image="i", env=[], keep_logs_hours=0)
    assert "imagePullSecrets" not in body["spec"]


def test_original_ids_are_kept_in_annotations_when_labels_must_change() -> None:
    body = build_pod(settings=PodSettings(so="dots-so"), simulator_id="a", simulation_id="b",
                     model_id="Model With Spaces", image="i", env=[], keep_logs_hours=0)
    assert LABEL_VALUE.match(body["metadata"]["labels"]["model_id"])
    assert body["metadata"]["annotations"]["dots.mso/model-id"] == "Model With Spaces"
