"""The control-plane kubelet against a real kube-apiserver: node, binding, processes, env, logs through
``pods/log``, image pull errors, scheduling failures, activeDeadlineSeconds, graceful deletion, status-only."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from simulation_components.control_plane.launcher import ControlPlane
from simulation_components.kit import wait_for

T = TypeVar("T")
CoreApi = Any  # the generated client: every field Optional, bodies passed as dicts

NAMESPACE = "dots"  # the one namespace the kubelet watches

IMAGES: dict[str, Any] = {
    "hello:1": ["{python}", "-c", (
        "import os, sys\n"
        "for name in ('FOO', 'REF', 'PASSWORD', 'SETTING', 'POD', 'FROM_MAP', 'HOSTNAME'):\n"
        "    print(name + '=' + os.environ.get(name, ''))\n"
        "print('CWD_IN_PYTHONPATH=' + str(os.environ['PYTHONPATH'].split(os.pathsep)[0] == os.getcwd()))\n"
        "print('ARGS=' + ' '.join(sys.argv[1:]))\n"
        "sys.exit(int(os.environ.get('EXIT_CODE', '0')))\n")],
    "sleeper:1": ["{python}", "-c", "import os, time\nprint('started', os.getpid(), flush=True)\ntime.sleep(600)\n"],
    "stubborn:1": ["{python}", "-c", (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('started', flush=True)\n"
        "time.sleep(600)\n")],
    "missing:1": None,
    "private:1": 'rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/private:1": '
                 "pull access denied, repository does not exist or may require authorization",
}

_names = itertools.count(1)


def pod_manifest(image: str, *, env: list[dict[str, Any]] | None = None, grace: int | None = None,
                 node_selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A one-container pod with a fresh name, restartPolicy Never, nodeSelector type=worker."""
    body: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": node_selector if node_selector is not None else {"type": "worker"},
        "containers": [{"name": "model", "image": image, "env": env or []}],
        **spec,
    }
    if grace is not None:
        body["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{next(_names)}"}, "spec": body}


def create(api: CoreApi, manifest: dict[str, Any]) -> str:
    """Create the pod; its name."""
    api.create_namespaced_pod(NAMESPACE, manifest)
    return str(manifest["metadata"]["name"])


def read(api: CoreApi, name: str) -> Any:
    return api.read_namespaced_pod(name, NAMESPACE)


def state_of(api: CoreApi, name: str) -> dict[str, Any]:
    statuses = read(api, name).status.container_statuses or []
    if not statuses:
        return {}
    return {key: value for key, value in statuses[0].state.to_dict().items() if value is not None}


def phase_is(api: CoreApi, name: str, *phases: str) -> Any:
    pod = read(api, name)
    return pod if pod.status.phase in phases else None


def log_of(api: CoreApi, name: str) -> str:
    """The pod's log; empty while there is none yet (an empty body reads as None with this client)."""
    try:
        return str(api.read_namespaced_pod_log(name, NAMESPACE) or "")
    except ApiException as error:
        if error.status == 400:  # not started yet
            return ""
        raise


def gone(api: CoreApi, name: str) -> bool:
    try:
        read(api, name)
    except ApiException as error:
        return bool(error.status == 404)
    return False


@pytest.fixture(scope="module")
def process_plane() -> Iterator[ControlPlane]:
    with ControlPlane(kubelet="process", images=IMAGES) as plane:
        yield plane


@pytest.fixture(scope="module")
def status_plane() -> Iterator[ControlPlane]:
    with ControlPlane(kubelet="status-only", images=IMAGES) as plane:
        yield plane


@pytest.fixture
def api(process_plane: ControlPlane) -> CoreApi:
    return client.CoreV1Api(process_plane.api_client())


@pytest.fixture
def status_api(status_plane: ControlPlane) -> CoreApi:
    return client.CoreV1Api(status_plane.api_client())


# ---------------------------------------------------------------------------------------------- process mode

