"""The gateway against the API server: what it retries, what it returns, what it raises.

Every failure reaches the caller as a ``kube_errors`` class (never an ``ApiException`` or a urllib3
error); the transient ones only after the retries. The gateway talks as the daemon does: on the real
control plane with the daemon's RBAC-limited token, through the fault proxy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kubernetes.client
import pytest

from model_services_orchestrator.k8s_api import CreateOutcome, KubernetesGateway, PodWatcher, WatchListed
from model_services_orchestrator.kube_errors import Forbidden, ServerError, Unreachable
from model_services_orchestrator.leadership import ANNOTATION_EPOCH, LeadershipLostError
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import NAMESPACE

_T = TypeVar("_T")

MARKS = {"labels": {"app.kubernetes.io/managed-by": "gateway-test"}, "annotations": {"test/model": "m1"}}
OTHER_MARKS = {"labels": {"app.kubernetes.io/managed-by": "gateway-test"}, "annotations": {"test/model": "m2"}}


@pytest.fixture
def kube(status_kube: ControlPlane) -> ControlPlane:
    """Any kubelet will do: these tests are about the API server's answers."""
    return status_kube


def make_gateway(kube: ControlPlane, **options: Any) -> KubernetesGateway:
    configuration = kube.daemon_client_configuration()
    configuration.retries = 0  # as build_api_client: the retries are the gateway's
    settings: dict[str, Any] = {"namespace": NAMESPACE, "concurrency": 4, "request_timeout": 5.0, "qps": 1000.0,
                                "burst": 1000, "backoff_base": 0.01, "backoff_cap": 0.1, **options}
    return KubernetesGateway(api_client=kubernetes.client.ApiClient(configuration), **settings)


def run(kube: ControlPlane, use: Callable[[KubernetesGateway], Awaitable[_T]], **options: Any) -> _T:
    gateway = make_gateway(kube, **options)

    async def main() -> _T:
        return await use(gateway)

    try:
        return asyncio.run(main())
    finally:
        gateway.close()
        gateway.api_client.close()


def pod(name: str, marks: dict[str, dict[str, str]] = MARKS, image: str = "fake_model:0.0.1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": dict(marks["labels"]), "annotations": dict(marks["annotations"])},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "model", "image": image}]}}


def test_a_503_twice_then_success_is_retried(kube: ControlPlane) -> None:
    kube.inject_fault(503, count=2, methods=["POST"], path_contains="/pods")

    async def use(gateway: KubernetesGateway) -> tuple[CreateOutcome, dict[int, int]]:
        return await gateway.create_pod(pod("m1"), MARKS), dict(gateway.api_errors)

    outcome, errors = run(kube, use)
    assert outcome == CreateOutcome(created=True, status=201)
    assert errors == {503: 2}
    assert kube.request_counts()["by_status"] == {"201": 1, "503": 2}


def test_an_invalid_pod_is_an_outcome_not_an_error(kube: ControlPlane) -> None:
    async def use(gateway: KubernetesGateway) -> tuple[CreateOutcome, dict[int, int]]:
        return await gateway.create_pod(pod("m1", image=""), MARKS), dict(gateway.api_errors)

    outcome, errors = run(kube, use)
    assert (outcome.created, outcome.status, outcome.name_taken) == (False, 422, False)
    assert 'Pod "m1" is invalid' in outcome.reason and "spec.containers[0].image" in outcome.reason
    assert errors == {422: 1}, "a permanent rejection is not retried"


def test_a_persistent_503_raises_server_error_after_max_attempts(kube: ControlPlane) -> None:
    kube.inject_fault(503, seconds=60, methods=["POST"], path_contains="/pods")

    async def use(gateway: KubernetesGateway) -> None:
        with pytest.raises(ServerError) as error:
            await gateway.create_pod(pod("m1"), MARKS)
        assert error.value.status == 503
        assert str(error.value).startswith("create pod: 503 ServiceUnavailable")
        assert gateway.api_errors == {503: 2}
        assert gateway.reachable, "an answer, even a 503, means the server is reachable"

    run(kube, use, max_attempts=2)
    assert kube.request_counts()["by_status"] == {"503": 2}


def test_a_stopped_server_is_unreachable_until_it_is_back(kube: ControlPlane) -> None:
    async def use(gateway: KubernetesGateway) -> None:
        assert await gateway.read_pod("m1") is None
        kube.stop()
        with pytest.raises(Unreachable) as error:
            await gateway.read_pod("m1")
        assert error.value.status == 0
        assert "read pod: API server unreachable" in str(error.value)
        assert not gateway.reachable
        assert gateway.api_errors == {0: 3}, "the 404 of a pod not there is an answer, not an error"
        kube.start()
        assert await gateway.list_objects("configmaps", "app=none") == []
        assert gateway.reachable

    run(kube, use, max_attempts=3)


def test_rbac_refusal_is_forbidden_at_once_and_rejects_a_create(kube: ControlPlane) -> None:
    kube.inject_fault(403, count=2, path_contains="/pods")

    async def use(gateway: KubernetesGateway) -> None:
        with pytest.raises(Forbidden):
            await gateway.read_pod("m1")
        outcome = await gateway.create_pod(pod("m1"), MARKS)
        assert (outcome.created, outcome.status) == (False, 403)
        assert gateway.api_errors == {403: 2}

    run(kube, use)


