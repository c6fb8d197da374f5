"""Objects through the official client: create/get/list, validation, conflicts, patches, deletes, GC."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from local_kubernetes_helpers import CoreApi, core_api, pod_manifest, wait_for

from simulation_components.local_kubernetes.launcher import LocalKubernetes


def _status(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body or "{}")
    return body


def test_create_get_and_list_with_selectors(api: CoreApi, namespace: str) -> None:
    specs = {"a": {"app": "x", "tier": "db"}, "b": {"app": "x", "tier": "web"}, "c": {"app": "y"}}
    created = {name: api.create_namespaced_pod(namespace, pod_manifest(name, labels=labels))
               for name, labels in specs.items()}
    pod = api.read_namespaced_pod("a", namespace)
    assert pod.metadata.uid == created["a"].metadata.uid
    assert pod.metadata.creation_timestamp is not None
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.containers[0].termination_message_path == "/dev/termination-log"
    versions = [int(p.metadata.resource_version) for p in created.values()]
    assert versions == sorted(versions) and len(set(versions)) == 3

    def names(selector: str) -> list[str]:
        return [p.metadata.name for p in api.list_namespaced_pod(namespace, label_selector=selector).items]

    assert names("") == ["a", "b", "c"]
    assert names("app=x") == ["a", "b"]
    assert names("app==x,tier!=db") == ["b"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c"]
    assert names("tier in (web, db),app") == ["a", "b"]
    assert names("app notin (x)") == ["c"]
    assert names("app=z") == []
    listing = api.list_namespaced_pod(namespace)
    assert int(listing.metadata.resource_version) >= max(versions)
    assert [p.metadata.name for p in api.list_namespaced_pod(namespace, field_selector="metadata.name=b").items] \
        == ["b"]
    with pytest.raises(ApiException) as error:
        api.list_namespaced_pod(namespace, label_selector="app in x")
    assert error.value.status == 400


def test_pagination_with_limit_and_continue(api: CoreApi, namespace: str) -> None:
    for index in range(5):
        api.create_namespaced_pod(namespace, pod_manifest(f"p{index}"))
    first = api.list_namespaced_pod(namespace, limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    api.create_namespaced_pod(namespace, pod_manifest("p5"))  # after the snapshot: not in this listing
    second = api.list_namespaced_pod(namespace, limit=10, _continue=first.metadata.to_dict()["_continue"])
    assert [p.metadata.name for p in second.items] == ["p2", "p3", "p4"]
    assert second.metadata.resource_version == first.metadata.resource_version


def test_conflicts_not_found_and_forbidden(status_kube: LocalKubernetes, api: CoreApi,
                                           namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("dup"))
    with pytest.raises(ApiException) as error:
        api.create_namespaced_pod(namespace, pod_manifest("dup"))
    assert error.value.status == 409
    assert _status(error.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as error:
        api.read_namespaced_pod("nope", namespace)
    assert error.value.status == 404
    assert _status(error.value)["message"] == 'pods "nope" not found'
    with pytest.raises(ApiException) as error:
        api.list_pod_for_all_namespaces()
    assert error.value.status == 403
    assert _status(error.value)["reason"] == "Forbidden"
    stale = api.read_namespaced_pod("dup", namespace)
    api.patch_namespaced_pod("dup", namespace, {"metadata": {"labels": {"x": "1"}}})
    stale.metadata.labels = {"x": "2"}
    with pytest.raises(ApiException) as error:
        api.replace_namespaced_pod("dup", namespace, stale)
    assert error.value.status == 409
    assert _status(error.value)["reason"] == "Conflict"
    bad_token = client.Configuration()
    bad_token.host = status_kube.url
    bad_token.api_key = {"authorization": "wrong"}
    bad_token.api_key_prefix = {"authorization": "Bearer"}
    with pytest.raises(ApiException) as error:
        client.CoreV1Api(client.ApiClient(bad_token)).list_namespaced_pod(namespace)
    assert error.value.status == 401


@pytest.mark.parametrize(("change", "field"), [
    (lambda p: p["metadata"].update(name="Bad_Name"), "metadata.name"),
    (lambda p: p["metadata"].update(name="x" * 254), "metadata.name"),
    (lambda p: p["metadata"].update(labels={"ok": "v" * 64}), "metadata.labels"),
    (lambda p: p["metadata"].update(labels={"ok": "-starts-with-dash"}), "metadata.labels"),
    (lambda p: p["metadata"].update(labels={"bad key!": "v"}), "metadata.labels"),
    (lambda p: p["spec"].update(containers=[]), "spec.containers"),
    (lambda p: p["spec"]["containers"][0].pop("image"), "spec.containers[0].image"),
    (lambda p: p["spec"]["containers"][0].update(name="Model"), "spec.containers[0].name"),
    (lambda p: p["spec"]["containers"][0].update(env=[{"name": "1X", "value": "v"}]),
     "spec.containers[0].env[0].name"),
    (lambda p: p["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy"),
])
def test_invalid_pods_are_rejected_with_causes(api: CoreApi, namespace: str, change: Any,
                                               field: str) -> None:
    manifest = pod_manifest("valid-name")
    change(manifest)
    with pytest.raises(ApiException) as error:
        api.create_namespaced_pod(namespace, manifest)
    assert error.value.status == 422
    status = _status(error.value)
    assert status["reason"] == "Invalid"
    assert field in [cause["field"] for cause in status["details"]["causes"]]
    assert api.list_namespaced_pod(namespace).items == []


def _raw(kube: LocalKubernetes, method: str, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - the local server's URL
        f"{kube.url}{path}", method=method, data=b"{}" if method != "GET" else None,
        headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the local server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_invalid_namespace_and_unknown_paths(status_kube: LocalKubernetes, api: CoreApi) -> None:
    with pytest.raises(ApiException) as error:
        api.create_namespaced_pod("Not_A_Namespace", pod_manifest("p"))
    assert error.value.status == 404
    status, body = _raw(status_kube, "GET", "/api/v1/namespaces/dots/services")
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    status, body = _raw(status_kube, "PUT", "/api/v1/namespaces/dots/pods")
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    status, body = _raw(status_kube, "POST", "/api/v1/namespaces/dots/pods/p/log")
    assert status == 405
    status, body = _raw(status_kube, "GET", "/apis/apps/v1/namespaces/dots/deployments")
    assert status == 404


def test_patch_variants(api: CoreApi, namespace: str) -> None:
    created = api.create_namespaced_pod(namespace, pod_manifest("p", labels={"a": "1", "b": "2"}, env=[
        {"name": "ONE", "value": "1"}, {"name": "TWO", "value": "2"}]))
    # strategic merge (the client's default for a dict): containers merge by name
    patched = api.patch_namespaced_pod("p", namespace, {
        "metadata": {"labels": {"a": None, "c": "3"}},
        "spec": {"containers": [{"name": "model", "image": "hello:2"}]}})
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert patched.spec.containers[0].image == "hello:2"
    assert [(e.name, e.value) for e in patched.spec.containers[0].env] == [("ONE", "1"), ("TWO", "2")]
    with pytest.raises(ApiException) as error:  # env merges by name, but a pod's env is immutable
        api.patch_namespaced_pod("p", namespace, {
            "spec": {"containers": [{"name": "model", "env": [{"name": "TWO", "value": "22"}]}]}})
    assert error.value.status == 422
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    # a no-op patch does not bump the resourceVersion
    same = api.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"b": "2"}}})
    assert same.metadata.resource_version == patched.metadata.resource_version
    # JSON merge patch replaces lists
    merged = api.patch_namespaced_pod("p", namespace, {"metadata": {"annotations": {"note": "x"}}},
                                      _content_type="application/merge-patch+json")
    assert merged.metadata.annotations == {"note": "x"}
    # JSON patch, including a failing test operation (422) and an immutable field (422)
    jsonpatched = api.patch_namespaced_pod("p", namespace, [
        {"op": "test", "path": "/metadata/labels/b", "value": "2"},
        {"op": "add", "path": "/metadata/labels/d", "value": "4"},
        {"op": "remove", "path": "/metadata/labels/c"}])
    assert jsonpatched.metadata.labels == {"b": "2", "d": "4"}
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_pod("p", namespace, [{"op": "test", "path": "/metadata/labels/b", "value": "9"}])
    assert error.value.status == 422
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_pod("p", namespace, {"spec": {"restartPolicy": "Always"}})
    assert error.value.status == 422
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"bad": "-"}}})
    assert error.value.status == 422
    # a resourceVersion in the patch is a precondition
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_pod("p", namespace, {"metadata": {"resourceVersion": "1", "labels": {"e": "5"}}})
    assert error.value.status == 409
    # the main resource ignores status; the status subresource ignores everything else
    ignored = api.patch_namespaced_pod("p", namespace, {"status": {"phase": "Failed"}})
    assert ignored.status.phase == "Running"
    only_status = api.patch_namespaced_pod_status("p", namespace, {
        "metadata": {"labels": {"ignored": "yes"}}, "status": {"message": "hello"}})
    assert only_status.status.message == "hello"
    assert "ignored" not in only_status.metadata.labels


def test_config_maps_secrets_and_garbage_collection(api: CoreApi, namespace: str) -> None:
    pod = api.create_namespaced_pod(namespace, pod_manifest("owner"))
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": pod.metadata.uid}]
    config_map = api.create_namespaced_config_map(namespace, {
        "metadata": {"name": "record", "labels": {"sim": "1"}, "ownerReferences": owner},
        "data": {"state": "running"}})
    assert config_map.metadata.owner_references[0].uid == pod.metadata.uid
    secret = api.create_namespaced_secret(namespace, {
        "metadata": {"name": "password", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "record", "uid": config_map.metadata.uid}]},
        "stringData": {"password": "s3cret"}})
    assert secret.type == "Opaque"
    assert base64.b64decode(secret.data["password"]) == b"s3cret"
    assert secret.string_data is None
    patched = api.patch_namespaced_config_map("record", namespace, {"data": {"state": "done"}})
    assert patched.data == {"state": "done"}
    with pytest.raises(ApiException) as error:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "record"}})
    assert error.value.status == 409
    with pytest.raises(ApiException) as error:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "k"}, "data": {"bad key": "v"}})
    assert error.value.status == 422
    assert [c.metadata.name for c in api.list_namespaced_config_map(namespace, label_selector="sim=1").items] \
        == ["record"]
    # a dependent whose owner does not exist is collected too
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "orphan", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}]}})
    # deleting the pod (Running: graceful) collects the config map, then the secret
    api.delete_namespaced_pod("owner", namespace)

    def collected() -> bool:
        return (not api.list_namespaced_config_map(namespace).items
                and not api.list_namespaced_secret(namespace).items
                and not api.list_namespaced_pod(namespace).items)

    wait_for(collected, what="garbage collection of the config map and the secret")


def test_delete_collection_with_selector(api: CoreApi, namespace: str) -> None:
    for index in range(4):
        api.create_namespaced_pod(namespace, pod_manifest(f"p{index}", labels={"group": str(index % 2)}))
    api.delete_collection_namespaced_pod(namespace, label_selector="group=0", grace_period_seconds=0)
    assert [p.metadata.name for p in api.list_namespaced_pod(namespace).items] == ["p1", "p3"]
    with pytest.raises(ApiException) as error:
        api.delete_namespaced_config_map("nope", namespace)
    assert error.value.status == 404


def test_status_subresource_put_and_get(api: CoreApi, namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("p"))
    pod = wait_for(lambda: (p := api.read_namespaced_pod_status("p", namespace)).status.phase == "Running" and p)
    pod.status.phase = "Succeeded"
    replaced = api.replace_namespaced_pod_status("p", namespace, pod)
    assert replaced.status.phase == "Succeeded"
    # a terminated pod is removed at once on delete
    api.delete_namespaced_pod("p", namespace)
    with pytest.raises(ApiException) as error:
        api.read_namespaced_pod("p", namespace)
    assert error.value.status == 404


def test_the_cluster_scope_and_discovery(status_kube: LocalKubernetes) -> None:
    versions = client.VersionApi(client.ApiClient(status_kube.kube_client_configuration())).get_code()
    assert versions.major == "1"
    resources = client.CoreV1Api(client.ApiClient(status_kube.kube_client_configuration())).get_api_resources()
    assert {"pods", "pods/status", "pods/log", "configmaps", "secrets"} <= {r.name for r in resources.resources}
    with pytest.raises(ApiException) as error:
        core_api(status_kube).list_config_map_for_all_namespaces()
    assert error.value.status == 403


def test_tables_for_kubectl(status_kube: LocalKubernetes, api: CoreApi, namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("p"))
    wait_for(lambda: api.read_namespaced_pod("p", namespace).status.phase == "Running")
    request = urllib.request.Request(  # noqa: S310 - the local server's URL
        f"{status_kube.url}/api/v1/namespaces/{namespace}/pods",
        headers={"Authorization": f"Bearer {status_kube.token}",
                 "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the local server
        body = json.loads(response.read())
    assert body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert body["rows"][0]["cells"][:4] == ["p", "1/1", "Running", 0]
