"""The kubelet: processes with env and logs, image errors, scheduling, graceful deletion, status-only."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from local_kubernetes_helpers import IMAGES, CoreApi, core_api, pod_manifest, wait_for

from simulation_components.local_kubernetes.images import ImageTable
from simulation_components.local_kubernetes.launcher import LocalKubernetes


def _container_state(api: CoreApi, namespace: str, name: str) -> dict[str, Any]:
    statuses = api.read_namespaced_pod(name, namespace).status.container_statuses or []
    if not statuses:
        return {}
    state: dict[str, Any] = statuses[0].state.to_dict()
    return {key: value for key, value in state.items() if value is not None}


def test_process_runs_with_env_and_logs(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_secret(namespace, {"metadata": {"name": "creds"},
                                                     "data": {"password": base64.b64encode(b"hunter2").decode()}})
    process_api.create_namespaced_config_map(namespace, {"metadata": {"name": "conf"}, "data": {"setting": "on"}})
    env: list[dict[str, Any]] = [
        {"name": "FOO", "value": "bar"},
        {"name": "DUP", "value": "first"},
        {"name": "DUP", "value": "second"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "SETTING", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "setting"}}},
        {"name": "LINES", "value": "5"},
        {"name": "EXIT_CODE", "value": "3"},
    ]
    process_api.create_namespaced_pod(namespace, pod_manifest("model", env=env))
    pod = wait_for(lambda: (p := process_api.read_namespaced_pod("model", namespace)).status.phase == "Failed" and p,
                   what="the process to exit")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.started_at is not None and terminated.finished_at is not None
    assert pod.spec.node_name == "local-node"
    log = process_api.read_namespaced_pod_log("model", namespace)
    assert log.splitlines()[:5] == ["FOO=bar", "DUP=second", "PASSWORD=hunter2", "SETTING=on", "PYTHONPATH_OK=True"]
    assert process_api.read_namespaced_pod_log("model", namespace, tail_lines=2) == "line 3\nline 4\n"
    assert process_api.read_namespaced_pod_log("model", namespace, tail_lines=0) == ""


def test_successful_process_completes(process_api: CoreApi, namespace: str) -> None:
    watcher = watch.Watch()
    created = process_api.create_namespaced_pod(namespace, pod_manifest("ok"))
    phases = [created.status.phase]
    for event in watcher.stream(process_api.list_namespaced_pod, namespace, timeout_seconds=10,
                                resource_version=created.metadata.resource_version):
        phases.append(event["object"].status.phase)
        if phases[-1] == "Succeeded":
            terminated = event["object"].status.container_statuses[0].state.terminated
            assert (terminated.exit_code, terminated.reason) == (0, "Completed")
            watcher.stop()
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"


def test_unknown_image_alternates_err_image_pull_and_back_off(process_api: CoreApi,
                                                               namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, pod_manifest("p", image="registry.example.com/nope:1"))
    reasons: set[str] = set()

    def both_seen() -> bool:
        waiting = _container_state(process_api, namespace, "p").get("waiting") or {}
        reasons.add(str(waiting.get("reason")))
        return {"ErrImagePull", "ImagePullBackOff"} <= reasons

    wait_for(both_seen, timeout=6, what="ErrImagePull and ImagePullBackOff")
    assert process_api.read_namespaced_pod("p", namespace).status.phase == "Pending"
    with pytest.raises(ApiException) as error:
        process_api.read_namespaced_pod_log("p", namespace)
    assert error.value.status == 400
    process_api.create_namespaced_pod(namespace, pod_manifest("q", image="Upper/Case:1"))
    wait_for(lambda: (_container_state(process_api, namespace, "q").get("waiting") or {}).get("reason")
             == "InvalidImageName", what="InvalidImageName")


def test_missing_secret_is_a_config_error_until_it_exists(process_api: CoreApi, namespace: str) -> None:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "later", "key": "password"}}}]
    process_api.create_namespaced_pod(namespace, pod_manifest("p", env=env))
    wait_for(lambda: (_container_state(process_api, namespace, "p").get("waiting") or {}).get("reason")
             == "CreateContainerConfigError", what="CreateContainerConfigError")
    process_api.create_namespaced_secret(namespace, {"metadata": {"name": "later"}, "stringData": {"password": "x"}})
    wait_for(lambda: process_api.read_namespaced_pod("p", namespace).status.phase == "Succeeded",
             what="the pod to run once the secret exists")


def test_unschedulable_pod_stays_pending(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, pod_manifest("p", node_selector={"type": "gpu"}))

    def unschedulable() -> bool:
        pod = process_api.read_namespaced_pod("p", namespace)
        conditions = pod.status.conditions or []
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in conditions)

    wait_for(unschedulable, what="PodScheduled=False Unschedulable")
    pod = process_api.read_namespaced_pod("p", namespace)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    process_api.delete_namespaced_pod("p", namespace)  # not bound to a node: deleted at once
    with pytest.raises(ApiException) as error:
        process_api.read_namespaced_pod("p", namespace)
    assert error.value.status == 404


def test_graceful_delete_sends_sigterm_then_removes_the_pod(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, pod_manifest("p", image="sleeper:1"))
    wait_for(lambda: "started" in _log_or_empty(process_api, namespace, "p"), what="the process to start")
    start = process_api.read_namespaced_pod("p", namespace).metadata.resource_version
    deleted = process_api.delete_namespaced_pod("p", namespace)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    events = [(e["type"], e["object"]) for e in watch.Watch().stream(
        process_api.list_namespaced_pod, namespace, resource_version=start, timeout_seconds=5)]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "MODIFIED" and events[0][1].metadata.deletion_timestamp is not None
    assert kinds[-1] == "DELETED"
    terminated = events[-1][1].status.container_statuses[0].state.terminated
    assert terminated is not None and terminated.exit_code == 0  # the program handled SIGTERM


def test_stubborn_process_is_killed_after_the_grace_period(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, pod_manifest("p", image="stubborn:1", grace=1))
    wait_for(lambda: "started" in _log_or_empty(process_api, namespace, "p"), what="the process to start")
    process_api.delete_namespaced_pod("p", namespace)

    def gone() -> bool:
        try:
            process_api.read_namespaced_pod("p", namespace)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, timeout=5, what="the SIGKILL and the final delete")


def _log_or_empty(api: CoreApi, namespace: str, name: str) -> str:
    try:
        return str(api.read_namespaced_pod_log(name, namespace))
    except ApiException:
        return ""


def test_status_only_terminated_state_is_seen_by_watchers(status_kube: LocalKubernetes, api: CoreApi,
                                                          namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("p", image="anything/at-all:2"))
    pod = wait_for(lambda: (p := api.read_namespaced_pod("p", namespace)).status.phase == "Running" and p)
    assert pod.status.container_statuses[0].ready is True
    start = pod.metadata.resource_version
    seen: list[tuple[str, Any]] = []
    done = threading.Event()

    def consume() -> None:
        for event in watch.Watch().stream(api.list_namespaced_pod, namespace, resource_version=start,
                                          timeout_seconds=5):
            seen.append((event["type"], event["object"]))
            if event["type"] == "MODIFIED":
                break
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    api.patch_namespaced_pod_status("p", namespace, {"status": {"phase": "Failed", "containerStatuses": [{
        "name": "model", "ready": False, "restartCount": 0, "image": "anything/at-all:2", "imageID": "",
        "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}})
    assert done.wait(5)
    kind, obj = seen[-1]
    assert kind == "MODIFIED"
    assert obj.status.container_statuses[0].state.terminated.exit_code == 2
    status_kube.append_log(namespace, "p", "hello\nworld\n")
    assert api.read_namespaced_pod_log("p", namespace, tail_lines=1) == "world\n"


def test_status_only_graceful_delete(api: CoreApi, namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("p"))
    wait_for(lambda: api.read_namespaced_pod("p", namespace).status.phase == "Running")
    start = api.read_namespaced_pod("p", namespace).metadata.resource_version
    api.delete_namespaced_pod("p", namespace)
    events = [(e["type"], e["object"]) for e in watch.Watch().stream(
        api.list_namespaced_pod, namespace, resource_version=start, timeout_seconds=1)]
    assert [kind for kind, _ in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert events[0][1].metadata.deletion_timestamp is not None
    assert events[1][1].status.container_statuses[0].state.terminated.exit_code == 143


def test_follow_streams_the_log_until_the_container_exits(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, pod_manifest("p", image="sleeper:1", grace=5))
    wait_for(lambda: "started" in _log_or_empty(process_api, namespace, "p"), what="the process to start")
    lines: list[str] = []

    def follow() -> None:
        for line in watch.Watch().stream(process_api.read_namespaced_pod_log, "p", namespace):
            lines.append(line)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    wait_for(lambda: lines == ["started"], what="the log so far")
    process_api.delete_namespaced_pod("p", namespace)  # SIGTERM: the program prints and exits
    thread.join(5)
    assert not thread.is_alive()
    assert lines == ["started", "got SIGTERM"]


def test_killing_the_server_kills_its_processes() -> None:
    images: ImageTable = {"sleeper:1": IMAGES["sleeper:1"]}
    with LocalKubernetes(kubelet="process", images=images) as kube:
        api = core_api(kube)
        api.create_namespaced_pod("dots", pod_manifest("p", image="sleeper:1"))
        pod = wait_for(lambda: (p := api.read_namespaced_pod("p", "dots")).status.phase == "Running" and p)
        assert pod.status.container_statuses[0].container_id.startswith("local://")
        children = wait_for(lambda: _children(kube), what="the pod process")
        kube.kill()
        wait_for(lambda: not any(_alive(pid) for pid in children), timeout=5, what="the pod process to die")


def _children(kube: LocalKubernetes) -> list[int]:
    assert kube.process is not None
    result = subprocess.run(["pgrep", "-P", str(kube.process.pid)],  # noqa: S607 - procps is on PATH
                            capture_output=True, text=True, check=False)
    return [int(pid) for pid in result.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        return "zombie" not in open(f"/proc/{pid}/status").read()
    return False


def test_on_failure_restarts_with_back_off_and_keeps_the_previous_log(process_api: CoreApi,
                                                                      namespace: str) -> None:
    env = [{"name": "EXIT_CODE", "value": "1"}, {"name": "LINES", "value": "1"}]
    process_api.create_namespaced_pod(namespace, pod_manifest("p", env=env, restart_policy="OnFailure"))

    def restarted() -> Any:
        statuses = process_api.read_namespaced_pod("p", namespace).status.container_statuses or []
        return statuses and statuses[0].restart_count >= 1 and statuses[0]

    status = wait_for(restarted, timeout=8, what="a restart")
    assert status.last_state.terminated.exit_code == 1
    assert process_api.read_namespaced_pod("p", namespace).status.phase in ("Running", "Pending")
    assert "line 0" in process_api.read_namespaced_pod_log("p", namespace, previous=True)


def _with_deadline(manifest: dict[str, Any], seconds: int) -> dict[str, Any]:
    manifest["spec"]["activeDeadlineSeconds"] = seconds
    return manifest


def _deadline_exceeded(api: CoreApi, namespace: str, name: str) -> Any:
    pod = api.read_namespaced_pod(name, namespace)
    return pod.status.phase == "Failed" and pod


def _sleeper_pids(kube: LocalKubernetes) -> set[int]:
    pids = set()
    for pid in _children(kube):
        with contextlib.suppress(FileNotFoundError):
            if b"got SIGTERM" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.add(pid)
    return pids


def test_lowered_active_deadline_stops_a_running_pod(process_kube: LocalKubernetes, process_api: CoreApi,
                                                     namespace: str) -> None:
    before = _sleeper_pids(process_kube)
    process_api.create_namespaced_pod(namespace, pod_manifest("p", image="sleeper:1", grace=5))
    wait_for(lambda: "started" in _log_or_empty(process_api, namespace, "p"), what="the process to start")
    pids = _sleeper_pids(process_kube) - before
    assert len(pids) == 1
    time.sleep(1.0)  # the deadline counts from status.startTime: 1 s is over once the patch lands
    process_api.patch_namespaced_pod("p", namespace, {"spec": {"activeDeadlineSeconds": 1}})
    pod = wait_for(lambda: _deadline_exceeded(process_api, namespace, "p"), timeout=5, what="DeadlineExceeded")
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")  # the program handled SIGTERM
    assert not any(_alive(pid) for pid in pids)
    assert pod.metadata.deletion_timestamp is None  # failed, not deleted
    assert {c.type: c.reason for c in pod.status.conditions}["Ready"] == "PodCompleted"
    assert process_api.read_namespaced_pod_log("p", namespace) == "started\ngot SIGTERM\n"


def test_active_deadline_from_creation_kills_after_the_grace_period(process_api: CoreApi, namespace: str) -> None:
    created = process_api.create_namespaced_pod(
        namespace, _with_deadline(pod_manifest("p", image="stubborn:1", grace=1), 2))
    start = time.monotonic()
    seen: list[tuple[str | None, str | None]] = []
    pod = None
    for event in watch.Watch().stream(process_api.list_namespaced_pod, namespace, timeout_seconds=8,
                                      resource_version=created.metadata.resource_version):
        pod = event["object"]
        seen.append((pod.status.phase, pod.status.reason))
        if pod.status.phase == "Failed":
            break
    assert pod is not None and pod.status.phase == "Failed", seen
    assert time.monotonic() - start >= 2.5  # 2 s deadline, then SIGTERM ignored for the 1 s grace period
    # Running until the container is gone, then Failed at once with the reason (no terminal phase before).
    assert ("Running", None) in seen and seen[-1] == ("Failed", "DeadlineExceeded")
    assert [phase for phase, _ in seen].count("Failed") == 1
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "Error")
    assert process_api.read_namespaced_pod_log("p", namespace) == "started\n"


def test_active_deadline_fails_a_pod_that_cannot_pull_its_image(process_api: CoreApi, namespace: str) -> None:
    process_api.create_namespaced_pod(namespace, _with_deadline(pod_manifest("p", image="missing:1"), 2))
    wait_for(lambda: (_container_state(process_api, namespace, "p").get("waiting") or {}).get("reason")
             == "ErrImagePull", what="ErrImagePull")
    assert process_api.read_namespaced_pod("p", namespace).status.phase == "Pending"
    pod = wait_for(lambda: _deadline_exceeded(process_api, namespace, "p"), timeout=6, what="DeadlineExceeded")
    assert pod.status.reason == "DeadlineExceeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "ContainerStatusUnknown")
    with pytest.raises(ApiException) as error:
        process_api.read_namespaced_pod_log("p", namespace)
    assert error.value.status == 400 and "is terminated" in str(error.value.body)


def test_status_only_active_deadline(api: CoreApi, namespace: str) -> None:
    api.create_namespaced_pod(namespace, _with_deadline(pod_manifest("p"), 1))
    api.create_namespaced_pod(namespace, _with_deadline(pod_manifest("nowhere", node_selector={"type": "gpu"}), 1))
    wait_for(lambda: api.read_namespaced_pod("p", namespace).status.phase == "Running", what="Running")
    pod = wait_for(lambda: _deadline_exceeded(api, namespace, "p"), timeout=5, what="DeadlineExceeded")
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    status = pod.status.container_statuses[0]
    assert (status.state.terminated.exit_code, status.state.terminated.reason, status.ready) == (137, "Error", False)
    time.sleep(0.5)  # 1.5 s after its creation: an unscheduled pod has no kubelet, hence no deadline
    unscheduled = api.read_namespaced_pod("nowhere", namespace)
    assert unscheduled.status.phase == "Pending" and unscheduled.status.reason is None


def test_active_deadline_may_be_set_and_lowered_but_not_raised_or_removed(api: CoreApi, namespace: str) -> None:
    api.create_namespaced_pod(namespace, pod_manifest("p"))
    api.patch_namespaced_pod("p", namespace, {"spec": {"activeDeadlineSeconds": 600}})
    api.patch_namespaced_pod("p", namespace, {"spec": {"activeDeadlineSeconds": 300}})
    refused = [
        ({"activeDeadlineSeconds": 301}, "spec.activeDeadlineSeconds: Invalid value: 301: must be less than or "
                                         "equal to previous value"),
        ({"activeDeadlineSeconds": None}, "spec.activeDeadlineSeconds: Invalid value: null: must not update from a "
                                          "positive integer to nil value"),
    ]
    for spec, message in refused:
        with pytest.raises(ApiException) as error:
            api.patch_namespaced_pod("p", namespace, {"spec": spec})
        assert error.value.status == 422
        assert json.loads(str(error.value.body))["message"] == f'Pod "p" is invalid: {message}'
    assert api.read_namespaced_pod("p", namespace).spec.active_deadline_seconds == 300
