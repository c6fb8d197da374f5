"""The real control plane launcher: the pinned version, the project's namespace and RBAC exactly as the
daemon's token meets them, garbage collection, compaction, start-up failures, and the command line.

One ``ControlPlane(kubelet="none")`` serves the module (a few seconds to start); the command line test and
the failure test start their own.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from simulation_components.control_plane import control_plane_binaries
from simulation_components.control_plane.api import ApiError
from simulation_components.control_plane.binaries import BINARIES, REPO_ROOT
from simulation_components.control_plane.components import ComponentError
from simulation_components.control_plane.launcher import DAEMON_SERVICE_ACCOUNT, ControlPlane
from simulation_components.control_plane.manifests import apply_manifests, object_path
from simulation_components.kit import wait_for

T = TypeVar("T")
CoreApi = Any  # the generated client: every field Optional
NAMESPACE = "dots"
CONFIGURATION = REPO_ROOT / "k8s_cluster_configuration"


def pinned_kubernetes_version() -> str:
    go_mod = (REPO_ROOT / "simulation_components" / "control_plane" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE)
    assert match is not None
    return match.group(1)


def manifest(name: str) -> dict[str, Any]:
    with (CONFIGURATION / name).open() as stream:
        documents: list[dict[str, Any]] = [document for document in yaml.safe_load_all(stream) if document]
    return documents[0]


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(kubelet="none") as started:
        yield started


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Iterator[CoreApi]:
    with plane.api_client() as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def daemon(plane: ControlPlane) -> Iterator[CoreApi]:
    """CoreV1Api with the daemon's token: what the orchestrator may do, nothing more."""
    configuration = plane.kube_client_configuration()
    configuration.api_key = {"authorization": plane.token}
    with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": "rbac"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "model", "image": "model:1"}]}}


def forbidden(call: Callable[[], object]) -> bool:
    try:
        call()
    except ApiException as error:
        return bool(error.status == 403)
    return False


# ------------------------------------------------------------------------------------------- the cluster

def test_version_is_the_pinned_release(plane: ControlPlane) -> None:
    assert plane.version() == pinned_kubernetes_version() == "v1.36.3"
    assert plane.url == f"https://127.0.0.1:{plane.port}"


def test_the_project_manifests_are_applied_as_written(plane: ControlPlane, admin: CoreApi) -> None:
    namespace = admin.read_namespace(NAMESPACE)
    assert namespace.metadata.labels.items() >= manifest("namespace.yaml")["metadata"]["labels"].items()
    assert admin.read_namespaced_service_account("default", NAMESPACE).automount_service_account_token is False
    role = plane.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles/"
                                f"{DAEMON_SERVICE_ACCOUNT}")
    assert role["rules"] == manifest("role.yaml")["rules"]
    binding = plane.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings/"
                                   f"{DAEMON_SERVICE_ACCOUNT}")
    assert binding["subjects"] == manifest("role-binding.yaml")["subjects"]
    # kube-controller-manager runs: it published the cluster CA into the namespace.
    assert "ca.crt" in admin.read_namespaced_config_map("kube-root-ca.crt", NAMESPACE).data


def test_files_for_the_daemon_and_kubectl(plane: ControlPlane) -> None:
    environment = plane.daemon_env()
    assert environment == {
        "KUBERNETES_HOST": "127.0.0.1", "KUBERNETES_PORT": str(plane.port), "KUBERNETES_SCHEME": "https",
        "KUBERNETES_API_TOKEN": plane.token, "KUBERNETES_CA_CERT": str(plane.ca_cert_path),
        "KUBERNETES_NAMESPACE": NAMESPACE}
    assert plane.daemon_env_path.read_text().splitlines() == [f"{key}={value}" for key, value in environment.items()]
    kubeconfig = json.loads(plane.admin_kubeconfig_path.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == plane.url
    assert kubeconfig["users"][0]["user"]["token"] == plane.admin_token


# ------------------------------------------------------------------------------------ the daemon's token

def test_the_daemon_token_is_the_service_account(plane: ControlPlane) -> None:
    review = plane.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                           token=plane.token)
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{NAMESPACE}:{DAEMON_SERVICE_ACCOUNT}"
    assert plane.token != plane.admin_token


