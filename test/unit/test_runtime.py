"""The runtime's ordering and retry rules, in-process against the fakes of ``testing``.

Each test is one of the failures adversarial runs found in the runtime this
one replaced (kills at unlucky moments, API faults), and holds it impossible.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from model_services_orchestrator.kube_errors import Forbidden, ServerError, Unreachable
from model_services_orchestrator.logs import SecretRedactor
from model_services_orchestrator.messages import DeployModels, EnvironmentVariable, ModelConfiguration
from model_services_orchestrator.model_inventory import Delivery, Phase
from model_services_orchestrator.pod_specs import PodSettings, label_value, secret_env_names
from model_services_orchestrator.record_store import RecordStore
from model_services_orchestrator.runtime import Runtime
from model_services_orchestrator.testing import FakeBroker, FakeCluster, running, wait_until

SO = "dots-so"
IMAGE = "model:1"


def scenario(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 30))


def deploy(runtime: Runtime, simulation_id: str, *models: str, env: list[tuple[str, str]] | None = None,
           keep_logs_hours: float = 0.0) -> None:
    message = DeployModels(simulatorId="so01", keepLogsHours=keep_logs_hours, modelConfigurations=[
        ModelConfiguration(modelID=model, imageUrl=IMAGE, environmentVariables=[
            EnvironmentVariable(name=name, value=value) for name, value in (env or [])]) for model in models])
    runtime.receive(f"/lifecycle/{SO}/mso/{simulation_id}/DeployModels", message.SerializeToString())


def ready(runtime: Runtime, simulation_id: str, *models: str) -> None:
    for model in models:
        runtime.receive(f"/lifecycle/model/mso/{simulation_id}/{model}/ReadyForProcessing", b"")


def pod_of(cluster: FakeCluster, model: str) -> str:
    return next(name for name, pod in cluster.pods.items()
                if pod["metadata"]["annotations"]["dots.mso/model-id"] == model)


async def pods_created(cluster: FakeCluster, count: int) -> None:
    await wait_until(lambda: len(cluster.pods) == count, what=f"{count} pods")


async def recorded(cluster: FakeCluster, simulation_id: str) -> dict[str, Phase | bool | Delivery | None]:
    """The simulation as a restarted daemon would read it from the cluster, through the project's decoder."""
    store = RecordStore(api=cluster, so=SO, is_secret=secret_env_names("TOKEN|PASS"))
    for restored in await store.load(roll_back=False):
        if restored.simulation.simulation_id == simulation_id:
            simulation = restored.simulation
            found: dict[str, Phase | bool | Delivery | None] = {
                f"{model_id}.ready": model.ready for model_id, model in simulation.models.items()}
            found["models_ready"] = simulation.models_ready
            found["all_terminated"] = simulation.all_terminated
            return found
    return {}


def test_a_cleanup_that_fails_is_tried_again_until_it_is_done() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1")
            await pods_created(cluster, 1)
            cluster.fail("delete_object", Unreachable("connection dropped"), times=5)
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            await wait_until(lambda: not cluster.objects and not cluster.pods, what="the record and pods deleted")
            await wait_until(lambda: "sim" not in runtime.inventory.simulations, what="the simulation forgotten")
        assert cluster.calls.count("delete_object:configmaps") >= 5
    scenario(body)


def test_an_api_outage_delays_creation_and_never_fails_a_model_before_its_deadline() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("create_pod", ServerError("the control plane restarts", status=503), times=None)
        async with running(cluster, broker, model_start_timeout_seconds=30.0) as runtime:
            deploy(runtime, "sim", "m1", "m2")
            await wait_until(lambda: cluster.calls.count("create_pod") >= 6, what="creates tried again")
            assert broker.terminations("sim") == []
            cluster.heal()
            await pods_created(cluster, 2)
        assert broker.terminations("sim") == []
    scenario(body)


