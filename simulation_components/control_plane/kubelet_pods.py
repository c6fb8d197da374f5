"""The pods the control-plane kubelet runs: one ``PodWorker`` per pod bound to the node, one ``ContainerRun``
per container, and the status writes, deadline, termination and final delete that go with them.

Process mode: each container runs as in ``kubelet_containers.py``; the pod status is computed from their
states and written (coalesced: the newest state wins) as a merge patch of ``pods/status``. Status-only
mode: nothing runs; a pod whose images are all runnable is written Running once and from then on its
status in the API is the truth (whoever patches it); otherwise it goes through the same steps as in process
mode with "running" containers that are only a state.

Termination (``metadata.deletionTimestamp``, or ``spec.activeDeadlineSeconds`` counted from
``status.startTime``): SIGTERM, SIGKILL at the end of the grace period (``deletionGracePeriodSeconds``,
``terminationGracePeriodSeconds`` for the deadline), then one status write with the terminal phase (the pod
is never reported terminal while a process still runs), then for a deletion the final
``DELETE gracePeriodSeconds=0`` with a uid precondition, as the real kubelet's status manager does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from .images import image_reference_is_valid, pull_error
from .kubelet_api import ApiError
from .kubelet_containers import ContainerRun, KubeletContext
from .kubelet_logs import LogBuffer, LogUnavailableError
from .kubelet_status import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    Obj,
    deadline_at,
    delete_options,
    killed_status,
    log_unavailable_message,
    lost,
    parse_time,
    pod_status,
    running,
    running_status,
    terminated,
)

__all__ = ["PodWorker"]

log = logging.getLogger(__name__)

_MERGE_PATCH = "application/merge-patch+json"
_SIGTERM_EXIT = 143  # what a container that exits on SIGTERM reports; status-only "containers" end so
_DEFAULT_TERMINATION_GRACE = 30


def _generation(pod: Mapping[str, Any]) -> int:
    generation = (pod.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else 0


def _resource_version(pod: Mapping[str, Any]) -> int:
    try:
        return int((pod.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class PodWorker:
    """A pod bound to this node, from its start to its final delete."""

    def __init__(self, context: KubeletContext, pod: Obj) -> None:
        self.context = context
        metadata = pod["metadata"]
        self.uid = str(metadata["uid"])
        self.name = str(metadata["name"])
        self.namespace = str(metadata["namespace"])
        self.pod = pod  # the newest version seen (watch events and our own writes' answers)
        spec = pod.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy", "Always"))
        self.containers: list[ContainerRun] = []
        self.api_truth = False  # status-only, all images runnable: the status in the API is the truth
        self.started = False
        self.start_time: float | None = None
        self.conditions: list[Obj] = list((pod.get("status") or {}).get("conditions") or [])
        self.terminating = False  # the kubelet stops it (deleted, or past its deadline)
        self.finished = False  # terminal: every container has stopped for good
        self.delete_requested = False
        self.reason: str | None = None
        self.message: str | None = None
        self.kill_at = math.inf  # monotonic time of the SIGKILL
        self.gone = False  # deleted, replaced or the kubelet stops: no more writes
        self._deadline: asyncio.TimerHandle | None = None
        self._generation = _generation(pod)  # the spec generation the last status write reported
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._deleting = False
        self._status_only_logs: dict[str, LogBuffer] = {}

    @property
    def path(self) -> str:
        """The pod's API path."""
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, adopted: bool = False) -> None:
        """Begin running the pod (after the binding, or when found already bound to the node)."""
        if self.started or self.gone:
            return
        self.started = True
        if self.terminating:  # deleted while it was being bound: nothing to start
            self._begin_stop()
            return
        spec = self.pod.get("spec") or {}
        status = self.pod.get("status") or {}
        settings = self.context.settings
        previous = {str(s.get("name")): s for s in status.get("containerStatuses") or []} if adopted else {}
        if settings.mode == "status-only" and self._runnable_at_once(spec):
            self.api_truth = True
            all_running = bool(previous) and all("running" in (s.get("state") or {}) for s in previous.values())
            if adopted and status.get("phase") == "Running" and all_running:
                self.start_time = parse_time(status.get("startTime")) or time.time()
            else:
                self.start_time = time.time()
                self._writer = self.context.spawn(self._write_running(), f"status of {self.namespace}/{self.name}")
        else:
            self.start_time = parse_time(status.get("startTime")) if adopted else None
            self.start_time = self.start_time or time.time()
            self.containers = [ContainerRun(self, c, previous.get(str(c["name"])))
                               for c in spec.get("containers") or []]
            for container in self.containers:
                container.task = self.context.spawn(container.run(), f"container {self.name}/{container.name}")
                container.task.add_done_callback(self._container_done)
            self.publish()
        self._schedule_deadline()

    def _runnable_at_once(self, spec: Mapping[str, Any]) -> bool:
        table = self.context.settings.images
        for container in spec.get("containers") or []:
            image = str(container.get("image", ""))
            if not image_reference_is_valid(image) or (image in table and pull_error(table, image) is not None):
                return False
        return True

    async def _write_running(self) -> None:
        await self._patch_status(running_status(self.pod, now=self.start_time or time.time()))

    def observe(self, pod: Obj) -> None:
        """A newer version from the watch: deletion, a changed deadline, someone else's status."""
        if _resource_version(pod) >= _resource_version(self.pod):
            self.pod = pod
        if self.api_truth and (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.finished = True  # someone else ended it (the benchmark's status patch)
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            grace = metadata.get("deletionGracePeriodSeconds")
            self.request_stop(int(grace) if grace is not None else _DEFAULT_TERMINATION_GRACE, delete=True)
        self._schedule_deadline()
        generation = _generation(self.pod)
        if generation > self._generation and self.started and not self.terminating and not self.finished:
            # The spec changed (activeDeadlineSeconds...): a kubelet reports the generation it has seen.
            self._generation = generation
            if self.api_truth:
                self._writer = self.context.spawn(self._write_generation(generation, self._writer),
                                                  f"status of {self.namespace}/{self.name}")
            else:
                self.publish()

    async def _write_generation(self, generation: int, before: asyncio.Task[None] | None) -> None:
        if before is not None and not before.done():
            await asyncio.wait([before])  # the Running write first
        conditions = [{**c, "observedGeneration": generation} if "observedGeneration" in c else c
                      for c in (self.pod.get("status") or {}).get("conditions") or []]
        await self._patch_status({"observedGeneration": generation, "conditions": conditions})

    def _schedule_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not self.started or self.terminating or self.finished:
            return
        start = self.start_time
        if self.api_truth:  # someone else may have written another startTime
            start = parse_time((self.pod.get("status") or {}).get("startTime")) or start
        at = deadline_at(self.pod.get("spec") or {}, start)
        if at is None:
            return
        if at <= time.time():
            self._deadline_passed()  # at once: no status write in between that still says Running
        else:
            self._deadline = asyncio.get_running_loop().call_later(at - time.time(), self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.terminating or self.finished or self.gone:
            return
        if self.api_truth and (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        log.info("pod %s/%s is past its activeDeadlineSeconds", self.namespace, self.name)
        self.reason, self.message = DEADLINE_REASON, DEADLINE_MESSAGE
        grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        self.request_stop(int(grace) if grace is not None else _DEFAULT_TERMINATION_GRACE)

    def request_stop(self, grace_seconds: int, *, delete: bool = False) -> None:
        """Stop the containers (SIGTERM, SIGKILL after ``grace_seconds``); delete the pod afterwards if asked.
        A later call can only shorten the grace period."""
        if delete:
            self.delete_requested = True
        self.kill_at = min(self.kill_at, time.monotonic() + grace_seconds)
        if grace_seconds <= 0:
            self.signal_all(signal.SIGKILL)
        if self.finished:
            if self.delete_requested and not self._deleting:
                self.context.spawn(self._finish_deletion(), f"delete {self.namespace}/{self.name}")
            return
        if not self.terminating:
            self.terminating = True
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self.started:
                self._begin_stop()

    def _begin_stop(self) -> None:
        if self._stopper is None:
            self._stopper = self.context.spawn(self._stop(), f"stop {self.namespace}/{self.name}")

    def signal_all(self, sig: signal.Signals) -> None:
        """Signal every running process of the pod."""
        for container in self.containers:
            container.signal(sig)

    async def _stop(self) -> None:
        await self.flush()  # the Running write of a status-only pod must land before we end it
        if self.api_truth:
            status = killed_status(self.pod, now=time.time(), exit_code=_SIGTERM_EXIT, reason=self.reason,
                                   message=self.message)
            if status is not None and not self.gone:
                await self._patch_status(status)
        elif self.containers:
            await self._stop_containers()
            self.finished = True
            self.publish()
            await self.flush()
        self.finished = True
        if self.delete_requested:
            await self._finish_deletion()

    async def _stop_containers(self) -> None:
        for container in self.containers:
            if container.process is None and container.task is not None:
                container.task.cancel()
        self.signal_all(signal.SIGTERM)
        tasks = [c.task for c in self.containers if c.process is not None and c.task is not None]
        pending = {t for t in tasks if not t.done()}
        while pending:  # the grace period can shrink while we wait (a second delete): look again often
            remaining = self.kill_at - time.monotonic()
            if remaining <= 0:
                self.signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=self.context.settings.sigkill_wait_seconds)
                break
            _, pending = await asyncio.wait(pending, timeout=min(remaining, 0.2))
        everything = [c.task for c in self.containers if c.task is not None]
        if everything:  # the cancelled ones, and the readers of the processes' last output
            await asyncio.wait(everything, timeout=self.context.settings.sigkill_wait_seconds)
        now = time.time()
        for container in self.containers:
            if "running" in container.state:  # status-only: nothing to kill, it "exits" on SIGTERM
                container.state = terminated(_SIGTERM_EXIT, started_at=container.state["running"]["startedAt"],
                                             finished_at=now, container_id=container.container_id)
            elif "waiting" in container.state:
                container.state = lost(now)
            if container.logs:
                container.logs[-1].finish()

    def _container_done(self, _: asyncio.Task[None]) -> None:
        if self.terminating or self.gone:
            return
        if all(c.task is not None and c.task.done() for c in self.containers):
            self.finished = True  # every container has ended for good (restartPolicy Never/OnFailure)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.publish()

    async def _finish_deletion(self) -> None:
        if self._deleting:
            return
        self._deleting = True
        await self.flush()
        if self.gone:
            return
        try:
            await self.context.api.request("DELETE", self.path, delete_options(self.uid))
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("final delete of %s/%s failed: %s", self.namespace, self.name, error)

    def abandon(self) -> None:
        """The pod is gone (or the kubelet stops): no more writes; kill what still runs."""
        self.gone = True
        if self._deadline is not None:
            self._deadline.cancel()
        self.signal_all(signal.SIGKILL)
        for container in self.containers:
            if container.task is not None and not container.task.done():
                container.task.cancel()
            for buffer in container.logs:
                buffer.finish()
        for buffer in self._status_only_logs.values():
            buffer.finish()

    # ------------------------------------------------------------------ status

    def publish(self) -> None:
        """Write the status computed from the containers, soon (writes are coalesced, newest state wins)."""
        if self.gone or self.api_truth or self.context.closing or (self.terminating and not self.finished):
            return  # while stopping, nothing until every container has ended: then one terminal status
        self._dirty = True
        if self._writer is None or self._writer.done():
            self._writer = self.context.spawn(self._write_loop(), f"status of {self.namespace}/{self.name}")

    async def flush(self) -> None:
        """Wait until the last published status is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    def build_status(self) -> Obj:
        """The pod status from the containers' states (process mode, and status-only pods that wait)."""
        generation = (self.pod.get("metadata") or {}).get("generation")
        return pod_status(
            old_conditions=self.conditions, statuses=[c.status() for c in self.containers],
            restart_policy=self.restart_policy, start_time=self.start_time or time.time(), now=time.time(),
            generation=generation if isinstance(generation, int) else None,
            terminal=self.finished and self.terminating, reason=self.reason if self.finished else None,
            message=self.message if self.finished else None)

    async def _write_loop(self) -> None:
        while self._dirty and not self.gone and not self.context.closing:
            self._dirty = False
            status = self.build_status()
            try:
                if not await self._patch_status(status):
                    return
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:  # the retries of request() ran out
                log.warning("status of %s/%s not written, trying again: %s", self.namespace, self.name, error)
                self._dirty = True
                await asyncio.sleep(1.0)
                continue
            self.conditions = status["conditions"]

    async def _patch_status(self, status: Obj) -> bool:
        """A merge patch of ``pods/status`` that only applies to this pod (the uid cannot change)."""
        try:
            answer = await self.context.api.request("PATCH", self.path + "/status",
                                                    {"metadata": {"uid": self.uid}, "status": status},
                                                    content_type=_MERGE_PATCH)
        except ApiError as error:
            if error.status in (404, 409, 422):
                if error.status == 422:
                    log.warning("status of %s/%s rejected: %s", self.namespace, self.name, error)
                self.gone = True
                return False
            raise
        if isinstance(answer, dict) and _resource_version(answer) >= _resource_version(self.pod):
            self.pod = answer
        return True

    # ------------------------------------------------------------------ logs

    def log_buffer(self, container: str, previous: bool) -> tuple[LogBuffer, Callable[[], bool]]:
        """What ``/containerLogs`` serves for one container of this pod."""
        still_there: Callable[[], bool] = lambda: not self.gone  # noqa: E731
        names = [str(c.get("name")) for c in (self.pod.get("spec") or {}).get("containers") or []]
        if container not in names:
            raise LogUnavailableError(404, f'container "{container}" not found in pod "{self.name}"')
        run = next((c for c in self.containers if c.name == container), None)
        if run is not None and self.context.settings.mode == "process":
            return run.log_buffer(previous), still_there
        # Status-only: nothing runs, the log is empty once the container has "started".
        if previous:
            raise LogUnavailableError(400, f'previous terminated container "{container}" in pod "{self.name}" '
                                           "not found")
        if run is not None:
            state = run.state
        else:
            statuses = (self.pod.get("status") or {}).get("containerStatuses") or []
            state = next((s.get("state") or {} for s in statuses if s.get("name") == container),
                         running(time.time()) if self.api_truth else {})
        if "running" not in state and "terminated" not in state:
            raise LogUnavailableError(400, log_unavailable_message(container, self.name, state))
        buffer = self._status_only_logs.setdefault(container, LogBuffer())
        if "terminated" in state or self.finished:
            buffer.finish()
        return buffer, still_there
