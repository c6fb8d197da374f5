"""The control-plane kubelet's status rules, without a server: phases, conditions, terminal states, objects."""

from __future__ import annotations

from typing import Any

import pytest

from simulation_components.control_plane.container_env import ContainerConfigError, resolve_container_env
from simulation_components.control_plane.images import image_reference_is_valid
from simulation_components.control_plane.kubelet_logs import LogBuffer
from simulation_components.control_plane.kubelet_status import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    LOST_REASON,
    NODE_NAME,
    binding,
    condition,
    container_status,
    deadline_at,
    delete_options,
    exit_code_of,
    killed_status,
    log_unavailable_message,
    lost,
    node_manifest,
    node_selector_matches,
    parse_time,
    pod_phase,
    pod_status,
    pull_backoff_message,
    rfc3339,
    running,
    running_status,
    terminated,
    unschedulable_status,
    waiting,
)

NOW = 1_700_000_000.0


def _entry(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return container_status(name="c", image="img:1", state=state, last_state=last)


def _done(code: int) -> dict[str, Any]:
    return terminated(code, started_at=NOW, finished_at=NOW + 1, container_id="containerd://x")


@pytest.mark.parametrize(("policy", "states", "terminal", "phase"), [
    ("Never", [waiting("ContainerCreating")], False, "Pending"),
    ("Never", [running(NOW), waiting("ErrImagePull")], False, "Pending"),
    ("Never", [running(NOW)], False, "Running"),
    ("Never", [_done(0)], False, "Succeeded"),
    ("Never", [_done(0), _done(3)], False, "Failed"),
    ("Never", [_done(0), running(NOW)], False, "Running"),
    ("OnFailure", [_done(1)], False, "Running"),
    ("OnFailure", [_done(0)], False, "Succeeded"),
    ("Always", [_done(0)], False, "Running"),
    ("Always", [_done(0)], True, "Succeeded"),
    ("Always", [_done(143)], True, "Failed"),
    ("Never", [], False, "Pending"),
])
def test_pod_phase_follows_get_phase(policy: str, states: list[dict[str, Any]], terminal: bool, phase: str) -> None:
    assert pod_phase(policy, [_entry(s) for s in states], terminal=terminal) == phase


def test_a_container_waiting_to_restart_counts_as_stopped() -> None:
    crash_looping = _entry(waiting("CrashLoopBackOff"), last=_done(1))
    assert pod_phase("Always", [crash_looping], terminal=False) == "Running"
    assert pod_phase("Never", [_entry(waiting("CrashLoopBackOff"))], terminal=False) == "Pending"


def test_exit_codes_of_signals() -> None:
    assert (exit_code_of(0), exit_code_of(3), exit_code_of(-15), exit_code_of(-9)) == (0, 3, 143, 137)


def test_terminated_reason_follows_the_exit_code() -> None:
    assert _done(0)["terminated"]["reason"] == "Completed"
    assert _done(2)["terminated"]["reason"] == "Error"
    assert terminated(128, started_at=None, finished_at=NOW, container_id="", reason="StartError")["terminated"][
        "reason"] == "StartError"


def test_container_status_of_a_running_and_of_a_waiting_container() -> None:
    run = container_status(name="m", image="fake_model:0.0.1", state=running(NOW), container_id="containerd://a")
    assert run["ready"] is True and run["started"] is True
    assert run["image"] == "docker.io/library/fake_model:0.0.1"
    assert run["imageID"].startswith("docker.io/library/fake_model@sha256:")
    assert run["containerID"] == "containerd://a"
    pulling = container_status(name="m", image="nope:1", state=waiting("ErrImagePull", "boom"), pulled=False)
    assert (pulling["ready"], pulling["started"], pulling["image"], pulling["imageID"]) == (False, False, "nope:1", "")
    assert "containerID" not in pulling
    assert pulling["lastState"] == {} and pulling["restartCount"] == 0


def _types(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_pod_status_has_what_a_kubelet_writes() -> None:
    status = pod_status(old_conditions=[], statuses=[_entry(running(NOW))], restart_policy="Never", start_time=NOW,
                        now=NOW, generation=1)
    assert status["phase"] == "Running"
    conditions = _types(status)
    assert list(conditions) == ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                "PodScheduled"]
    assert all(c["status"] == "True" for c in conditions.values())
    assert conditions["Ready"]["observedGeneration"] == 1 and conditions["Ready"]["lastProbeTime"] is None
    assert (status["hostIP"], status["podIP"], status["startTime"]) == ("127.0.0.1", "127.0.0.1", rfc3339(NOW))
    assert status["hostIPs"] == status["podIPs"] == [{"ip": "127.0.0.1"}]
    assert status["reason"] is None and status["message"] is None  # removes old ones under a merge patch


def test_pending_pod_is_not_ready_and_names_the_unready_containers() -> None:
    status = pod_status(old_conditions=[], statuses=[_entry(waiting("ContainerCreating"))], restart_policy="Never",
                        start_time=NOW, now=NOW)
    ready = _types(status)["Ready"]
    assert status["phase"] == "Pending"
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ContainersNotReady", "containers with unready status: [c]")


def test_finished_pod_conditions_say_pod_completed() -> None:
    status = pod_status(old_conditions=[], statuses=[_entry(_done(0))], restart_policy="Never", start_time=NOW,
                        now=NOW)
    conditions = _types(status)
    assert status["phase"] == "Succeeded"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "PodCompleted")
    assert "message" not in conditions["Ready"]
    assert conditions["PodReadyToStartContainers"]["status"] == "False"