def test_an_api_outage_past_the_start_deadline_fails_the_model_with_minus_two() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("create_pod", Unreachable("connection refused"), times=None)
        async with running(cluster, broker, model_start_timeout_seconds=0.3) as runtime:
            deploy(runtime, "sim", "m1")
            await wait_until(lambda: broker.terminations("sim"), what="the model's answer")
            assert broker.terminations("sim") == [("m1", -2)]
            await wait_until(lambda: "AllModelsHaveTerminated" in broker.kinds("sim"), what="the end")
            error = next(payload for topic, payload in broker.published if topic.endswith("/m1/ErrorOccurred"))
            assert b"pod not created" in error
    scenario(body)


def test_a_secret_that_fails_to_save_is_saved_by_the_next_attempt_before_any_pod() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("put_object:secrets", ServerError("etcd timeout", status=500), times=2)
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1", env=[("DB_PASSWORD", "hunter22")])
            await pods_created(cluster, 1)
            secrets = [body for (kind, _), body in cluster.objects.items() if kind == "secrets"]
            held = [base64.b64decode(value) for secret in secrets for value in secret["data"].values()]
            assert b"hunter22" in held, "a Secret holds the value itself, saved before the pod"
            assert "hunter22" not in json.dumps(cluster.pods[pod_of(cluster, "m1")]), "the pod only refers to it"
            env = cluster.pods[pod_of(cluster, "m1")]["spec"]["containers"][0]["env"]
            reference = env[0]["valueFrom"]["secretKeyRef"]
            assert ("secrets", reference["name"]) in cluster.objects
            assert reference["key"] in cluster.objects[("secrets", reference["name"])]["data"]
    scenario(body)


def test_ten_thousand_models_with_a_token_each_fit_in_secrets_of_at_most_one_mebibyte() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        models = [f"model-{index:05d}" for index in range(10_000)]
        async with running(cluster, broker, creates_per_sync=2000) as runtime:
            message = DeployModels(simulatorId="so01", modelConfigurations=[
                ModelConfiguration(modelID=model, imageUrl=IMAGE, environmentVariables=[
                    EnvironmentVariable(name="API_TOKEN", value=f"token-{model}-" + "x" * 80)]) for model in models])
            runtime.receive(f"/lifecycle/{SO}/mso/sim/DeployModels", message.SerializeToString())
            await wait_until(lambda: len(cluster.pods) == len(models), timeout=25, what="every pod")
        values = [body for (kind, name), body in cluster.objects.items() if kind == "secrets" and ".v" in name]
        assert len(values) >= 2, "one Secret would be over 1 MiB"
        assert sum(len(secret["data"]) for secret in values) == len(models)
    scenario(body)


def test_killed_as_the_simulation_ends_the_restart_repeats_nothing() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1", "m2")
            await pods_created(cluster, 2)
            ready(runtime, "sim", "m1", "m2")
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            # The cleanup's first call is where the daemon dies.
            cluster.fail("delete_pods", ServerError("killed here", status=500), times=None)
            cluster.set_container(pod_of(cluster, "m2"), "terminated", exit_code=3)
            await wait_until(lambda: "delete_pods" in cluster.calls, what="the cleanup under way")
        cluster.heal()
        restarted = FakeBroker()
        async with running(cluster, restarted):
            await wait_until(lambda: not cluster.objects, what="the cleanup done by the restarted daemon")
        assert broker.kinds("sim").count("AllModelsHaveTerminated") == 1
        assert sorted(broker.terminations("sim")) == [("m1", 0), ("m2", 3)]
        assert restarted.published == [], "everything was said and confirmed before: nothing again"
    scenario(body)


def test_a_message_not_confirmed_by_the_broker_is_published_again_after_a_kill_and_then_never() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker(hold=True)
        async with running(cluster, broker, min_cleanup_delay_seconds=3600.0) as runtime:
            deploy(runtime, "sim", "m1", "m2")
            await pods_created(cluster, 2)
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            await wait_until(lambda: broker.terminations("sim"), what="m1's answer handed to the broker")
        # Killed before the broker's PUBCOMP: the message may not have reached the SO.
        second = FakeBroker(hold=True)
        async with running(cluster, second):
            await wait_until(lambda: second.terminations("sim") == [("m1", 0)], what="m1's answer again")
            second.confirm()
            await wait_until(lambda: cluster.objects and _reported(cluster), what="the confirmation saved")
        third = FakeBroker()
        async with running(cluster, third):
            await asyncio.sleep(0.2)
        assert third.terminations("sim") == [], "confirmed, saved: never again"
    scenario(body)


