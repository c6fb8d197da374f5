"""The model registry's pure rules: what a ModelService makes of a model's image, its pod and its record.

Resolution (``modelservice:<name>`` and plain images), precedence (the SO's env over the defaults, the
ModelService's resources per resource over the daemon's), the deterministic choice between two ModelServices
of one image, unknown names answered FAILED -1, the start timeout, and what the record keeps; through a runtime
on the fakes, what it refuses (a literal secret, ModelServices too big for a record).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.messages import DeployModels, ModelConfiguration
from model_services_orchestrator.model_registry import (
    RECORDED_BYTES_MAX,
    Registry,
    Resolved,
    decode_resolved,
    encode_resolved,
    merged_env,
    model_service,
    named_model_service,
    recorded_size,
    reference_name,
    resolve,
    resources,
)
from model_services_orchestrator.pod_specs import PodSettings, build_pod
from model_services_orchestrator.simulation_records import decode_record, encode_record
from model_services_orchestrator.testing import FakeBroker, FakeCluster, running, wait_until

T0 = 1_000_000.0
DEFAULTS = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def _object(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dots.mso.io/v1alpha1", "kind": "ModelService", "metadata": {"name": name},
            "spec": {"image": image, **spec}}


def _registry(*objects: dict[str, Any]) -> Registry:
    registry = Registry()
    registry.enabled = True
    registry.listed(named_model_service(obj) for obj in objects)
    return registry


PRINTER = _object("printer", "printer:1", env=[{"name": "A", "value": "a"}, {
    "name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    resources={"requests": {"memory": "4Gi"}}, nodeSelector={"pool": "big"},
    tolerations=[{"key": "big", "operator": "Exists"}], startTimeoutSeconds=900)


def test_a_reference_names_a_model_service_and_a_plain_image_none() -> None:
    assert reference_name("modelservice:printer") == "printer"
    assert reference_name("printer:1") is None
    assert reference_name("registry/modelservice:1") is None


def test_an_object_without_an_image_is_not_a_model_service() -> None:
    assert model_service({"metadata": {"name": "x"}, "spec": {}}) is None
    assert model_service({"metadata": {"name": "x"}, "spec": {"image": " "}}) is None
    service = model_service(PRINTER)
    assert service is not None and service.start_timeout_seconds == 900.0 and service.node_selector == {"pool": "big"}


def test_a_reference_takes_everything_and_a_plain_image_the_settings() -> None:
    resolution = resolve(["modelservice:printer", "printer:1", "other:1", "modelservice:printer"],
                         _registry(PRINTER))
    named, plain = resolution.resolved["modelservice:printer"], resolution.resolved["printer:1"]
    assert named.image == "printer:1" and [entry["name"] for entry in named.env] == ["A", "TOKEN"]
    assert plain.image is None and plain.env == ()  # a plain image keeps its own image, and gets no env vars
    assert named.resources == plain.resources == {"requests": {"memory": "4Gi"}}
    assert plain.start_timeout_seconds == 900.0 and plain.service == "printer"
    assert "other:1" not in resolution.resolved
    assert resolution.unknown == {}


def test_an_unknown_name_is_unknown_and_says_why() -> None:
    assert "unknown ModelService 'nobody'" in resolve(["modelservice:nobody"], _registry(PRINTER)).unknown[
        "modelservice:nobody"]
    off = Registry()
    off.enabled = False
    resolution = resolve(["modelservice:printer", "printer:1"], off)
    assert "the model registry is off" in resolution.unknown["modelservice:printer"]
    assert resolution.resolved == {}


def test_two_model_services_of_one_image_the_first_by_name_whatever_the_order() -> None:
    zeta, alpha = _object("zeta", "shared:1", startTimeoutSeconds=5), _object("alpha", "shared:1")
    for registry in (_registry(zeta, alpha), _registry(alpha, zeta)):
        assert resolve(["shared:1"], registry).resolved["shared:1"].service == "alpha"


def test_the_cache_follows_changes_and_deletions() -> None:
    registry = _registry(PRINTER)
    registry.changed("printer", model_service(_object("printer", "printer:2")), deleted=False)
    assert resolve(["printer:2"], registry).resolved["printer:2"].service == "printer"
    assert resolve(["printer:1"], registry).resolved == {}
    registry.changed("printer", None, deleted=True)
    assert "modelservice:printer" in resolve(["modelservice:printer"], registry).unknown


def test_the_sos_env_wins_and_secret_refs_stay_refs() -> None:
    defaults = ({"name": "A", "value": "a"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    merged = merged_env(defaults, [{"name": "A", "value": "so"}, {"name": "C", "value": "c"}])
    assert merged == [{"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                      {"name": "A", "value": "so"}, {"name": "C", "value": "c"}]


def test_resources_per_resource_the_model_services_else_the_defaults() -> None:
    assert resources(DEFAULTS, None) == DEFAULTS
    # Memory named: its amounts only (the default limit of 1Gi would be below the 4Gi request); cpu: defaults.
    assert resources(DEFAULTS, {"requests": {"memory": "4Gi"}}) == {
        "requests": {"cpu": "100m", "memory": "4Gi"}, "limits": {"cpu": "1"}}
    assert resources(DEFAULTS, {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}}) == {
        "requests": {"memory": "128Mi"}, "limits": {"memory": "1Gi", "cpu": "2", "nvidia.com/gpu": "1"}}


def test_the_pod_has_the_model_services_image_env_resources_and_placement() -> None:
    settings = PodSettings(so="dots-so", cpu_request="100m", memory_request="128Mi", cpu_limit="1",
                           memory_limit="1Gi", tolerations=({"key": "default", "operator": "Exists"},))
    service = resolve(["modelservice:printer"], _registry(PRINTER)).resolved["modelservice:printer"]
    pod = build_pod(settings=settings, simulator_id="so01", simulation_id="s", model_id="m",
                    image="modelservice:printer", env=[("A", "so"), ("PASSWORD", "x")], keep_logs_hours=0,
                    is_secret=lambda name: name == "PASSWORD", secret_for=lambda _value: "record-secret",
                    service=service)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "printer:1"
    assert [entry["name"] for entry in container["env"]] == ["TOKEN", "A", "PASSWORD"]
    assert container["env"][1] == {"name": "A", "value": "so"}
    assert container["env"][2]["valueFrom"]["secretKeyRef"]["name"] == "record-secret"  # the SO's secret, as ever
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "4Gi"}, "limits": {"cpu": "1"}}
    assert pod["spec"]["nodeSelector"] == {"pool": "big"}
    assert pod["spec"]["tolerations"] == [{"key": "big", "operator": "Exists"}]
    plain = build_pod(settings=settings, simulator_id="so01", simulation_id="s", model_id="m", image="other:1",
                      env=[], keep_logs_hours=0)
    assert plain["spec"]["nodeSelector"] == {"type": "worker"}
    assert plain["spec"]["tolerations"] == [{"key": "default", "operator": "Exists"}]


def _deployed(services: dict[str, Resolved], unknown: dict[str, str]) -> inv.Inventory:
    inventory = inv.Inventory(start_timeout_seconds=300.0, min_cleanup_delay_seconds=5.0)
    models = (inv.ModelSpec("named", "modelservice:printer"), inv.ModelSpec("plain", "other:1"),
              inv.ModelSpec("ghost", "modelservice:nobody"))
    inventory.handle(inv.DeployRequested("so01", "s", 0.0, models, T0, services=services, unknown=unknown))
    return inventory


def test_an_unknown_name_is_failed_minus_one_and_reported() -> None:
    resolution = resolve(["modelservice:printer", "other:1", "modelservice:nobody"], _registry(PRINTER))
    inventory = _deployed(resolution.resolved, resolution.unknown)
    simulation = inventory.simulations["s"]
    ghost = simulation.models["ghost"]
    assert ghost.termination is not None and ghost.termination.exit_code == inv.EXIT_CREATE_REJECTED
    assert "unknown ModelService 'nobody'" in ghost.termination.reason
    assert [(report.model_id, report.exit_code) for report in inventory.take_reports("s")] == [("ghost", -1)]
    assert simulation.models["named"].termination is None and simulation.models["plain"].termination is None
    # Kueue's pod group counts only the pods that will exist, or Kueue would wait for ever for the third.
    inventory.record_saved("s", inventory.take_changes("s")[0])
    assert [create.group_size for create in inventory.pods_to_create("s", 10)] == [2, 2]


def test_the_model_services_start_timeout_sets_the_deadline() -> None:
    resolution = resolve(["modelservice:printer", "other:1"], _registry(PRINTER))
    simulation = _deployed(resolution.resolved, {"modelservice:nobody": "unknown"}).simulations["s"]
    assert simulation.models["named"].start_deadline == T0 + 900.0
    assert simulation.models["plain"].start_deadline == T0 + 300.0


def test_what_was_resolved_is_kept_in_the_record_and_read_back() -> None:
    resolved = resolve(["modelservice:printer", "printer:1"], _registry(PRINTER)).resolved
    assert decode_resolved(encode_resolved(resolved)) == resolved
    simulation = _deployed(resolved, {"modelservice:nobody": "unknown"}).simulations["s"]
    written = encode_record(simulation)
    back = decode_record(written.head, written.parts.get)
    assert back.services == resolved
    # Without any ModelService, the head says nothing of the registry: records stay as small as before.
    assert "services" not in encode_record(_deployed({}, {"modelservice:printer": "x",
                                                          "modelservice:nobody": "y"}).simulations["s"]).head[
        "simulation.json"]


# ---------------------------------------------------------------- what the runtime refuses


def _deploy_through(runtime: Any, simulation_id: str, *models: tuple[str, str]) -> None:
    message = DeployModels(simulatorId="so01", keepLogsHours=0, modelConfigurations=[
        ModelConfiguration(modelID=model, imageUrl=image) for model, image in models])
    runtime.receive(f"/lifecycle/dots-so/mso/{simulation_id}/DeployModels", message.SerializeToString())


def test_a_model_service_giving_a_secret_a_literal_value_is_refused_and_the_value_goes_nowhere() -> None:
    secret = "hunter2hunter2"
    literal = _object("db", "db:1", env=[{"name": "DB_PASSWORD", "value": secret}])
    referenced = _object("safe", "safe:1", env=[{"name": "DB_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "db", "key": "password"}}}])

    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            runtime.registry = _registry(literal, referenced)
            _deploy_through(runtime, "sim", ("m", "modelservice:db"), ("n", "modelservice:safe"))
            await wait_until(lambda: broker.terminations("sim"), what="m's answer")
            await wait_until(lambda: len(cluster.pods) == 1, what="n's pod")
        assert broker.terminations("sim") == [("m", -1)]
        error = next(payload for topic, payload in broker.published if topic.endswith("/m/ErrorOccurred"))
        assert b"DB_PASSWORD a literal value: it must be a secretKeyRef" in error
        stored = repr(cluster.pods) + repr(cluster.objects)
        assert secret not in stored, "in no pod and no record"

    asyncio.run(asyncio.wait_for(body(), 30))


def test_model_services_too_big_for_the_record_refuse_the_simulation() -> None:
    huge = _object("huge", "huge:1", env=[{"name": f"V{index}", "value": "x" * 30_000} for index in range(10)])
    assert recorded_size(resolve(["modelservice:huge"], _registry(huge)).resolved) > RECORDED_BYTES_MAX

    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            runtime.registry = _registry(huge)
            _deploy_through(runtime, "sim", ("m", "modelservice:huge"), ("n", "plain:1"))
            await wait_until(lambda: len(broker.terminations("sim")) == 2, what="both answers")
        assert sorted(broker.terminations("sim")) == [("m", -1), ("n", -1)]
        assert cluster.pods == {}

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_record_an_older_daemon_would_misread_says_version_4() -> None:
    resolved = resolve(["modelservice:printer"], _registry(PRINTER)).resolved
    with_services = encode_record(_deployed(resolved, {}).simulations["s"]).head["simulation.json"]
    without = encode_record(_deployed({}, {"modelservice:printer": "x", "modelservice:nobody": "y"})
                            .simulations["s"]).head["simulation.json"]
    assert json.loads(with_services)["version"] == 4
    assert json.loads(without)["version"] == 3, "records that need nothing new stay readable by older daemons"