def test_what_the_daemons_role_does_not_allow_is_forbidden_by_the_real_rbac(kube: ControlPlane) -> None:
    # The Role is the namespace's only (k8s_cluster_configuration/role.yaml): elsewhere nothing is allowed.
    async def use(gateway: KubernetesGateway) -> None:
        with pytest.raises(Forbidden) as error:
            await gateway.read_pod("m1")
        assert "cannot get resource \"pods\"" in str(error.value) and "model-services-orchestrator" in str(error.value)
        outcome = await gateway.create_pod(pod("m1"), MARKS)
        assert (outcome.created, outcome.status) == (False, 403)
        with pytest.raises(Forbidden):
            await gateway.list_objects("configmaps", "app=none")
        assert gateway.api_errors == {403: 3}, "a refusal is not retried"

    run(kube, use, namespace="default")


def test_the_return_contracts_of_the_pod_and_object_calls(kube: ControlPlane) -> None:
    async def use(gateway: KubernetesGateway) -> None:
        assert await gateway.create_pod(pod("m1"), MARKS) == CreateOutcome(created=True, status=201)
        # A create retried after it reached the server: ours, so created.
        assert await gateway.create_pod(pod("m1"), MARKS) == CreateOutcome(created=True, status=409)
        taken = await gateway.create_pod(pod("m1", OTHER_MARKS), OTHER_MARKS)
        assert (taken.created, taken.status, taken.name_taken) == (False, 409, True)

        assert not await gateway.stop_pod("m1", OTHER_MARKS), "the patch's test fails (422): not ours"
        assert not await gateway.stop_pod("absent", MARKS)
        assert await gateway.stop_pod("m1", MARKS)
        stopped = await gateway.read_pod("m1")
        assert stopped is not None and stopped["spec"]["activeDeadlineSeconds"] == 1

        assert not await gateway.delete_own_pod("m1", OTHER_MARKS)
        assert not await gateway.delete_own_pod("absent", MARKS)
        assert await gateway.delete_own_pod("m1", MARKS)

        record = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "rec", "labels": {"app": "gateway-test"}}, "data": {"k": "1"}}
        assert not await gateway.replace_object("configmaps", record), "gone: False, the caller creates it"
        created = await gateway.put_object("configmaps", record)
        assert created["data"] == {"k": "1"}
        replaced = await gateway.put_object("configmaps", {**record, "data": {"k": "2"}})
        assert replaced["data"] == {"k": "2"}
        assert await gateway.replace_object("configmaps", {**record, "data": {"k": "3"}})
        listed = await gateway.list_objects("configmaps", "app=gateway-test")
        assert [item["data"] for item in listed] == [{"k": "3"}]
        await gateway.delete_object("configmaps", "rec")
        await gateway.delete_object("configmaps", "rec")  # already gone: fine
        await gateway.delete_pods("app.kubernetes.io/managed-by=gateway-test")

    run(kube, use)


def test_a_writer_that_is_no_longer_the_leader_is_fenced_off(kube: ControlPlane) -> None:
    plane = kube  # the admin's requests: another writer
    records = f"/api/v1/namespaces/{NAMESPACE}/configmaps"

    def record(name: str, value: str, epoch: int | None = None) -> dict[str, Any]:
        annotations = {} if epoch is None else {ANNOTATION_EPOCH: str(epoch)}
        return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": value}, "metadata": {
            "name": name, "labels": {"app": "gateway-test"}, "annotations": annotations}}

    async def use(gateway: KubernetesGateway) -> None:
        gateway.epoch = 2
        created = await gateway.put_object("configmaps", record("rec", "1"))
        assert created["metadata"]["annotations"] == {ANNOTATION_EPOCH: "2"}
        assert await gateway.replace_object("configmaps", record("rec", "2"))
        # A later leader writes the record: this gateway's next replace, and its delete, meet a newer version.
        plane.request("PUT", f"{records}/rec", record("rec", "theirs", epoch=3))
        with pytest.raises(LeadershipLostError):
            await gateway.replace_object("configmaps", record("rec", "mine"))
        with pytest.raises(LeadershipLostError):
            await gateway.delete_object("configmaps", "rec")
        assert plane.request("GET", f"{records}/rec")["data"] == {"k": "theirs"}, "nothing of ours went through"
        # An object this gateway never saw, written by a later leader, is not taken over by a create.
        plane.request("POST", records, record("other", "theirs", epoch=3))
        with pytest.raises(LeadershipLostError):
            await gateway.put_object("configmaps", record("other", "mine"))
        # One an earlier leader wrote is.
        plane.request("POST", records, record("older", "theirs", epoch=1))
        assert (await gateway.put_object("configmaps", record("older", "mine")))["data"] == {"k": "mine"}
        # Past its renew deadline, nothing leaves; reads still do.
        def lost() -> None:
            raise LeadershipLostError("not the leader")
        gateway.fence = lost
        with pytest.raises(LeadershipLostError):
            await gateway.create_pod(pod("m1"), MARKS)
        assert await gateway.read_pod("m1") is None

    run(kube, use)


def test_the_watch_lists_again_after_410_gone(kube: ControlPlane) -> None:
    gateway = make_gateway(kube)
    delivered: list[Any] = []
    watcher = PodWatcher(gateway=gateway, label_selector="app=none", deliver=delivered.append,
                         reduce=lambda item: item, watch_timeout_seconds=300, silence_seconds=60)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while watcher.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.relists == 1
        kube.expire_watches_with_410()  # the watch ends; resumed from its resourceVersion, it gets 410 Expired
        deadline = time.monotonic() + 20
        while watcher.relists < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.relists == 2, "Gone made the watcher list again"
        assert sum(isinstance(item, WatchListed) for item in delivered) == 2
    finally:
        watcher.stop()
        thread.join(5)
        gateway.close()
        gateway.api_client.close()
    assert not thread.is_alive()