def _reported(cluster: FakeCluster) -> bool:
    parts = [body for (kind, name), body in cluster.objects.items() if kind == "configmaps" and ".p" in name]
    return any('["m1",5,[0,' in part["data"]["models.json"] for part in parts)


def test_a_ready_is_saved_by_the_next_sync_not_a_timer() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1", "m2")
            await pods_created(cluster, 2)
            ready(runtime, "sim", "m1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            await wait_until(lambda: runtime.inventory.simulations["sim"].version
                             == runtime.inventory.simulations["sim"].saved_version, what="the ready saved")
            assert loop.time() - started < 0.5
        assert (await recorded(cluster, "sim"))["m1.ready"] is True
        async with running(cluster, broker) as restarted:
            ready(restarted, "sim", "m2")
            await wait_until(lambda: "ModelsReady" in broker.kinds("sim"), what="ModelsReady")
        assert broker.kinds("sim").count("ModelsReady") == 1
    scenario(body)


def test_a_second_different_deploy_answers_the_models_it_adds_with_minus_one() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1")
            await pods_created(cluster, 1)
            deploy(runtime, "sim", "m1", "m2", "m3")
            await wait_until(lambda: len(broker.terminations("sim")) == 2, what="answers for m2 and m3")
            assert sorted(broker.terminations("sim")) == [("m2", -1), ("m3", -1)]
            assert len(cluster.pods) == 1
            ready(runtime, "sim", "m1")
            await wait_until(lambda: "ModelsReady" in broker.kinds("sim"), what="ModelsReady all the same")
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            await wait_until(lambda: "AllModelsHaveTerminated" in broker.kinds("sim"), what="the end")
        assert sorted(broker.terminations("sim")) == [("m1", 0), ("m2", -1), ("m3", -1)]
    scenario(body)


def test_a_pod_the_watch_shows_after_the_create_returned_leaves_nothing_in_flight() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            watcher, cluster.watcher = cluster.watcher, None  # the watch lags behind the create
            deploy(runtime, "sim", "m1")
            await pods_created(cluster, 1)
            model = runtime.inventory.simulations["sim"].models["m1"]
            await wait_until(lambda: model.phase is Phase.CREATED, what="the create's own answer taken")
            cluster.watcher = watcher
            cluster.set_container(pod_of(cluster, "m1"), "running")
            assert model.phase is Phase.CREATED and not runtime.inventory.simulations["sim"].to_create
            calls = cluster.calls.count("create_pod")
            await asyncio.sleep(0.1)
            assert cluster.calls.count("create_pod") == calls == 1
    scenario(body)


def test_secrets_of_a_simulation_are_forgotten_once_it_is_cleaned_up() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            redactor: SecretRedactor = runtime.redactor
            deploy(runtime, "sim", "m1", env=[("DB_PASSWORD", "only-this-simulation")])
            await pods_created(cluster, 1)
            assert redactor.redact("only-this-simulation") == "***"
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            await wait_until(lambda: "sim" not in runtime.inventory.simulations, what="the cleanup")
            assert redactor.redact("only-this-simulation") == "only-this-simulation"
            assert len(redactor) == 0
    scenario(body)


def test_a_restart_waits_out_an_api_server_that_is_not_answering_yet() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1")
            await pods_created(cluster, 1)
        cluster.fail("list_objects", ServerError("starting", status=503), times=4)
        async with running(cluster, FakeBroker()) as restarted:
            assert "sim" in restarted.inventory.simulations
    scenario(body)


