"""The model registry on the real control plane: the ModelService CRD as k8s_cluster_configuration has it,
the API server's validation of it, and what the daemon (with the project's own Role) makes of it.

A ``modelservice:<name>`` model runs the ModelService's image, env vars (the SO's win) and resources; a plain
image gets its ModelService's resources; an unknown name is FAILED -1 with an ErrorOccurred naming it; a
ModelService changed while a simulation runs changes nothing for that simulation, across a daemon restart
too; without the CRD the daemon runs with the registry off.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from model_services_orchestrator.messages import ErrorOccurred, MSOInfo
from model_services_orchestrator.protocol import ADMISSION, CAPABILITIES, MODEL_REGISTRY
from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.api import ApiError
from simulation_components.control_plane.manifests import load_manifests
from simulation_components.kit import (
    MODEL_SERVICES,
    NAMESPACE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    install_model_service_crd,
    read_records,
    remove_model_service_crd,
    wait_for,
)

PRINTER: dict[str, Any] = {
    "apiVersion": "dots.mso.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "printer"},
    "spec": {
        "image": "registry.example/printer:1",
        "env": [{"name": "A", "value": "default-a"}, {"name": "B", "value": "default-b"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "printer-token", "key": "token"}}}],
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "96Mi"}},
        "nodeSelector": {"pool": "models"},
        "tolerations": [{"key": "models", "operator": "Exists", "effect": "NoSchedule"}],
        "startTimeoutSeconds": 900,
    },
}
PLAIN: dict[str, Any] = {
    "apiVersion": "dots.mso.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "plain"},
    "spec": {"image": "registry.example/plain:1", "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}},
}


@pytest.fixture(scope="module", autouse=True)
def _no_crd_after(control_planes: dict[str, ControlPlane]) -> Iterator[None]:
    """The session's control planes left as this module found them: without the CRD (whose watch would take
    a fault another module injects for the pod watch, and whose requests it would count)."""
    yield
    for plane in control_planes.values():
        remove_model_service_crd(plane)


@pytest.fixture
def registry_kube(status_kube: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane with the ModelService CRD served, and no ModelService left after the test."""
    install_model_service_crd(status_kube)
    yield status_kube
    status_kube.request("DELETE", MODEL_SERVICES)


def _announced(so: SimulatorRecorder) -> list[str]:
    """The capabilities in the daemon's MSOInfo, as the SO hears it (docs/protocol.md section 7)."""
    [info, *_] = wait_for(lambda: [m for m in so.messages if m.kind == "MSOInfo"], what="the MSOInfo")
    return list(MSOInfo.FromString(info.payload).capabilities)


def _create(kube: ControlPlane, service: dict[str, Any]) -> Any:
    return kube.request("POST", MODEL_SERVICES, service)


def _patch(kube: ControlPlane, name: str, spec: dict[str, Any]) -> None:
    kube.request("PATCH", f"{MODEL_SERVICES}/{name}", {"spec": spec}, content_type="application/merge-patch+json")


def _pod_of(kube: ControlPlane, model_id: str) -> dict[str, Any]:
    """The spec of the model's pod, once it exists."""
    api = core_api(kube)

    def found() -> list[dict[str, Any]]:
        return [pod.to_dict()["spec"] for pod in api.list_namespaced_pod(NAMESPACE).items
                if pod.metadata and (pod.metadata.annotations or {}).get("dots.mso/model-id") == model_id]

    return wait_for(found, timeout=30, what=f"the pod of {model_id}")[0]


def _env(pod: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(entry["name"], entry["value"] if entry.get("value") is not None else entry["value_from"]["secret_key_ref"])
            for entry in pod["containers"][0]["env"]]