def test_node_is_registered_and_ready(api: CoreApi, process_plane: ControlPlane) -> None:
    node = api.read_node("local-node")
    assert node.metadata.labels == {"type": "worker", "kubernetes.io/hostname": "local-node",
                                    "kubernetes.io/os": "linux"}
    assert {(a.type, a.address) for a in node.status.addresses} == {("InternalIP", "127.0.0.1"),
                                                                    ("Hostname", "local-node")}
    assert node.status.daemon_endpoints.kubelet_endpoint.port == process_plane.kubelet_port
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert node.status.allocatable["pods"] == "10k"  # 10000, as the server canonicalises quantities
    coordination: Any = client.CoordinationV1Api(process_plane.api_client())
    lease = coordination.read_namespaced_lease("local-node", "kube-node-lease")
    assert lease.spec.holder_identity == "local-node" and lease.spec.renew_time is not None


def test_process_runs_with_its_env_and_its_log_is_served(api: CoreApi) -> None:
    api.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "creds-1"},
                                             "data": {"password": base64.b64encode(b"hunter2").decode()}})
    api.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "conf-1"}, "data": {"setting": "on",
                                                                                           "FROM_MAP": "yes"}})
    env: list[dict[str, Any]] = [
        {"name": "FOO", "value": "bar"},
        {"name": "REF", "value": "$(FOO)-x"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds-1", "key": "password"}}},
        {"name": "SETTING", "valueFrom": {"configMapKeyRef": {"name": "conf-1", "key": "setting"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "EXIT_CODE", "value": "3"},
    ]
    manifest = pod_manifest("hello:1", env=env)
    manifest["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "conf-1"}}]
    manifest["spec"]["containers"][0]["args"] = ["a", "b"]
    name = create(api, manifest)
    pod = wait_for(lambda: phase_is(api, name, "Failed"), what="the process to exit")
    status = pod.status.container_statuses[0]
    assert (status.state.terminated.exit_code, status.state.terminated.reason) == (3, "Error")
    assert status.restart_count == 0 and status.ready is False and status.image_id
    assert pod.spec.node_name == "local-node"
    assert (pod.status.host_ip, pod.status.pod_ip) == ("127.0.0.1", "127.0.0.1")
    conditions = {c.type: c for c in pod.status.conditions}
    assert conditions["PodScheduled"].status == "True"
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("False", "PodCompleted")
    log = api.read_namespaced_pod_log(name, NAMESPACE)
    assert log.splitlines() == ["FOO=bar", "REF=bar-x", "PASSWORD=hunter2", "SETTING=on", f"POD={name}",
                                "FROM_MAP=yes", f"HOSTNAME={name}", "CWD_IN_PYTHONPATH=True", "ARGS=a b"]
    assert api.read_namespaced_pod_log(name, NAMESPACE, tail_lines=1) == "ARGS=a b\n"
    assert api.read_namespaced_pod_log(name, NAMESPACE, limit_bytes=7) == "FOO=bar"


def test_exit_zero_succeeds(api: CoreApi) -> None:
    name = create(api, pod_manifest("hello:1"))
    pod = wait_for(lambda: phase_is(api, name, "Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"


def test_a_missing_secret_is_a_config_error_until_it_exists(api: CoreApi) -> None:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "late-1", "key": "password"}}}]
    name = create(api, pod_manifest("hello:1", env=env))
    waiting = wait_for(lambda: state_of(api, name).get("waiting"), what="a waiting state")
    wait_for(lambda: state_of(api, name).get("waiting", {}).get("reason") == "CreateContainerConfigError")
    waiting = state_of(api, name)["waiting"]
    assert waiting["message"] == 'secret "late-1" not found'
    assert read(api, name).status.phase == "Pending"
    api.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "late-1"},
                                             "data": {"password": base64.b64encode(b"pw").decode()}})
    wait_for(lambda: phase_is(api, name, "Succeeded"), what="the pod to run once the secret exists")
    assert "PASSWORD=pw" in api.read_namespaced_pod_log(name, NAMESPACE)