def test_creates_refused_403_for_a_while_are_retried_and_no_model_fails() -> None:
    """kube-apiserver answers 403 for a few seconds after it restarts (its RBAC caches are empty)."""
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("create_pod", Forbidden('pods is forbidden: User "mso" cannot create resource "pods"',
                                             status=403), times=12)
        async with running(cluster, broker, model_start_timeout_seconds=30.0) as runtime:
            deploy(runtime, "sim", "m1", "m2", "m3")
            await pods_created(cluster, 3)
        assert broker.terminations("sim") == []
    scenario(body)


def test_creates_refused_403_until_the_start_deadline_fail_minus_two_with_the_reason() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("create_pod", Forbidden("pods is forbidden", status=403), times=None)
        async with running(cluster, broker, model_start_timeout_seconds=0.3) as runtime:
            deploy(runtime, "sim", "m1")
            await wait_until(lambda: "AllModelsHaveTerminated" in broker.kinds("sim"), what="the end")
        assert broker.terminations("sim") == [("m1", -2)]
        error = next(payload for topic, payload in broker.published if topic.endswith("/m1/ErrorOccurred"))
        assert b"pod not created: 403" in error and b"pods is forbidden" in error
    scenario(body)


def test_the_cleanup_of_a_simulation_leaves_the_pods_of_one_whose_label_value_is_the_same() -> None:
    """``a b`` is labelled ``a_b-<hash>``, itself a valid id that another simulation may have."""
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        other = label_value("a b")
        async with running(cluster, broker) as runtime:
            deploy(runtime, other, "m1", "m2")
            deploy(runtime, "a b", "m3")
            await pods_created(cluster, 3)
            cluster.set_container(pod_of(cluster, "m3"), "terminated", exit_code=0)
            await wait_until(lambda: "a b" not in runtime.inventory.simulations, what="a b cleaned up")
            assert sorted(pod["metadata"]["annotations"]["dots.mso/model-id"] for pod in cluster.pods.values()) == [
                "m1", "m2"]
            assert await recorded(cluster, other) != {}, "the other simulation's record is whole"
            assert broker.terminations(other) == []
    scenario(body)


def pods_of_so(cluster: FakeCluster, so: str, count: int) -> bool:
    labels = [pod["metadata"]["labels"] for pod in cluster.pods.values()]
    return sum(bool(pod_labels["dots.mso/simulator-name"] == so) for pod_labels in labels) == count


def test_two_sos_in_one_namespace_run_equal_ids() -> None:
    async def body() -> None:
        cluster = FakeCluster()
        brokers = {"so-a": FakeBroker(), "so-b": FakeBroker()}
        for so, broker in brokers.items():
            async with running(cluster, broker, so=so, pod_settings=PodSettings(so=so)) as runtime:
                message = DeployModels(simulatorId="so01", modelConfigurations=[
                    ModelConfiguration(modelID=model, imageUrl=IMAGE) for model in ("M1", "m1")])
                runtime.receive(f"/lifecycle/{so}/mso/sim/DeployModels", message.SerializeToString())
                await wait_until(partial(pods_of_so, cluster, so, 2), what=f"{so}'s pods")
        assert len(cluster.pods) == 4
        assert [broker.terminations("sim") for broker in brokers.values()] == [[], []]
    scenario(body)


def test_a_deploy_is_acknowledged_to_the_broker_only_once_its_record_is_saved() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        acked: list[str] = []
        cluster.fail("put_object:configmaps", ServerError("etcd timeout", status=500), times=3)
        async with running(cluster, broker) as runtime:
            message = DeployModels(simulatorId="so01", modelConfigurations=[ModelConfiguration(modelID="m1",
                                                                                               imageUrl=IMAGE)])
            runtime.receive(f"/lifecycle/{SO}/mso/sim/DeployModels", message.SerializeToString(),
                            lambda: acked.append("deploy"))
            runtime.receive(f"/healthcheck/{SO}/mso/i/PingHealthSOToMSO", b"", lambda: acked.append("ping"))
            await wait_until(lambda: cluster.calls.count("put_object:configmaps") >= 2, what="a failed save")
            assert acked == [], "not before the record holds it, and in the order they came"
            await wait_until(lambda: acked == ["deploy", "ping"], what="both acknowledged")
            assert await recorded(cluster, "sim") != {}
    scenario(body)