def test_the_daemon_manages_pods(plane: ControlPlane, daemon: CoreApi) -> None:
    daemon.create_namespaced_pod(NAMESPACE, pod("rbac-1"))
    daemon.create_namespaced_pod(NAMESPACE, pod("rbac-2"))
    listed = daemon.list_namespaced_pod(NAMESPACE, label_selector="test=rbac")
    assert sorted(item.metadata.name for item in listed.items) == ["rbac-1", "rbac-2"]
    events = plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?watch=1&labelSelector=test%3Drbac"
                                  f"&resourceVersion={listed.metadata.resource_version}&timeoutSeconds=1",
                           token=plane.token)
    assert events == []  # allowed (no 403), and nothing changed since the list
    daemon.delete_namespaced_pod("rbac-1", NAMESPACE)  # not scheduled to a node: deleted at once
    daemon.delete_collection_namespaced_pod(NAMESPACE, label_selector="test=rbac")
    assert daemon.list_namespaced_pod(NAMESPACE, label_selector="test=rbac").items == []


@pytest.mark.parametrize("kind", ["config_map", "secret"])
def test_the_daemon_manages_configmaps_and_secrets(daemon: CoreApi, kind: str) -> None:
    create = getattr(daemon, f"create_namespaced_{kind}")
    replace = getattr(daemon, f"replace_namespaced_{kind}")
    listing = getattr(daemon, f"list_namespaced_{kind}")
    delete = getattr(daemon, f"delete_namespaced_{kind}")
    name = f"record-{kind.replace('_', '')}"
    body: dict[str, Any] = {"metadata": {"name": name, "labels": {"test": "records"}},
                            "data": {"state": "c3RhcnRlZA=="}}
    created = create(NAMESPACE, body)
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    body["data"] = {"state": "ZG9uZQ=="}
    replace(name, NAMESPACE, body)
    assert [item.metadata.name for item in listing(NAMESPACE, label_selector="test=records").items] == [name]
    delete(name, NAMESPACE)
    assert listing(NAMESPACE, label_selector="test=records").items == []


def test_the_daemon_is_forbidden_the_rest(plane: ControlPlane, admin: CoreApi, daemon: CoreApi) -> None:
    admin.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "not-for-reading"}})
    try:
        assert forbidden(daemon.list_node)
        assert forbidden(daemon.list_namespace)
        assert forbidden(lambda: daemon.list_namespaced_pod("default"))
        assert forbidden(lambda: daemon.create_namespaced_pod("default", pod("elsewhere")))
        assert forbidden(lambda: daemon.read_namespaced_config_map("not-for-reading", NAMESPACE))  # no `get`
        assert forbidden(lambda: daemon.list_namespaced_service_account(NAMESPACE))
        assert forbidden(lambda: daemon.patch_namespaced_config_map("not-for-reading", NAMESPACE, {"data": {}}))
    finally:
        admin.delete_namespaced_config_map("not-for-reading", NAMESPACE)


# -------------------------------------------------------------------------------- controllers and etcd

def test_the_garbage_collector_deletes_dependents(admin: CoreApi) -> None:
    owner = admin.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "gc-owner"}})
    admin.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "gc-dependent", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-owner", "uid": owner.metadata.uid}]}})
    admin.delete_namespaced_config_map("gc-owner", NAMESPACE)

    def dependent_gone() -> bool:
        try:
            admin.read_namespaced_config_map("gc-dependent", NAMESPACE)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(dependent_gone, what="the garbage collector to delete the dependent")