@pytest.mark.parametrize(("image", "words"), [
    ("nope:1", 'failed to resolve reference "docker.io/library/nope:1": docker.io/library/nope:1: not found'),
    ("missing:1", "docker.io/library/missing:1: not found"),
    ("private:1", "pull access denied"),
])
def test_an_image_that_cannot_be_pulled_backs_off(api: CoreApi, image: str, words: str) -> None:
    name = create(api, pod_manifest(image))
    seen: set[str] = set()

    def both_seen() -> bool:
        waiting = state_of(api, name).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            assert words in waiting["message"]
            if waiting["reason"] == "ImagePullBackOff":
                assert waiting["message"].startswith(f'Back-off pulling image "{image}"')
            seen.add(waiting["reason"])
        return seen == {"ErrImagePull", "ImagePullBackOff"}

    wait_for(both_seen, what="ErrImagePull and ImagePullBackOff")
    assert read(api, name).status.phase == "Pending"
    with pytest.raises(ApiException) as error:
        api.read_namespaced_pod_log(name, NAMESPACE)
    assert error.value.status == 400
    assert "is waiting to start: trying and failing to pull image" in str(error.value.body)
    api.delete_namespaced_pod(name, NAMESPACE)
    wait_for(lambda: gone(api, name), what="the never-started pod to be deleted")


def test_a_pod_no_node_accepts_stays_pending(api: CoreApi) -> None:
    name = create(api, pod_manifest("hello:1", node_selector={"type": "gpu"}))
    condition = wait_for(lambda: next((c for c in read(api, name).status.conditions or []
                                       if c.type == "PodScheduled"), None))
    assert (condition.status, condition.reason) == ("False", "Unschedulable")
    pod = read(api, name)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    api.delete_namespaced_pod(name, NAMESPACE)
    wait_for(lambda: gone(api, name))


def test_a_deadline_set_on_a_running_pod_fails_it_and_keeps_its_log(api: CoreApi) -> None:
    name = create(api, pod_manifest("sleeper:1"))
    wait_for(lambda: "started" in log_of(api, name), what="the process to start")
    pod = read(api, name)
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].ready is True
    assert pod.status.container_statuses[0].state.running.started_at is not None
    elapsed = time.time() - pod.status.start_time.timestamp()
    api.patch_namespaced_pod(name, NAMESPACE, {"spec": {"activeDeadlineSeconds": int(elapsed) + 2}})
    assert read(api, name).status.phase == "Running"
    pod = wait_for(lambda: phase_is(api, name, "Failed"), what="DeadlineExceeded")
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (143, "Error")
    assert "started" in log_of(api, name)