def test_a_first_save_cut_short_is_rolled_back_and_the_deploy_delivered_again_runs() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), FakeBroker()
        cluster.fail("put_object:secrets", ServerError("etcd timeout", status=500), times=None)
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1")
            await wait_until(lambda: cluster.calls.count("put_object:secrets") >= 2, what="the save cut short")
        cluster.heal()
        assert [name for kind, name in cluster.objects if kind == "configmaps"], "a head was written"
        async with running(cluster, broker) as runtime:
            assert "sim" not in runtime.inventory.simulations
            assert not cluster.objects, "rolled back, not left unreadable"
            deploy(runtime, "sim", "m1")  # the broker delivers it again: it was never acknowledged
            await pods_created(cluster, 1)
    scenario(body)


@dataclass
class SessionLosingBroker(FakeBroker):
    """Loses our session once after each message's first PUBREL: it receives the message again (PUBREC, as
    the outbox publishes it anew), and completes it at the second PUBREL."""

    _receive: dict[int, Callable[[], None]] = field(default_factory=dict)
    _lost: set[int] = field(default_factory=set)

    def send(self, packet_id: int, topic: str, payload: bytes, *, received: bool = False,
             on_received: Callable[[], None], on_delivered: Callable[[], None]) -> None:
        self._receive[packet_id] = on_received
        super().send(packet_id, topic, payload, received=received, on_received=on_received,
                     on_delivered=on_delivered)

    def release(self, packet_id: int) -> None:
        if packet_id not in self._lost:
            self._lost.add(packet_id)
            asyncio.get_running_loop().call_soon(self._receive[packet_id])
            return
        super().release(packet_id)


def test_a_message_received_again_whose_receipt_the_session_record_holds_is_released_again() -> None:
    async def body() -> None:
        cluster, broker = FakeCluster(), SessionLosingBroker()
        async with running(cluster, broker) as runtime:
            deploy(runtime, "sim", "m1")
            await pods_created(cluster, 1)
            cluster.set_container(pod_of(cluster, "m1"), "terminated", exit_code=0)
            # AllModelsHaveTerminated waits for the termination's delivery, which waits for its second PUBREL.
            await wait_until(lambda: "AllModelsHaveTerminated" in broker.kinds("sim"),
                             what="the termination delivered, then AllModelsHaveTerminated")
        assert broker.terminations("sim") == [("m1", 0)]
    scenario(body)


class _Quotas:
    """The namespace's ResourceQuotas as a consistent read returns them; ``used`` set by the test."""

    def __init__(self, hard: int) -> None:
        self.hard, self.used = hard, 0

    def items(self) -> list[dict[str, object]]:
        return [{"metadata": {"name": "q"}, "spec": {"hard": {"pods": str(self.hard)}},
                 "status": {"used": {"pods": str(self.used)}}}]

    async def list_quotas(self) -> list[dict[str, object]]:
        return self.items()


def test_admission_decides_again_when_admitted_pods_are_created_not_only_when_a_quota_changes() -> None:
    # kube-apiserver counts a pod in `used` before its create returns: a decision taken then counts it twice
    # (used, and still to create). Once the create is seen, the room is there: decided again without waiting
    # for a change of the quota.
    async def body() -> None:
        cluster, broker, quotas = FakeCluster(), FakeBroker(), _Quotas(hard=3)
        async with running(cluster, broker, quotas=quotas) as runtime:
            cluster.fail("create_pod", ServerError("busy", status=503), times=None)
            deploy(runtime, "a", "a1", "a2")
            await wait_until(lambda: runtime.inventory.simulations["a"].queued_at is None, what="a admitted")
            quotas.used = 2  # counted by the API server, not yet seen created by the daemon
            deploy(runtime, "b", "b1")
            await wait_until(lambda: runtime.inventory.simulations["b"].waiting_note, what="b waiting")
            cluster.heal()
            await wait_until(lambda: len(cluster.pods) == 3, what="a's pods, then b admitted and its pod")

    scenario(body)