def test_compaction_then_a_fresh_watch_cache_gives_410(plane: ControlPlane, admin: CoreApi,
                                                       daemon: CoreApi) -> None:
    created = admin.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "compacted"}, "data": {"n": "0"}})
    old = created.metadata.resource_version
    for number in range(1, 4):
        admin.patch_namespaced_config_map("compacted", NAMESPACE, {"data": {"n": str(number)}})
    revision = plane.compact()
    assert revision > int(old)
    # kube-apiserver's watch cache still serves the old revision; a restart starts it afresh.
    plane.restart_apiserver()
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    with pytest.raises(ApiError) as error:
        plane.request("GET", f"{path}?resourceVersion={old}&resourceVersionMatch=Exact")
    assert (error.value.status, error.value.reason) == (410, "Expired")
    events = plane.request("GET", f"{path}?watch=1&resourceVersion={old}&timeoutSeconds=5")
    assert [(event["type"], event["object"]["code"], event["object"]["reason"]) for event in events] \
        == [("ERROR", 410, "Expired")]
    # A current resourceVersion works, and the daemon's token survived the restart.
    current = daemon.list_namespaced_config_map(NAMESPACE).metadata.resource_version
    assert plane.request("GET", f"{path}?watch=1&resourceVersion={current}&timeoutSeconds=1") == []
    admin.delete_namespaced_config_map("compacted", NAMESPACE)


def test_an_object_that_exists_is_replaced_by_the_manifest() -> None:
    calls: list[tuple[str, str, Any]] = []

    def request(method: str, path: str, body: Any) -> Any:
        calls.append((method, path, body))
        if method == "POST":
            raise ApiError(method, path, 409, {"reason": "AlreadyExists"})
        return {"metadata": {"name": "default", "resourceVersion": "7"}}

    metadata = {"name": "default", "namespace": NAMESPACE}
    given = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata,
             "automountServiceAccountToken": False}
    assert apply_manifests([given], request) == ["ServiceAccount/default"]
    collection = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts"
    assert calls == [("POST", collection, given), ("GET", f"{collection}/default", None),
                     ("PUT", f"{collection}/default", {**given, "metadata": {**metadata,
                                                                             "resourceVersion": "7"}})]
    assert object_path({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "x"}}) == ("/apis/rbac.authorization.k8s.io/v1/clusterroles", "x")


# ------------------------------------------------------------------------------- failures, command line

def test_a_component_dying_at_start_up_reports_its_log(tmp_path: Path) -> None:
    real = control_plane_binaries()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in BINARIES:
        (fake / name).symlink_to(real / name)
    (fake / "etcd").unlink()
    (fake / "etcd").write_text("#!/bin/sh\necho 'etcd: no disk today' >&2\nexit 3\n")
    (fake / "etcd").chmod(0o755)
    plane = ControlPlane(kubelet="none", bin_dir=fake, directory=tmp_path / "plane", start_timeout=20)
    with pytest.raises(ComponentError, match=r"(?s)etcd exited with status 3.*no disk today"):
        plane.start()
    assert plane.components == {}


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_command_line(tmp_path: Path) -> None:
    directory = tmp_path / "plane"
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulation_components.control_plane", "--dir", str(directory),
             "--kubelet", "none", "--bin-dir", str(control_plane_binaries())],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 60)
        assert readable, (tmp_path / "stderr.log").read_text()
        announcement = json.loads(process.stdout.readline())
        assert announcement["ready"] is True
        assert announcement["version"] == pinned_kubernetes_version()
        assert announcement["url"] == f"https://127.0.0.1:{announcement['port']}"
        assert set(announcement["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        for name in ("admin.kubeconfig", "daemon.env", "pki/ca.crt", "etcd.log", "kube-apiserver.log",
                     "kube-controller-manager.log"):
            assert (directory / name).is_file(), name
        assert Path(announcement["daemon_env"]).read_text().count("KUBERNETES_") == 6
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert all(_dead(pid) for pid in announcement["pids"].values())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