def test_transition_times_are_kept_while_the_status_does_not_change() -> None:
    first = pod_status(old_conditions=[], statuses=[_entry(running(NOW))], restart_policy="Never", start_time=NOW,
                       now=NOW)
    later = pod_status(old_conditions=first["conditions"], statuses=[_entry(running(NOW))], restart_policy="Never",
                       start_time=NOW, now=NOW + 100)
    assert _types(later)["Ready"]["lastTransitionTime"] == rfc3339(NOW)
    ended = pod_status(old_conditions=first["conditions"], statuses=[_entry(_done(0))], restart_policy="Never",
                       start_time=NOW, now=NOW + 100)
    assert _types(ended)["Ready"]["lastTransitionTime"] == rfc3339(NOW + 100)
    assert _types(ended)["Initialized"]["lastTransitionTime"] == rfc3339(NOW)


def test_the_scheduled_condition_of_the_binding_is_kept() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": "T"}
    status = pod_status(old_conditions=[scheduled], statuses=[_entry(running(NOW))], restart_policy="Never",
                        start_time=NOW, now=NOW)
    assert _types(status)["PodScheduled"] == scheduled


def test_deadline_exceeded_forces_failed_with_reason_and_message() -> None:
    status = pod_status(old_conditions=[], statuses=[_entry(_done(0))], restart_policy="Never", start_time=NOW,
                        now=NOW, terminal=True, reason=DEADLINE_REASON, message=DEADLINE_MESSAGE)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")


def test_deadline_is_counted_from_the_start_time() -> None:
    assert deadline_at({"activeDeadlineSeconds": 5}, NOW) == NOW + 5
    assert deadline_at({}, NOW) is None
    assert deadline_at({"activeDeadlineSeconds": 5}, None) is None


def test_parse_time() -> None:
    assert parse_time(rfc3339(NOW)) == NOW
    assert parse_time("2023-11-14T22:13:20.250000Z") == NOW + 0.25
    assert parse_time(None) is None and parse_time("garbage") is None


def _pod(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "dots", "uid": "u", "generation": 1},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "img:1"}], **spec},
            "status": status or {"phase": "Pending", "qosClass": "BestEffort"}}


def test_status_only_running_status_is_running_and_ready() -> None:
    status = running_status(_pod(), now=NOW)
    assert status["phase"] == "Running"
    entry = status["containerStatuses"][0]
    assert entry["state"] == {"running": {"startedAt": rfc3339(NOW)}} and entry["ready"] is True
    assert entry["containerID"].startswith("containerd://")
    assert _types(status)["Ready"]["status"] == "True"


def test_killed_status_ends_running_containers() -> None:
    pod = _pod(running_status(_pod(), now=NOW))
    status = killed_status(pod, now=NOW + 5, exit_code=143, reason=DEADLINE_REASON, message=DEADLINE_MESSAGE)
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    state = status["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"], state["startedAt"]) == (143, "Error", rfc3339(NOW))
    assert status["startTime"] == rfc3339(NOW)
    assert _types(status)["Ready"]["reason"] == "PodCompleted"
    assert killed_status(_pod({"phase": "Succeeded"}), now=NOW, exit_code=143) is None