def test_deleting_sends_sigterm_then_sigkill_after_the_grace_period(api: CoreApi) -> None:
    name = create(api, pod_manifest("stubborn:1", grace=1))
    wait_for(lambda: "started" in log_of(api, name), what="the process to start")
    start = read(api, name).metadata.resource_version
    began = time.monotonic()
    api.delete_namespaced_pod(name, NAMESPACE)
    events = []
    for event in watch.Watch().stream(api.list_namespaced_pod, NAMESPACE, resource_version=start,
                                      field_selector=f"metadata.name={name}", timeout_seconds=10):
        events.append((event["type"], event["object"]))
        if event["type"] == "DELETED":
            break
    assert 1.0 <= time.monotonic() - began < 10.0  # the grace period, then SIGKILL (slack for a busy machine)
    # deletionTimestamp set; the kubelet's terminal status; (the final delete's grace 0, as the real API
    # server records it before deleting); DELETED
    assert [kind for kind, _ in events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    assert events[0][1].metadata.deletion_timestamp is not None and events[0][1].status.phase == "Running"
    final = events[1][1]
    assert final.status.phase == "Failed"
    assert final.status.container_statuses[0].state.terminated.exit_code == 137
    assert events[2][1].metadata.deletion_grace_period_seconds == 0


def test_follow_streams_the_log_until_the_container_exits(api: CoreApi) -> None:
    name = create(api, pod_manifest("sleeper:1", grace=5))
    wait_for(lambda: "started" in log_of(api, name))
    stream = api.read_namespaced_pod_log(name, NAMESPACE, follow=True, _preload_content=False)
    first = stream.read(7)
    assert first == b"started"
    api.delete_namespaced_pod(name, NAMESPACE)
    assert b"\n" in stream.read()  # the stream ends when the container does
    wait_for(lambda: gone(api, name))


def test_restart_policy_always_restarts_with_a_back_off(api: CoreApi) -> None:
    name = create(api, pod_manifest("hello:1", restartPolicy="Always"))
    pod = wait_for(lambda: (p := read(api, name)).status.container_statuses
                   and p.status.container_statuses[0].restart_count >= 1 and p, what="a restart")
    assert pod.status.phase == "Running"
    assert api.read_namespaced_pod_log(name, NAMESPACE, previous=True).startswith("FOO=")
    api.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
    wait_for(lambda: gone(api, name))


def test_the_kubelet_carries_on_after_an_api_server_restart(process_plane: ControlPlane) -> None:
    process_plane.restart_apiserver()  # the watch breaks; its resourceVersion is then unknown: 410, list again
    api = client.CoreV1Api(process_plane.api_client())
    name = create(api, pod_manifest("hello:1"))
    wait_for(lambda: phase_is(api, name, "Succeeded"), what="a pod created after the restart to run")


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody has reaped yet is dead too


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_processes_die_with_the_kubelet(how: str) -> None:
    with ControlPlane(kubelet="process", images=IMAGES) as plane:
        api = client.CoreV1Api(plane.api_client())
        name = create(api, pod_manifest("sleeper:1"))
        log = wait_for(lambda: log_of(api, name), what="the process to start")
        pid = int(log.split()[1])
        assert not _dead(pid)
        kubelet = plane.components["kubelet"]
        if how == "SIGTERM":
            assert kubelet.stop() == 0
        else:
            kubelet.kill()  # the parent-death signal
        wait_for(lambda: _dead(pid), timeout=5, what="the pod's process to die with the kubelet")


# ---------------------------------------------------------------------------------------------- status-only

def test_status_only_binds_and_writes_running_once(status_api: CoreApi) -> None:
    manifest = pod_manifest("anything:1")
    created = status_api.create_namespaced_pod(NAMESPACE, manifest)
    name = manifest["metadata"]["name"]
    events = []
    for event in watch.Watch().stream(status_api.list_namespaced_pod, NAMESPACE,
                                      resource_version=created.metadata.resource_version,
                                      field_selector=f"metadata.name={name}", timeout_seconds=3):
        events.append(event["object"])
        if event["object"].status.phase == "Running":
            break
    assert len(events) == 2  # the binding, then one status write
    assert events[0].spec.node_name == "local-node"
    running = events[1]
    assert running.status.container_statuses[0].state.running is not None
    assert {c.type: c.status for c in running.status.conditions}["Ready"] == "True"
    assert status_api.read_namespaced_pod_log(name, NAMESPACE) == ""


def test_status_only_deadline_and_delete(status_api: CoreApi) -> None:
    name = create(status_api, pod_manifest("anything:1", activeDeadlineSeconds=2))
    wait_for(lambda: phase_is(status_api, name, "Running"))
    pod = wait_for(lambda: phase_is(status_api, name, "Failed"), what="DeadlineExceeded")
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Error"
    other = create(status_api, pod_manifest("anything:1"))
    wait_for(lambda: phase_is(status_api, other, "Running"))
    status_api.delete_namespaced_pod(other, NAMESPACE)
    wait_for(lambda: gone(status_api, other), what="the kubelet to finish the deletion")


def test_status_only_missing_image_still_fails_to_pull(status_api: CoreApi) -> None:
    name = create(status_api, pod_manifest("missing:1"))
    wait_for(lambda: state_of(status_api, name).get("waiting", {}).get("reason") == "ErrImagePull")
    assert read(status_api, name).status.phase == "Pending"
    status_api.delete_namespaced_pod(name, NAMESPACE)
    wait_for(lambda: gone(status_api, name))


def test_status_only_stop_like_the_daemon(status_api: CoreApi) -> None:
    """The daemon stops a model with ``activeDeadlineSeconds: 1`` (a JSON patch) on the running pod."""
    name = create(status_api, pod_manifest("anything:1"))
    wait_for(lambda: phase_is(status_api, name, "Running"))
    time.sleep(1.1)
    status_api.patch_namespaced_pod(name, NAMESPACE, [{"op": "add", "path": "/spec/activeDeadlineSeconds",
                                                       "value": 1}])
    pod = wait_for(lambda: phase_is(status_api, name, "Failed"), what="DeadlineExceeded")
    assert (pod.status.reason, pod.status.observed_generation) == ("DeadlineExceeded", 2)
    assert status_api.read_namespaced_pod_log(name, NAMESPACE) == ""


def test_a_spec_change_is_reported_as_observed(api: CoreApi) -> None:
    name = create(api, pod_manifest("sleeper:1"))
    wait_for(lambda: phase_is(api, name, "Running"))
    assert read(api, name).status.observed_generation == 1
    api.patch_namespaced_pod(name, NAMESPACE, {"spec": {"activeDeadlineSeconds": 3600}})
    pod = wait_for(lambda: (p := read(api, name)).status.observed_generation == 2 and p)
    assert pod.status.phase == "Running"
    assert {c.type: c.observed_generation for c in pod.status.conditions}["Ready"] == 2
    api.delete_namespaced_pod(name, NAMESPACE)
    wait_for(lambda: gone(api, name))


# ---------------------------------------------------------------------------------------------- kube-scheduler

def test_with_kube_scheduler_pods_go_where_the_stated_capacity_holds_them() -> None:
    """kube-scheduler places pods by the nodes' stated capacity (the kubelet binds none itself), marks the one
    that fits nowhere Unschedulable, and kube-controller-manager's ResourceQuota controller gives an ended
    pod's share of the quota back."""
    with ControlPlane(kubelet="process", images=IMAGES, scheduler=True, nodes=2, node_cpu="1",
                      node_memory="1Gi") as plane:
        api: CoreApi = client.CoreV1Api(plane.api_client())
        nodes = {node.metadata.name: node.status.allocatable for node in api.list_node().items}
        assert {name: (allocatable["cpu"], allocatable["memory"]) for name, allocatable in nodes.items()} == {
            "local-node": ("1", "1Gi"), "local-node-2": ("1", "1Gi")}
        api.create_namespaced_resource_quota(NAMESPACE, {
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
            "spec": {"hard": {"requests.cpu": "10", "pods": "10"}}})
        requests = {"resources": {"requests": {"cpu": "600m", "memory": "64Mi"}}}

        def sized(image: str) -> dict[str, Any]:
            manifest = pod_manifest(image)
            manifest["spec"]["containers"][0].update(requests)
            return manifest

        sleepers = [create(api, sized("sleeper:1")) for _ in range(2)]
        def running(name: str) -> Any:
            return wait_for(lambda: phase_is(api, name, "Running"), timeout=30, what=f"{name} running")

        placed = [running(name) for name in sleepers]
        assert sorted(pod.spec.node_name for pod in placed) == ["local-node", "local-node-2"]
        third = create(api, sized("sleeper:1"))

        def unschedulable() -> bool:
            conditions = read(api, third).status.conditions or []
            return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

        wait_for(unschedulable, timeout=30, what="the third pod marked Unschedulable")
        assert read(api, third).spec.node_name is None

        def used_cpu() -> str:
            return str((api.read_namespaced_resource_quota("compute", NAMESPACE).status.used or {}).get("requests.cpu"))

        assert used_cpu() == "1800m"
        api.delete_namespaced_pod(sleepers[0], NAMESPACE, grace_period_seconds=0)
        # Its place is free: kube-scheduler binds the third there, and the quota controller gives back its share.
        running(third)  # once room was made
        wait_for(lambda: used_cpu() == "1200m", timeout=30, what="the ended pod's share of the quota given back")
