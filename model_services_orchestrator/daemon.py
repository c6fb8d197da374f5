"""The daemon: wires the adapters to the runtime, answers health questions, starts and stops.

Nothing here decides anything about simulations (that is the inventory) or
carries decisions out (that is the runtime): this module builds the
Kubernetes gateway, the record store, the pod watch, the MQTT session and
the HTTP endpoints from the settings, runs them as named long-lived tasks of
one TaskGroup (if one dies, the process exits non-zero and Kubernetes
restarts it), and shuts them down in an order that loses nothing decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from model_services_orchestrator import __version__
from model_services_orchestrator.admission import read_quota
from model_services_orchestrator.http_endpoints import serve_http
from model_services_orchestrator.k8s_api import (
    KubernetesGateway,
    PodWatcher,
    WatchEvent,
    WatchListed,
    WatchListing,
    build_api_client,
    credentials_source,
    measure_requests,
)
from model_services_orchestrator.kube_errors import TRANSIENT, Forbidden, KubeError, NotFound
from model_services_orchestrator.leader_election import LeaderElector
from model_services_orchestrator.leadership import LeadershipLostError
from model_services_orchestrator.logs import SecretRedactor, get_logger
from model_services_orchestrator.messages import codec
from model_services_orchestrator.metrics import RestClientStats
from model_services_orchestrator.model_registry import Registry, named_model_service
from model_services_orchestrator.mqtt_outbox import MqttOutboxes
from model_services_orchestrator.mqtt_session import (
    BrokerUnreachableError,
    LoginRefusedError,
    MqttSession,
    MqttSettings,
    Presence,
)
from model_services_orchestrator.pod_observation import observe_pod
from model_services_orchestrator.pod_specs import PodSettings, owned_pods_selector, secret_env_names
from model_services_orchestrator.prometheus_export import MetricsSnapshot, QueueSnapshot
from model_services_orchestrator.protocol import capabilities
from model_services_orchestrator.record_store import RecordStore
from model_services_orchestrator.runtime import PodChange, Runtime, RuntimeSettings
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.startup import (
    EXIT_CONFIGURATION,
    REFUSAL_CONFIRM_SECONDS,
    StartupError,
    broker_unreachable,
    kube_refusal,
)
from model_services_orchestrator.topics import OutgoingTopics, subscriptions

__all__ = ["Daemon", "run"]

_log = get_logger(__name__)
_SHUTDOWN_SECONDS = 8.0
_CHECK_RETRY_MAX_SECONDS = 10.0  # the most between two start-up checks of an API server that does not answer
_E = TypeVar("_E", bound=BaseException)
_WatchItem = WatchListing | WatchListed | list[WatchEvent]


class Daemon:
    """The running daemon for one SO: its adapters and its runtime."""

    def __init__(self, *, settings: Settings, redactor: SecretRedactor) -> None:
        self.settings = settings
        so = settings.so_name
        api_client = build_api_client(settings)
        # Every request to the API server, as client-go counts them (rest_client_*).
        self.api_requests = RestClientStats(host=urlsplit(api_client.configuration.host).netloc)
        measure_requests(api_client, self.api_requests)
        self.gateway = KubernetesGateway(
            api_client=api_client,
            namespace=settings.kubernetes_namespace,
            concurrency=settings.pod_create_concurrency,
            request_timeout=settings.kubernetes_request_timeout_seconds,
            qps=settings.kubernetes_qps,
            burst=settings.kubernetes_burst,
            # A sync that fails is tried again by the runtime: the gateway only smooths over blips.
            max_attempts=3,
        )
        # Two replicas may run: only the one holding the Lease acts (connects, publishes, writes).
        self.elector = LeaderElector(
            api_client=self.gateway.api_client, namespace=settings.kubernetes_namespace,
            name=settings.leader_lease_name, identity=settings.identity, timing=settings.election_timing,
            request_timeout=settings.kubernetes_request_timeout_seconds,
        ) if settings.leader_election else None
        may_act = self.elector.tenure.may_act if self.elector is not None else _always
        if self.elector is not None:
            self.gateway.fence = self.elector.tenure.check
        mqtt_settings = MqttSettings(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value(),
            client_id=settings.effective_mqtt_client_id,
            keepalive=settings.mqtt_keepalive_seconds,
            subscriptions=tuple(subscriptions(so)),
            publish_qos=settings.mqtt_publish_qos,
            max_inflight=settings.mqtt_max_inflight_messages,
            first_connect_timeout=settings.mqtt_connect_timeout_seconds,
        )
        # The lifecycle messages: their own session, under the packet ids their records hold.
        self.outbox = MqttOutboxes(settings=mqtt_settings, may_act=may_act)
        self.mqtt = MqttSession(
            # Subscriptions, and what is best effort (ErrorOccurred, UnhealthyModel) or volatile (pongs, pings).
            settings=mqtt_settings,
            # Through a method: the runtime, built next, publishes through this session.
            on_message=self._received,
            on_connected=self._connected,
            may_act=may_act,
            # MSOInfo, retained while this session is up: the session is the daemon's presence (it subscribes
            # and answers pings; the outbox sessions only publish). Only the leader connects, so a standby's
            # death empties nothing, and a successor's connection takes the session, and its Will, over.
            presence=Presence(OutgoingTopics(so).mso_info(), self._mso_info),
        )
        # The ModelServices of the namespace (the model registry), kept by a list+watch of their own.
        self.registry = Registry()
        self._registry_synced = asyncio.Event()
        self.runtime = Runtime(
            registry=self.registry,
            settings=RuntimeSettings(
                so=so,
                pod_settings=PodSettings(
                    so=so,
                    pull_image_secret_name=settings.kubernetes_pull_image_secret_name,
                    node_selector=settings.node_selector,
                    tolerations=tuple(settings.tolerations),
                    cpu_request=settings.model_cpu_request,
                    memory_request=settings.model_memory_request,
                    cpu_limit=settings.model_cpu_limit,
                    memory_limit=settings.model_memory_limit,
                    run_as_non_root=settings.model_run_as_non_root,
                    kueue_queue_name=settings.kueue_queue_name,
                ),
                secret_env_name_pattern=settings.secret_env_name_pattern,
                model_start_timeout_seconds=settings.model_start_timeout_seconds,
                min_cleanup_delay_seconds=settings.min_cleanup_delay_seconds,
                model_stop_grace_seconds=settings.model_stop_grace_seconds,
                model_finish_timeout_seconds=settings.model_finish_timeout_seconds,
                ready_settle_seconds=settings.ready_settle_seconds,
                max_keep_logs_hours=settings.max_keep_logs_hours,
                failed_log_tail_lines=settings.failed_log_tail_lines,
                report_failures_as_error_occurred=settings.report_failures_as_error_occurred,
                max_payload_bytes=settings.max_payload_bytes,
                model_healthcheck_interval_seconds=settings.model_healthcheck_interval_seconds,
                admission_timeout_seconds=settings.admission_timeout_seconds,
            ),
            pods=self.gateway,
            records=RecordStore(api=self.gateway, so=so,
                                is_secret=secret_env_names(settings.secret_env_name_pattern)),
            publisher=self.mqtt,
            outbox=self.outbox,
            redactor=redactor,
            # Admission by the namespace's ResourceQuota, unless turned off (QUOTA_ADMISSION=false).
            quotas=self.gateway if settings.admits_by_quota else None,
        )
        self.runtime.on_ping(self._answer_ping)
        self.watcher = self._watcher(self._watched, observe_pod, label_selector=owned_pods_selector(so))
        self.registry_watcher = self._watcher(self._registry_watched, named_model_service,
                                              list_call=self.gateway.watch_model_services, what="modelservice")
        # The namespace's ResourceQuotas, for admission: whether one applies, and when room may have come.
        self.quota_watcher = self._watcher(self._quotas_watched, read_quota, list_call=self.gateway.watch_quotas,
                                           what="resourcequota") if settings.admits_by_quota else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._standby = self.elector is not None  # until this replica takes the Lease

    def _watcher(self, handler: Callable[[_WatchItem], None], reduce: Callable[[dict[str, Any]], Any], *,
                 label_selector: str = "", list_call: Callable[..., Any] | None = None,
                 what: str = "pod") -> PodWatcher:
        """A list+watch of the namespace (our pods by default) whose items ``handler`` takes in the event loop."""
        return PodWatcher(gateway=self.gateway, label_selector=label_selector, deliver=self._in_loop(handler),
                          reduce=reduce, watch_timeout_seconds=self.settings.kubernetes_watch_timeout_seconds,
                          silence_seconds=self.settings.kubernetes_watch_silence_seconds, list_call=list_call,
                          what=what)

    def _mso_info(self) -> bytes:
        # Asked at each connection, which comes after start-up found whether the registry is served.
        admission = self.quota_watcher is not None or bool(self.settings.kueue_queue_name)
        return codec.encode_mso_info(__version__, capabilities(model_registry=self.registry.enabled is True,
                                                               admission=admission))

    def _received(self, topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        self.runtime.receive(topic, payload, ack)

    def _connected(self, session_present: bool) -> None:
        if not session_present and self.runtime.inventory.simulations:
            _log.warning("the broker came back without our session: what was sent to us while away is lost",
                         simulations=len(self.runtime.inventory.simulations),
                         broker_settings="persistence true, queue_qos0_messages true",
                         see="docs/operations.md#the-dots-broker")
        self.runtime.connected()

    # -- the watch, from its thread

    def _in_loop(self, handler: Callable[[_WatchItem], None]) -> Callable[[_WatchItem], None]:
        """A watch thread's callback that hands each item to ``handler`` in the event loop."""

        def deliver(item: _WatchItem) -> None:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(handler, item)

        return deliver

    def _quotas_watched(self, item: _WatchItem) -> None:
        if isinstance(item, WatchListed):
            self.runtime.quotas_listed(item.pods)
        elif not isinstance(item, WatchListing):
            self.runtime.quotas_changed((event.pod, event.type == "DELETED") for event in item)

    def _watched(self, item: _WatchItem) -> None:
        if isinstance(item, WatchListing):
            self.runtime.listing_started()
        elif isinstance(item, WatchListed):
            self.runtime.pods_listed(item.pods)
        else:
            self.runtime.pods_changed(PodChange(event.pod, gone=event.type == "DELETED")
                                      for event in item if event.pod is not None)

    def _registry_watched(self, item: _WatchItem) -> None:
        if isinstance(item, WatchListed):
            self.registry.listed(item.pods)
            # At start, and after the watch expired (410): rare.
            _log.info("model registry listed", model_services=len(self.registry))
            self._registry_synced.set()
        elif not isinstance(item, WatchListing):
            for event in item:
                name, service = event.pod
                self.registry.changed(name, service, deleted=event.type == "DELETED")
                # Rare, and what every later DeployModels resolves with: worth a line.
                _log.info("model service changed", name=name, change=event.type,
                          image=service.image if service is not None else None)

    async def _registry_available(self) -> bool:
        """Whether the API serves ModelServices to the daemon: the registry is off (one warning) when the CRD is
        not installed (404) or the Role does not grant them (403); no answer is waited out, for
        ``MODEL_REGISTRY_SYNC_TIMEOUT_SECONDS``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.model_registry_sync_timeout_seconds
        while True:
            try:
                await self.gateway.probe_model_services()
            except (NotFound, Forbidden) as error:
                self.registry.enabled = False
                _log.warning("model registry off: ModelServices are not served to the daemon",
                             status=error.status, detail=str(error)[:300],
                             fix="apply k8s_cluster_configuration/modelservice-crd.yaml and role.yaml",
                             answer="modelservice: images are answered FAILED -1; other images run as configured")
                return False
            except TRANSIENT as error:
                if loop.time() >= deadline:
                    raise
                _log.warning("model registry unreachable, retrying", error=type(error).__name__,
                             detail=str(error)[:300])
                await asyncio.sleep(1.0)
                continue
            self.registry.enabled = True
            return True

    async def _registry_sync(self) -> None:
        """Until the registry's first list arrived: no DeployModels is resolved before (MQTT starts after)."""
        try:
            async with asyncio.timeout(self.settings.model_registry_sync_timeout_seconds):
                await self._registry_synced.wait()
        except TimeoutError:
            raise RuntimeError(f"the ModelService list did not arrive within "
                               f"{self.settings.model_registry_sync_timeout_seconds:g} s "
                               "(MODEL_REGISTRY_SYNC_TIMEOUT_SECONDS)") from None

    # -- health

    def ready_reasons(self) -> list[str]:
        """Why the daemon is not fully working right now; empty when it is (a standby is: it waits to lead)."""
        reasons: list[str] = []
        if self._standby:
            return reasons
        if not self.gateway.reachable:
            reasons.append("the Kubernetes API is unreachable")
        if not self.watcher.in_sync:
            reasons.append("the pod watch is not in sync")
        if self.registry.enabled and not self.registry_watcher.in_sync:
            reasons.append("the ModelService watch is not in sync")
        if not self.mqtt.connected:
            reasons.append("the MQTT broker session is not established")
        if not self.outbox.connected:
            reasons.append("the MQTT session of the lifecycle messages is not established")
        return reasons

    def _answer_ping(self, ping: codec.HealthPing) -> None:
        reasons = self.ready_reasons()
        known = self.runtime.inventory.simulations
        unknown = [simulation for simulation in ping.active_simulations if simulation not in known]
        if unknown:
            reasons.append("unknown simulations: " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
        self.mqtt.publish_volatile(self.runtime.topics.pong_health(ping.instance_id), codec.encode_pong(reasons))

    def metrics(self) -> MetricsSnapshot:
        runtime, queue = self.runtime, self.runtime.queue
        api_requests, api_durations = self.api_requests.snapshot()
        return MetricsSnapshot(
            active_simulations=len(runtime.inventory.simulations),
            simulations_by_phase=runtime.simulations_by_phase(),
            models_by_state=runtime.models_by_state(),
            pods_created=runtime.pods_created,
            models_restarted=runtime.models_restarted,
            pod_create_latency=runtime.create_latency.snapshot(),
            queue=QueueSnapshot(
                depth=queue.depth(), adds=queue.adds, retries=queue.retries,
                queue_duration=queue.queue_duration.snapshot(), work_duration=queue.work_duration.snapshot(),
                unfinished_work_seconds=queue.unfinished_work_seconds(),
                longest_running_processor_seconds=queue.longest_running_processor_seconds(),
                active_workers=queue.processing(), max_workers=runtime.settings.workers),
            reconciles=dict(runtime.reconciles.results),
            reconcile_time=runtime.reconciles.time.snapshot(),
            api_host=self.api_requests.host,
            api_requests=api_requests,
            api_durations=api_durations,
            lifecycle_messages=dict(runtime.lifecycle.messages),
            model_failures=dict(runtime.lifecycle.failures),
            model_start=runtime.lifecycle.model_start.snapshot(),
            models_ready_latency=runtime.lifecycle.models_ready.snapshot(),
            mqtt_connected={"subscriber": self.mqtt.connected, "outbox": self.outbox.connected},
            outbox_depth={"subscriber": self.mqtt.pending(), "outbox": self.outbox.pending()},
            api_errors=dict(self.gateway.api_errors),
            mqtt_reconnects=self.mqtt.reconnects + self.outbox.reconnects,
            messages_received=dict(runtime.messages_received),
            messages_sent=_added(self.mqtt.sent_by_type, self.outbox.sent_by_type),
            watch_restarts=self.watcher.restarts,
            watch_relists=self.watcher.relists,
            leader=None if self.elector is None else (self.elector.name, self.elector.leading),
            admission_queue_depth=len(runtime.inventory.queued()),
            admission_wait=runtime.admission_wait.snapshot(),
        )

    # -- life

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        # What exists now (the libraries' modules, classes and clients) lives as long as the daemon:
        # full collections need not scan it again, which shortens their pauses.
        gc.freeze()
        try:
            async with asyncio.TaskGroup() as group:
                stopping = group.create_task(self._stopping.wait(), name="stop-signal")
                tasks: set[asyncio.Task[Any]] = {stopping}
                if self.settings.http_port:
                    tasks.add(group.create_task(serve_http(
                        host=self.settings.http_host, port=self.settings.http_port, ready_reasons=self.ready_reasons,
                        snapshot=self.metrics), name="http"))
                # A token or namespace that cannot work ends the daemon here (StartupError), before a standby
                # waits for a Lease it could never use.
                checked = await self._unless_stopped(group, tasks, self._check_kubernetes(), "kubernetes-check")
                if not checked or (self.elector is not None and not await self._lead(group, tasks)):
                    for task in tasks:
                        task.cancel()
                    return
                await self._check_quota_access()
                await self.runtime.restore()
                if not await self._watch_registry_and_quotas(group, tasks):
                    for task in tasks:
                        task.cancel()
                    return
                tasks |= {
                    group.create_task(_in_daemon_thread(self.watcher.run, "pod-watch"), name="pod-watch"),
                    group.create_task(self.runtime.run(), name="runtime"),
                    group.create_task(self.mqtt.run(), name="mqtt"),
                    group.create_task(self.outbox.run(), name="mqtt-outbox"),
                }
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if stopping not in done:
                    for task in done:
                        task.result()
                    raise RuntimeError(f"long-lived task ended: {[task.get_name() for task in done]}")
                await self._shutdown()
                if self.elector is not None:
                    await self.elector.release()
                for task in tasks:
                    task.cancel()
        finally:
            self.watcher.stop()
            self.registry_watcher.stop()
            if self.quota_watcher is not None:
                self.quota_watcher.stop()
            self.runtime.queue.close()
            self.gateway.close()
            if self.elector is not None:
                self.elector.close()

    async def _watch_registry_and_quotas(self, group: asyncio.TaskGroup, tasks: set[asyncio.Task[Any]]) -> bool:
        """Start the watches of ModelServices (waiting for their first list: no DeployModels is resolved
        before) and of ResourceQuotas (admission); False when the daemon was stopped meanwhile."""
        if await self._registry_available():
            tasks.add(group.create_task(_in_daemon_thread(self.registry_watcher.run, "modelservice-watch"),
                                        name="modelservice-watch"))
            if not await self._unless_stopped(group, tasks, self._registry_sync(), "model-registry-sync"):
                return False
        if self.quota_watcher is not None:
            tasks.add(group.create_task(_in_daemon_thread(self.quota_watcher.run, "quota-watch"), name="quota-watch"))
        return True

    async def _check_kubernetes(self) -> None:
        """The first calls: raise ``StartupError`` when the token or the namespace cannot work.

        A refusal (401, 403, a missing namespace) counts only once it has lasted ``REFUSAL_CONFIRM_SECONDS``
        (kube-apiserver refuses for a moment after it restarts); no answer at all is waited out, as always;
        any other answer proves nothing about the settings and the daemon goes on.
        """
        loop = asyncio.get_running_loop()
        server = str(self.gateway.api_client.configuration.host)
        credentials = credentials_source(self.settings)
        refused_since: float | None = None
        delay = 0.5
        while True:
            try:
                await self.gateway.check_access(owned_pods_selector(self.settings.so_name))
            except KubeError as error:
                failure = kube_refusal(error, namespace=self.gateway.namespace, credentials=credentials,
                                       server=server)
                if failure is None and not isinstance(error, TRANSIENT):
                    # Proves nothing about the settings (a webhook that cannot take a dry run, say): go on, and
                    # let the calls that matter say what they find.
                    _log.warning("kubernetes start-up check inconclusive, going on", call=error.what,
                                 status=error.status, error=type(error).__name__, detail=str(error)[:300])
                    return
                if failure is None:
                    refused_since = None
                    _log.warning("kubernetes call failed, retrying", call=error.what, status=error.status or None,
                                 error=type(error).__name__, detail=str(error)[:300], delay_seconds=round(delay, 2))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _CHECK_RETRY_MAX_SECONDS)
                    continue
                refused_since = loop.time() if refused_since is None else refused_since
                if loop.time() - refused_since >= REFUSAL_CONFIRM_SECONDS:
                    raise failure from error
                _log.info("kubernetes refused the first calls, asking again", call=error.what, status=error.status,
                          give_up_in_seconds=round(REFUSAL_CONFIRM_SECONDS - (loop.time() - refused_since), 1))
                await asyncio.sleep(1.0)
                continue
            if refused_since is not None:
                _log.info("kubernetes accepted the first calls after refusing them")
            return

    async def _check_quota_access(self) -> None:
        """Admission needs to read the namespace's ResourceQuotas: a Role without that turns it off, loudly
        (the deployment's Role from before admission), rather than queueing simulations for ever."""
        if self.quota_watcher is None:
            return
        try:
            await self.gateway.list_quotas()
        except Forbidden as error:
            _log.error("ResourceQuotas may not be read: admission by the namespace's quota is off",
                       detail=str(error)[:300], grant="get, list, watch on resourcequotas (k8s_cluster_configuration/"
                       "role.yaml)", setting="QUOTA_ADMISSION=false says it on purpose")
            self.quota_watcher = None
            self.runtime.quota_api = None
        except KubeError as error:
            # Any other failure passes: the watch lists until it works, and simulations wait for it meanwhile.
            _log.warning("ResourceQuotas not read at start, the watch goes on trying", error=type(error).__name__,
                         detail=str(error)[:300])

    async def _unless_stopped(self, group: asyncio.TaskGroup, tasks: set[asyncio.Task[Any]],
                              step: Coroutine[Any, Any, None], name: str) -> bool:
        """Run ``step`` to its end; False if one of ``tasks`` ends first (the stop signal, a failed HTTP server)."""
        running = group.create_task(step, name=name)
        done, _ = await asyncio.wait({*tasks, running}, return_when=asyncio.FIRST_COMPLETED)
        if running not in done:
            running.cancel()
            for task in done:
                task.result()  # a failed HTTP server fails the daemon; a stop signal returns
            return False
        running.result()
        return True

    async def _lead(self, group: asyncio.TaskGroup, tasks: set[asyncio.Task[Any]]) -> bool:
        """Stand by until this replica takes the Lease, then keep it (a task of ``tasks``); False if stopped first."""
        assert self.elector is not None
        if not await self._unless_stopped(group, tasks, self.elector.acquire(), "leader-election"):
            return False
        # What this replica writes says which leader wrote it: an older leader's writes are refused.
        self.gateway.epoch = self.elector.tenure.epoch
        self._standby = False
        tasks.add(group.create_task(self.elector.keep(), name="leader-lease"))
        return True

    async def _shutdown(self) -> None:
        """Save what was decided and publish it; what is left is resumed from the records by the next daemon."""
        _log.info("shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_SECONDS
        self.watcher.stop()
        self.registry_watcher.stop()
        await self.runtime.drain(max(0.1, deadline - loop.time() - 2.0))
        # Anything arriving from now on would not be saved: it stays queued at the broker, or is lost
        # if it is already on its way to us (a window of a few milliseconds; docs/guarantees.md).
        self.mqtt.stop_receiving()
        await self.runtime.drain(max(0.1, deadline - loop.time() - 1.5))
        if self.outbox.connected:
            await self.outbox.flush(max(0.0, deadline - loop.time() - 0.7))
        if self.mqtt.connected:
            await self.mqtt.flush(max(0.0, deadline - loop.time() - 0.5))
        # Confirmations that came in meanwhile are saved, so the next daemon does not publish them again.
        await self.runtime.drain(max(0.1, deadline - loop.time()))
        # No daemon once this one is gone: empty MSOInfo before the Lease is handed back, so that it can never
        # empty a successor's.
        await self.mqtt.withdraw_presence(max(0.2, deadline - loop.time()))


def _always() -> bool:
    return True


def _added(*counts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for key, value in each.items():
            total[key] = total.get(key, 0) + value
    return total


async def _in_daemon_thread(body: Callable[[], None], name: str) -> None:
    """Run a blocking body in its own daemon thread and wait for it.

    Unlike asyncio.to_thread, a thread stuck in a blocking read can never keep
    the process from exiting: the loop's default executor is joined at exit.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if finished.done():
            return
        if error is None:
            finished.set_result(None)
        else:
            finished.set_exception(error)

    def thread_body() -> None:
        error: BaseException | None = None
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task, which decides)
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop may already be closed at exit
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=thread_body, name=name, daemon=True).start()
    await finished


def _first(error: BaseException, kind: type[_E]) -> _E | None:
    """``error`` itself or the first of its kind among the errors it groups (a TaskGroup's)."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _first(inner, kind)) is not None:
                return found
    return None


def run(settings: Settings, redactor: SecretRedactor) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit code to end the process with."""

    async def main() -> None:
        daemon = Daemon(settings=settings, redactor=redactor)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        await daemon.run()

    started = time.monotonic()
    try:
        asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 (the process's last word: say what broke, exit non-zero)
        failure = _first(exc, StartupError)
        if failure is None and (unreachable := _first(exc, BrokerUnreachableError)) is not None:
            failure = broker_unreachable(host=unreachable.host, port=unreachable.port,
                                         waited_seconds=unreachable.waited_seconds, last_error=unreachable.last_error)
        if failure is not None:
            # A setting to fix, not a bug: one line that names it, no traceback.
            _log.critical("cannot start", settings=list(failure.settings), detail=str(failure))
            return EXIT_CONFIGURATION
        if (lost := _first(exc, LeadershipLostError)) is not None:
            # Another replica leads now: exit at once, and come back (restarted) as a standby.
            _log.error("leadership lost: stopping", detail=str(lost), ran_seconds=round(time.monotonic() - started, 1))
            return 1
        if (refused := _first(exc, LoginRefusedError)) is not None:
            # An operator's mistake, not a bug: one line that says what to fix, no traceback.
            _log.critical("mqtt login refused", detail=str(refused))
            return 1
        _log.critical("daemon failed", error=type(exc).__name__, detail=str(exc)[:500], exc_info=True,
                      ran_seconds=round(time.monotonic() - started, 1))
        return 1
    _log.info("stopped")
    return 0