def test_killed_status_of_a_waiting_container_is_status_unknown() -> None:
    pod = _pod({"phase": "Pending", "startTime": rfc3339(NOW), "containerStatuses": [_entry(waiting("X"))]})
    status = killed_status(pod, now=NOW, exit_code=143)
    assert status is not None
    assert status["containerStatuses"][0]["state"] == lost(NOW)
    assert lost(NOW)["terminated"]["reason"] == LOST_REASON and lost(NOW)["terminated"]["exitCode"] == 137
    assert status["phase"] == "Failed"


def test_unschedulable_status_keeps_other_conditions() -> None:
    other = condition([], "Other", "True", now=NOW)
    status = unschedulable_status([other], now=NOW)
    assert status["phase"] == "Pending"
    scheduled = status["conditions"][-1]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == ("PodScheduled", "False",
                                                                            "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in scheduled["message"]
    assert status["conditions"][0] == other


def test_node_selector_matching() -> None:
    assert node_selector_matches({"nodeSelector": {"type": "worker"}})
    assert node_selector_matches({})
    assert not node_selector_matches({"nodeSelector": {"type": "gpu"}})


def test_objects() -> None:
    assert binding("p", "u")["target"] == {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}
    assert binding("p", "u")["metadata"] == {"name": "p", "uid": "u"}
    assert delete_options("u") == {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                   "preconditions": {"uid": "u"}}
    node = node_manifest(port=10250, now=NOW, kubelet_version="v1.36.3")
    assert node["metadata"]["labels"] == {"type": "worker", "kubernetes.io/hostname": NODE_NAME,
                                          "kubernetes.io/os": "linux"}
    assert node["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert node["status"]["allocatable"]["pods"] == "10000"


def test_messages() -> None:
    assert pull_backoff_message("x:1", "boom") == 'Back-off pulling image "x:1": ErrImagePull: boom'
    assert log_unavailable_message("c", "p", waiting("ImagePullBackOff")) == (
        'container "c" in pod "p" is waiting to start: trying and failing to pull image')
    assert log_unavailable_message("c", "p", {}) == 'container "c" in pod "p" is waiting to start: ContainerCreating'


@pytest.mark.parametrize(("image", "valid"), [
    ("fake_model:0.0.1", True),
    ("dots/fake-model:latest", True),
    ("ghcr.io/org/model@sha256:" + "a" * 64, True),
    ("localhost:5000/x", True),
    ("Upper/Case:1", False),
    ("has space:1", False),
    ("x:bad tag", False),
    ("a//b", False),
    ("", False),
])
def test_image_references(image: str, valid: bool) -> None:
    assert image_reference_is_valid(image) is valid


def test_log_tail_and_capacity() -> None:
    buffer = LogBuffer(capacity=20)
    buffer.append(b"one\ntwo\nthree\n")
    assert buffer.read(tail_lines=2) == b"two\nthree\n"
    assert buffer.read(tail_lines=10) == b"one\ntwo\nthree\n"
    buffer.append(b"four\nfive\n")
    assert buffer.read() == b"three\nfour\nfive\n"  # the oldest whole lines were dropped
    assert buffer.read(limit_bytes=5) == b"three"


def test_container_env_resolves_sources_in_the_kubelets_order() -> None:
    pod = {"metadata": {"name": "p", "namespace": "dots"}}
    fetched = {("configmaps", "shared"): {"data": {"A": "from-map", "B": "b"}},
               ("secrets", "values"): {"data": {"token": "c2VjcmV0"}}}  # base64 of "secret"
    container = {"envFrom": [{"configMapRef": {"name": "shared"}}],
                 "env": [{"name": "A", "value": "own $(B) $$(B)"},
                         {"name": "S", "valueFrom": {"secretKeyRef": {"name": "values", "key": "token"}}},
                         {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "O", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                                      "optional": True}}}]}
    assert resolve_container_env(fetched, pod, container) == {"B": "b", "A": "own b $(B)", "S": "secret", "N": "p"}
    with pytest.raises(ContainerConfigError, match='secret "gone" not found'):
        resolve_container_env({}, pod, {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone",
                                                                                            "key": "k"}}}]})