def test_the_api_server_refuses_an_invalid_model_service(registry_kube: ControlPlane) -> None:
    cases = {
        "spec.startTimeoutSeconds must be greater than 0": {"startTimeoutSeconds": 0},
        "spec.env names must be unique": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.image must be a non-empty image reference without whitespace": {"image": " "},
        "spec.image must be an image, not another modelservice: reference": {"image": "modelservice:plain"},
        "spec.resources: a request must not exceed the limit of the same resource": {
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "a resource amount must be a Kubernetes quantity": {"resources": {"requests": {"cpu": "lots"}}},
    }
    for message, spec in cases.items():
        service = copy.deepcopy(PLAIN)
        service["spec"].update(spec)
        with pytest.raises(ApiError) as refused:
            _create(registry_kube, service)
        assert refused.value.status == 422, refused.value
        assert message in refused.value.message, refused.value.message
    assert _create(registry_kube, PLAIN)["spec"]["image"] == "registry.example/plain:1"


def test_models_run_with_what_the_registry_says(registry_kube: ControlPlane, so: SimulatorRecorder,
                                                 make_daemon: DaemonFactory) -> None:
    _create(registry_kube, PRINTER)
    _create(registry_kube, PLAIN)
    daemon = make_daemon(registry_kube)
    assert daemon.logged("model registry listed")[0]["model_services"] == 2
    assert _announced(so) == [*CAPABILITIES, MODEL_REGISTRY, ADMISSION]
    sim = "sim-registry"
    so.deploy(sim, [("named", "modelservice:printer", [("B", "from-so"), ("C", "so-only")]),
                    ("plain", "registry.example/plain:1", [("X", "1")]),
                    ("other", "registry.example/other:1", []),
                    ("ghost", "modelservice:nobody", [])])

    named = _pod_of(registry_kube, "named")
    container = named["containers"][0]
    assert container["image"] == "registry.example/printer:1"
    # The defaults the SO does not give, then the SO's; the Secret stays a reference the daemon never read.
    assert _env(named) == [("A", "default-a"),
                           ("TOKEN", {"name": "printer-token", "key": "token", "optional": None}),
                           ("B", "from-so"), ("C", "so-only")]
    # cpu and memory are both named by the ModelService: its amounts, none of the daemon's defaults.
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "64Mi"}
    assert container["resources"]["limits"] == {"memory": "96Mi"}
    assert named["node_selector"] == {"pool": "models"}
    # (Admission adds its own not-ready and unreachable tolerations after ours.)
    assert next((t["key"], t["operator"], t["effect"]) for t in named["tolerations"]) == (
        "models", "Exists", "NoSchedule")

    plain = _pod_of(registry_kube, "plain")
    assert plain["containers"][0]["image"] == "registry.example/plain:1"
    assert _env(plain) == [("X", "1")]
    assert plain["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "32Mi"}
    assert plain["node_selector"] == {"type": "worker"}  # the daemon's: the ModelService says none

    other = _pod_of(registry_kube, "other")  # no ModelService: the daemon's settings, as always
    assert other["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                    "limits": {"cpu": "1", "memory": "1Gi"}, "claims": None}

    wait_for(lambda: so.terminations(sim).get("ghost"), timeout=20, what="the unknown name's answer")
    assert so.terminations(sim) == {"ghost": ("FAILED", -1)}
    error = ErrorOccurred()
    error.ParseFromString(wait_for(lambda: so.of(sim, "ErrorOccurred"), timeout=10, what="its ErrorOccurred")[0]
                          .payload)
    assert "unknown ModelService 'nobody'" in error.error_message

    recorded = read_records(core_api(registry_kube))[sim].services
    assert sorted(recorded) == ["modelservice:printer", "registry.example/plain:1"]
    assert recorded["modelservice:printer"].start_timeout_seconds == 900


def test_a_change_mid_simulation_changes_nothing_for_it(registry_kube: ControlPlane, so: SimulatorRecorder,
                                                         make_daemon: DaemonFactory) -> None:
    _create(registry_kube, PRINTER)
    first = make_daemon(registry_kube)
    # The pod cannot be made yet: it is made only after the change, and by the next daemon.
    registry_kube.inject_fault(503, seconds=600, methods=["POST"], path_contains="/pods")
    sim = "sim-before"
    so.deploy(sim, [("m", "modelservice:printer", [])])
    wait_for(lambda: sim in read_records(core_api(registry_kube)), timeout=20, what="the simulation's record")
    _patch(registry_kube, "printer", {"image": "registry.example/printer:2", "env": [{"name": "A", "value": "new"}],
                                      "resources": {"requests": {"cpu": "500m"}}})
    first.wait_logged("model service changed")
    first.kill()
    registry_kube.clear_faults()
    second = make_daemon(registry_kube)
    pod = _pod_of(registry_kube, "m")
    assert pod["containers"][0]["image"] == "registry.example/printer:1"
    assert ("A", "default-a") in _env(pod)
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "250m", "memory": "64Mi"}
    # A new simulation gets the ModelService as it is now: the change was seen (by the watch, then the list).
    so.deploy("sim-after", [("n", "modelservice:printer", [])])
    after = _pod_of(registry_kube, "n")
    assert after["containers"][0]["image"] == "registry.example/printer:2"
    assert _env(after) == [("A", "new")]
    assert not second.logged("model registry off: ModelServices are not served to the daemon")


def test_admission_counts_each_model_with_its_model_services_resources(
        registry_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    # One model of the ModelService asks 2 CPUs, the other the daemon's 100m: 2.1 of a quota of 1 can never
    # fit. Counted with the settings' 100m for both, it would be admitted, its pod refused by the quota.
    registry_kube.request("POST", f"/api/v1/namespaces/{NAMESPACE}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "models"},
        "spec": {"hard": {"requests.cpu": "1"}}})
    _create(registry_kube, {**PLAIN, "metadata": {"name": "big"},
                            "spec": {"image": "registry.example/big:1", "resources": {"requests": {"cpu": "2"}}}})
    make_daemon(registry_kube)
    sim = "sim-registry-quota"
    so.deploy(sim, [("big", "modelservice:big", []), ("small", "registry.example/small:1", [])])
    so.wait_all_terminated(sim, timeout=20)
    assert so.terminations(sim) == {"big": ("FAILED", -1), "small": ("FAILED", -1)}
    error = ErrorOccurred()
    error.ParseFromString(so.of(sim, "ErrorOccurred")[0].payload)
    assert "needs requests.cpu=2100m" in error.error_message, error.error_message


def test_without_the_crd_the_registry_is_off(status_kube: ControlPlane, so: SimulatorRecorder,
                                             make_daemon: DaemonFactory) -> None:
    remove_model_service_crd(status_kube)
    daemon = make_daemon(status_kube)
    off = daemon.logged("model registry off: ModelServices are not served to the daemon")
    assert len(off) == 1 and off[0]["status"] == 404
    assert _announced(so) == [*CAPABILITIES, ADMISSION], "no model-registry announced"
    sim = "sim-no-registry"
    so.deploy(sim, [("named", "modelservice:printer", []), ("plain", "registry.example/plain:1", [])])
    assert _pod_of(status_kube, "plain")["containers"][0]["resources"]["requests"] == {"cpu": "100m",
                                                                                        "memory": "128Mi"}
    wait_for(lambda: so.terminations(sim).get("named"), timeout=20, what="the reference's answer")
    assert so.terminations(sim) == {"named": ("FAILED", -1)}
    assert b"the model registry is off" in wait_for(lambda: so.of(sim, "ErrorOccurred"), timeout=10,
                                                    what="its ErrorOccurred")[0].payload


def test_with_a_role_that_does_not_grant_them_the_registry_is_off(
        registry_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    role = next(load_manifests(("role.yaml",)))
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles/{role['metadata']['name']}"

    def daemon_may_list() -> bool:
        try:
            registry_kube.request("GET", MODEL_SERVICES, token=registry_kube.token)
        except ApiError as error:
            if error.status == 403:
                return False
            raise
        return True

    def put_role(rules: list[dict[str, Any]]) -> None:
        current = registry_kube.request("GET", path)
        registry_kube.request("PUT", path, {**role, "metadata": {**role["metadata"], "resourceVersion": current[
            "metadata"]["resourceVersion"]}, "rules": rules})

    put_role([rule for rule in role["rules"] if rule["apiGroups"] != ["dots.mso.io"]])
    try:
        wait_for(lambda: not daemon_may_list(), timeout=20, what="the Role without ModelServices in force")
        daemon = make_daemon(registry_kube)
        off = daemon.logged("model registry off: ModelServices are not served to the daemon")
        assert len(off) == 1 and off[0]["status"] == 403
    finally:
        put_role(role["rules"])
        wait_for(daemon_may_list, timeout=20, what="the project's Role in force again")


def test_the_registry_lists_again_after_410_gone(registry_kube: ControlPlane, so: SimulatorRecorder,
                                                 make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(registry_kube)
    # kube-apiserver restarts after a compaction: the watch's resourceVersion is too old, the cache is re-listed.
    registry_kube.expire_watches_with_410()
    daemon.wait_logged("modelservice watch expired, listing again")
    wait_for(lambda: len(daemon.logged("model registry listed")) == 2, timeout=30, what="the list after 410")
    _create(registry_kube, PLAIN)
    daemon.wait_logged("model service changed")  # the watch resumed from the new list
    so.deploy("sim-relisted", [("m", "registry.example/plain:1", [])])
    assert _pod_of(registry_kube, "m")["containers"][0]["resources"]["requests"] == {"cpu": "50m",
                                                                                     "memory": "32Mi"}
