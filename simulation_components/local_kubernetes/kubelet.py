"""The scheduler and kubelet of the one node, ``local-node``: they move pods through their lifecycle.

Modes:

* ``process``: a pod whose image is in the image table runs as a local subprocess per container
  (stdout and stderr become the pod log); unknown images loop ErrImagePull/ImagePullBackOff, invalid
  references get InvalidImageName, missing secrets/config maps CreateContainerConfigError.
* ``status-only``: no processes; a schedulable pod goes Pending -> Running in one write and stays
  Running until someone writes a terminated state through the status subresource. Costs nothing per pod.
* ``none``: no scheduler, no kubelet: pods stay Pending, untouched.

Deleting a pod sets its deletionTimestamp (the store does that); the kubelet then stops the containers
(SIGTERM, SIGKILL after the grace period), writes their terminated state and does the final delete.

``spec.activeDeadlineSeconds`` (in the pod at creation, or set/lowered later) counts from the pod's
``status.startTime`` on the node. When it passes, the kubelet stops the containers as a delete would (with
the pod's terminationGracePeriodSeconds), keeps the phase until they are gone, then writes phase Failed,
reason DeadlineExceeded; containers that never ran end as the real status manager leaves them,
terminated ``ContainerStatusUnknown`` (exit 137). The pod stays, with its logs, until deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .defaults import rfc3339
from .environment import ContainerConfigError, resolve_container_env, service_environment
from .errors import bad_request
from .images import ImageTable, full_reference, pull_error
from .logs import LogBuffer
from .store import Event, Store, Stored
from .validation import image_reference_is_valid

__all__ = ["KUBELET_MODES", "NODE_LABELS", "NODE_NAME", "Kubelet"]

log = logging.getLogger(__name__)

NODE_NAME = "local-node"
NODE_LABELS = {"type": "worker", "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"}
NODE_IP = "127.0.0.1"
KUBELET_MODES = ("process", "status-only", "none")

Obj = dict[str, Any]

DEADLINE_EXCEEDED_REASON = "DeadlineExceeded"
DEADLINE_EXCEEDED_MESSAGE = "Pod was active on the node longer than the specified deadline"
# What the real kubelet's status manager (TerminatePod) writes for a container that never ran in a pod it
# terminated, e.g. one still pulling its image when the pod's activeDeadlineSeconds passed.
_STATUS_UNKNOWN = {"exitCode": 137, "reason": "ContainerStatusUnknown", "startedAt": None, "finishedAt": None,
                   "message": "The container could not be located when the pod was terminated"}

_UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes "
    "are available: 1 Preemption is not helpful for scheduling."
)


def process_environment(repo_root: Path) -> dict[str, str]:
    """What every container process starts from: PATH and PYTHONPATH (the repository root first), and
    the locale and home of the kubelet itself."""
    python_path = str(repo_root)
    if os.environ.get("PYTHONPATH"):
        python_path += os.pathsep + os.environ["PYTHONPATH"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": python_path}
    for name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{full_reference(image).rsplit(':', 1)[0]}@sha256:{digest}"


def _node_selector_matches(spec: Mapping[str, Any]) -> bool:
    selector = spec.get("nodeSelector") or {}
    if any(NODE_LABELS.get(key) != value for key, value in selector.items()):
        return False
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if not affinity:
        return True
    terms = affinity.get("nodeSelectorTerms") or []
    return any(_term_matches(term) for term in terms)


def _term_matches(term: Mapping[str, Any]) -> bool:
    for expression in term.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in NODE_LABELS
        value = NODE_LABELS.get(str(key))
        ok = {
            "In": present and value in values,
            "NotIn": not present or value not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(operator), False)
        if not ok:
            return False
    return bool(term.get("matchExpressions"))


def _condition(old: list[Obj], kind: str, status: str, reason: str | None = None,
               message: str | None = None) -> Obj:
    previous = next((c for c in old if c.get("type") == kind), None)
    now = rfc3339(time.time())
    transition = previous.get("lastTransitionTime", now) if previous and previous.get("status") == status else now
    condition: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": transition}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


class ContainerRuntime:
    """One container of a pod: its state as the kubelet reports it, its process and its logs."""

    def __init__(self, pod: PodRuntime, spec: Mapping[str, Any]) -> None:
        self.pod = pod
        self.name = str(spec["name"])
        self.image = str(spec["image"])
        self.spec = spec
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.restart_count = 0
        self.started_once = False
        self.container_id = ""
        self.pulled = False
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.logs: list[LogBuffer] = []  # current run last

    @property
    def running(self) -> bool:
        """Whether the container is running right now."""
        return "running" in self.state

    def status(self) -> Obj:
        """The ``containerStatuses`` entry."""
        entry: Obj = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.running,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": _image_id(self.image) if self.pulled else "",
            "started": self.running,
        }
        if self.container_id:
            entry["containerID"] = self.container_id
        return entry

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        """Report the container as waiting (and publish the pod status)."""
        waiting: Obj = {"reason": reason}
        if message:
            waiting["message"] = message
        self.state = {"waiting": waiting}
        self.pod.publish()

    async def run(self) -> None:
        """Pull, configure, start, wait; restart as the pod's restartPolicy says."""
        kubelet = self.pod.kubelet
        if not image_reference_is_valid(self.image):
            self.set_waiting("InvalidImageName", f'Failed to apply default image tag "{self.image}": couldn\'t '
                                                 f'parse image name "{self.image}": invalid reference format')
            await asyncio.Future()  # the kubelet keeps failing on it until the pod is deleted
        argv = await self._pull()
        self.pulled = True
        delay = kubelet.backoff_initial
        while True:
            env = await self._configure()
            await self._start_and_wait(argv, env)
            exit_code = int(self.state["terminated"]["exitCode"])
            policy = self.pod.restart_policy
            if self.pod.stopping or policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                return
            self.last_state = self.state
            self.set_waiting("CrashLoopBackOff", f"back-off {int(delay)}s restarting failed container={self.name} "
                                                 f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, kubelet.backoff_max)
            self.restart_count += 1

    async def _pull(self) -> list[str]:
        kubelet = self.pod.kubelet
        if kubelet.mode == "status-only" and self.image not in kubelet.images:
            return []
        failure = pull_error(kubelet.images, self.image)
        if failure is None:
            argv = kubelet.images[self.image]
            assert isinstance(argv, list)
            return list(argv)
        backoff = kubelet.backoff_initial
        while True:
            self.set_waiting("ErrImagePull", failure)
            await asyncio.sleep(kubelet.pull_error_seconds)
            self.set_waiting("ImagePullBackOff", f'Back-off pulling image "{self.image}": ErrImagePull: {failure}')
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, kubelet.backoff_max)

    async def _configure(self) -> dict[str, str]:
        kubelet = self.pod.kubelet
        while True:
            stored = kubelet.store.find("pods", self.pod.namespace, self.pod.name)
            if stored is None:
                await asyncio.Future()  # gone: the kubelet's DELETED handling cancels us
                continue
            try:
                container_env = resolve_container_env(kubelet.store, stored.data, self.spec)
            except ContainerConfigError as error:
                self.set_waiting("CreateContainerConfigError", str(error))
                await asyncio.sleep(kubelet.config_retry_seconds)
                continue
            return {**kubelet.base_environment(), **service_environment(), "HOSTNAME": self.pod.name,
                    **container_env}

    async def _start_and_wait(self, argv: list[str], env: dict[str, str]) -> None:
        kubelet = self.pod.kubelet
        buffer = LogBuffer()
        self.logs = [*self.logs[-1:], buffer]
        started = time.time()
        self.container_id = f"local://{uuid.uuid4().hex}"
        if kubelet.mode == "status-only":
            self._mark_running(started)
            await asyncio.Future()  # runs until the status subresource or a delete says otherwise
        creation = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *argv, *(self.spec.get("args") or []), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            cwd=str(kubelet.repo_root), start_new_session=True, preexec_fn=_die_with_the_server))
        try:
            self.process = await asyncio.shield(creation)
        except asyncio.CancelledError:
            creation.add_done_callback(_kill_if_started)  # deleted while starting: leave no orphan
            raise
        except OSError as error:
            self.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(error),
                                         "startedAt": rfc3339(0), "finishedAt": rfc3339(time.time()),
                                         "containerID": self.container_id}}
            buffer.finish()
            self.pod.publish()
            return
        self._mark_running(started)
        process = self.process
        reader = asyncio.create_task(self._read_output(process, buffer))
        try:
            return_code = await process.wait()
            try:
                await asyncio.wait_for(asyncio.shield(reader), 2.0)
            except TimeoutError:
                reader.cancel()
        finally:
            if process.returncode is None:
                _kill(process, signal.SIGKILL)
            buffer.finish()
        exit_code = return_code if return_code >= 0 else 128 - return_code
        self.state = {"terminated": {
            "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": rfc3339(started), "finishedAt": rfc3339(time.time()), "containerID": self.container_id}}
        self.process = None
        self.pod.publish()

    def _mark_running(self, started: float) -> None:
        self.state = {"running": {"startedAt": rfc3339(started)}}
        self.started_once = True
        self.pod.publish()

    @staticmethod
    async def _read_output(process: asyncio.subprocess.Process, buffer: LogBuffer) -> None:
        assert process.stdout is not None
        while True:
            chunk = await process.stdout.read(65536)
            if not chunk:
                return
            buffer.append(chunk)


def _kill_if_started(creation: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not creation.cancelled() and creation.exception() is None:
        _kill(creation.result(), signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def _die_with_the_server() -> None:
    """In the child before exec: get SIGKILL when the server dies, so a killed server leaves no orphans."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _kill(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the container's process group (its own session) once; the process alone if that fails."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


class PodRuntime:
    """A pod bound to the node: its containers, and the job of stopping them when it is deleted or when its
    ``activeDeadlineSeconds`` passes."""

    def __init__(self, kubelet: Kubelet, stored: Stored) -> None:
        self.kubelet = kubelet
        self.namespace = stored.namespace
        self.name = stored.name
        self.uid = stored.uid
        spec = stored.data.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy", "Always"))
        self.containers = [ContainerRuntime(self, container) for container in spec.get("containers") or []]
        self.termination_grace = int(spec.get("terminationGracePeriodSeconds", 30))
        self.start_time = time.time()
        self.deleting = asyncio.Event()
        self.deletion_deadline = 0.0
        self.deadline_exceeded = asyncio.Event()
        self.deadline_kill_at = 0.0  # monotonic time of the SIGKILL once the deadline passed
        self.kill_at_changed = asyncio.Event()
        self.failure: tuple[str, str] | None = None  # (reason, message) of a pod the kubelet failed
        self.task: asyncio.Task[None] | None = None
        self.gone = False

    @property
    def stopping(self) -> bool:
        """Whether the containers are being stopped for good (a delete or the active deadline)."""
        return self.deleting.is_set() or self.deadline_exceeded.is_set()

    def publish(self) -> None:
        """Write the pod status computed from the containers' states."""
        if self.gone:
            return
        self.kubelet.store.system_update("pods", self.namespace, self.name, self._with_status, uid=self.uid)

    def _with_status(self, data: Obj) -> Obj:
        old = data.get("status") or {}
        old_conditions = old.get("conditions") or []
        statuses = [container.status() for container in self.containers]
        terminated = [c for c in self.containers if "terminated" in c.state]
        all_started = all(c.started_once or "terminated" in c.state for c in self.containers)
        if self.failure is not None:
            phase = "Failed"
        elif self.deadline_exceeded.is_set():
            # Like the real status manager: no terminal phase while containers may still run.
            phase = str(old.get("phase") or "Pending")
        elif self.containers and len(terminated) == len(self.containers) and (
                self.restart_policy == "Never" or self.deleting.is_set()
                or (self.restart_policy == "OnFailure"
                    and all(c.state["terminated"]["exitCode"] == 0 for c in terminated))):
            failed = any(c.state["terminated"]["exitCode"] != 0 for c in terminated)
            phase = "Failed" if failed else "Succeeded"
        elif all_started:
            phase = "Running"
        else:
            phase = "Pending"
        ready = all(c.running for c in self.containers)
        not_ready: tuple[str, str | None]
        if phase in ("Succeeded", "Failed"):
            not_ready = ("PodCompleted", None)
        else:
            unready = [c.name for c in self.containers if not c.running]
            not_ready = ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        conditions = [
            _condition(old_conditions, "PodReadyToStartContainers", "True"),
            _condition(old_conditions, "Initialized", "True"),
            _condition(old_conditions, "Ready", "True") if ready
            else _condition(old_conditions, "Ready", "False", *not_ready),
            _condition(old_conditions, "ContainersReady", "True") if ready
            else _condition(old_conditions, "ContainersReady", "False", *not_ready),
            _condition(old_conditions, "PodScheduled", "True"),
        ]
        status: Obj = {"phase": phase}
        if self.failure is not None:
            status["reason"], status["message"] = self.failure
        data["status"] = {
            **status,
            "conditions": conditions,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": rfc3339(self.start_time),
            "containerStatuses": statuses,
            "qosClass": old.get("qosClass", "BestEffort"),
        }
        return data

    async def run(self) -> None:
        """Run the containers until they end, the pod is deleted or its deadline passes; at the deadline
        stop them and fail the pod; once deleted, stop them and do the final delete."""
        deleting = asyncio.create_task(self.deleting.wait())
        exceeded = asyncio.create_task(self.deadline_exceeded.wait())
        try:
            self.publish()
            for container in self.containers:
                container.task = asyncio.create_task(container.run(), name=f"container {self.name}/{container.name}")
            tasks = [c.task for c in self.containers if c.task is not None]
            await asyncio.wait([*tasks, deleting, exceeded], return_when=asyncio.FIRST_COMPLETED)
            while not self.stopping and not all(task.done() for task in tasks):
                await asyncio.wait([*[t for t in tasks if not t.done()], deleting, exceeded],
                                   return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("container task of %s/%s failed", self.namespace, self.name,
                              exc_info=task.exception())
            await asyncio.wait([deleting, exceeded], return_when=asyncio.FIRST_COMPLETED)
            if self.deadline_exceeded.is_set():
                await self._fail_for_deadline()
            await deleting
            await self.stop_containers()
            self.kubelet.store.finish_pod_deletion(self.namespace, self.name, self.uid)
        finally:
            deleting.cancel()
            exceeded.cancel()
            self.abandon()

    def exceed_deadline(self) -> None:
        """The pod's activeDeadlineSeconds passed: stop its containers (SIGKILL after its grace period)."""
        if self.deadline_exceeded.is_set():
            return
        self.deadline_kill_at = time.monotonic() + self.termination_grace
        self.deadline_exceeded.set()

    async def _fail_for_deadline(self) -> None:
        await self._stop_processes()
        now = rfc3339(time.time())
        for container in self.containers:
            if container.running:  # status-only: no process to signal
                container.state = {"terminated": {
                    "exitCode": 137, "reason": "Error", "startedAt": container.state["running"]["startedAt"],
                    "finishedAt": now, "containerID": container.container_id}}
            elif "terminated" not in container.state:
                container.state = {"terminated": dict(_STATUS_UNKNOWN)}
        self.failure = (DEADLINE_EXCEEDED_REASON, DEADLINE_EXCEEDED_MESSAGE)
        self.publish()

    async def stop_containers(self) -> None:
        """SIGTERM the running processes, SIGKILL them at the deadline, cancel everything else."""
        await self._stop_processes()
        if self.kubelet.mode == "status-only":
            for container in self.containers:
                if container.running:
                    container.state = {"terminated": {
                        "exitCode": 143, "reason": "Error",
                        "startedAt": container.state["running"]["startedAt"],
                        "finishedAt": rfc3339(time.time()), "containerID": container.container_id}}
            self.publish()

    def _kill_at(self) -> float:
        """When the SIGKILL comes: the earliest of the deletion's and the deadline's grace period ends."""
        moments = []
        if self.deleting.is_set():
            moments.append(self.deletion_deadline)
        if self.deadline_exceeded.is_set():
            moments.append(self.deadline_kill_at)
        return min(moments, default=time.monotonic())

    async def _stop_processes(self) -> None:
        cancelled = []
        for container in self.containers:
            if container.process is None and container.task is not None and not container.task.done():
                container.task.cancel()
                cancelled.append(container.task)
        running = [c for c in self.containers if c.process is not None and c.task is not None]
        for container in running:
            assert container.process is not None
            _kill(container.process, signal.SIGTERM)
        pending: set[asyncio.Task[Any]] = {c.task for c in running if c.task is not None}
        while pending:  # a delete may shorten the grace period meanwhile
            timeout = self._kill_at() - time.monotonic()
            if timeout <= 0:
                break
            self.kill_at_changed.clear()
            changed = asyncio.create_task(self.kill_at_changed.wait())
            _, pending = await asyncio.wait({*pending, changed}, timeout=timeout,
                                            return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            pending.discard(changed)
        if pending:
            for container in running:
                if container.process is not None:
                    _kill(container.process, signal.SIGKILL)
            await asyncio.wait(pending, timeout=5.0)
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)

    def request_deletion(self, grace_seconds: int) -> None:
        """The pod got (or shortened) its deletionTimestamp."""
        deadline = time.monotonic() + grace_seconds
        if not self.deleting.is_set() or deadline < self.deletion_deadline:
            self.deletion_deadline = deadline
        self.deleting.set()
        self.kill_at_changed.set()
        if grace_seconds == 0:
            for container in self.containers:
                if container.process is not None:
                    _kill(container.process, signal.SIGKILL)

    def abandon(self) -> None:
        """The pod is gone (or the server stops): kill whatever still runs, without any more writes."""
        self.gone = True
        for container in self.containers:
            if container.process is not None and container.process.returncode is None:
                _kill(container.process, signal.SIGKILL)
            if container.task is not None and not container.task.done():
                container.task.cancel()


class Kubelet:
    """Scheduler plus kubelet for ``local-node``, driven by the store's events."""

    def __init__(self, store: Store, *, mode: str, images: ImageTable, repo_root: Path,
                 pull_error_seconds: float = 1.0, backoff_initial: float = 1.0, backoff_max: float = 10.0,
                 config_retry_seconds: float = 1.0) -> None:
        if mode not in KUBELET_MODES:
            raise ValueError(f"unknown kubelet mode {mode!r}; expected one of {KUBELET_MODES}")
        self.store = store
        self.mode = mode
        self.images = images
        self.repo_root = repo_root
        self.pull_error_seconds = pull_error_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.config_retry_seconds = config_retry_seconds
        self._runtimes: dict[str, PodRuntime] = {}  # by pod uid, pods that need a task
        self._status_only_logs: dict[tuple[str, str], LogBuffer] = {}
        self._start_times: dict[str, float] = {}  # by pod uid: the status.startTime of the pods on the node
        self._deadline_timers: dict[str, asyncio.TimerHandle] = {}  # by pod uid
        self._queue: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Subscribe to the store and start the worker (call on the running loop)."""
        if self.mode == "none":
            return
        self.store.add_observer(self._observe)
        self._worker = asyncio.create_task(self._work(), name="kubelet worker")

    async def close(self) -> None:
        """Stop every container (SIGTERM, then SIGKILL after 2 s) and the worker."""
        for timer in self._deadline_timers.values():
            timer.cancel()
        self._deadline_timers.clear()
        runtimes = list(self._runtimes.values())
        processes = [c.process for r in runtimes for c in r.containers if c.process is not None]
        for process in processes:
            _kill(process, signal.SIGTERM)
        if processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 2.0)
        for runtime in runtimes:
            runtime.abandon()
            if runtime.task is not None:
                runtime.task.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def base_environment(self) -> dict[str, str]:
        return process_environment(self.repo_root)

    # ------------------------------------------------------------------ events

    def _observe(self, event: Event) -> None:
        if event.resource != "pods":
            return
        stored = event.obj
        if event.type == "ADDED":
            self._queue.put_nowait(("schedule", stored.namespace, stored.name, stored.uid))
        elif event.type == "MODIFIED":
            grace = stored.metadata.get("deletionGracePeriodSeconds")
            previous = event.prev.metadata.get("deletionGracePeriodSeconds") if event.prev else None
            if stored.metadata.get("deletionTimestamp") and grace != previous:
                self._queue.put_nowait(("delete", stored.namespace, stored.name, stored.uid))
            deadline = (stored.data.get("spec") or {}).get("activeDeadlineSeconds")
            old_deadline = (event.prev.data.get("spec") or {}).get("activeDeadlineSeconds") if event.prev else None
            if deadline != old_deadline and stored.uid in self._start_times:
                self._queue.put_nowait(("deadline", stored.namespace, stored.name, stored.uid))
        elif event.type == "DELETED":
            timer = self._deadline_timers.pop(stored.uid, None)
            if timer is not None:
                timer.cancel()
            self._start_times.pop(stored.uid, None)
            runtime = self._runtimes.pop(stored.uid, None)
            if runtime is not None:
                runtime.abandon()
            for container in (stored.data.get("spec") or {}).get("containers") or []:
                self._status_only_logs.pop((stored.uid, str(container.get("name"))), None)

    async def _work(self) -> None:
        while True:
            action, namespace, name, uid = await self._queue.get()
            try:
                if action == "schedule":
                    self._schedule(namespace, name, uid)
                elif action == "deadline":
                    self._check_deadline(namespace, name, uid)
                else:
                    self._delete(namespace, name, uid)
            except Exception:
                log.exception("kubelet failed to %s pod %s/%s", action, namespace, name)

    def _schedule(self, namespace: str, name: str, uid: str) -> None:
        stored = self.store.find("pods", namespace, name)
        if stored is None or stored.uid != uid or stored.metadata.get("deletionTimestamp"):
            return
        spec = stored.data.get("spec") or {}
        node_name = spec.get("nodeName")
        if node_name and node_name != NODE_NAME:
            return  # bound to a node that does not exist: stays Pending, as on a real cluster
        if not node_name and not _node_selector_matches(spec):
            self.store.system_update("pods", namespace, name, _unschedulable, uid=uid)
            return
        if self.mode == "status-only" and self._runs_at_once(spec):
            now = time.time()
            running = self.store.system_update("pods", namespace, name,
                                               lambda data: _bound_and_running(data, now), uid=uid)
            if running is not None:
                self._start_times[uid] = now
                self._arm_deadline(running)
            return
        bound = self.store.system_update("pods", namespace, name, _bound, uid=uid)
        if bound is None:
            return
        runtime = PodRuntime(self, bound)
        self._runtimes[uid] = runtime
        self._start_times[uid] = runtime.start_time
        runtime.task = asyncio.create_task(runtime.run(), name=f"pod {namespace}/{name}")
        self._arm_deadline(bound)

    def _runs_at_once(self, spec: Mapping[str, Any]) -> bool:
        for container in spec.get("containers") or []:
            image = str(container.get("image", ""))
            if not image_reference_is_valid(image) or (
                    image in self.images and pull_error(self.images, image) is not None):
                return False
        return True

    # ------------------------------------------------------------------ activeDeadlineSeconds

    def _arm_deadline(self, stored: Stored) -> None:
        """(Re)start the timer of a pod on the node for its activeDeadlineSeconds, counted from its startTime."""
        timer = self._deadline_timers.pop(stored.uid, None)
        if timer is not None:
            timer.cancel()
        deadline = (stored.data.get("spec") or {}).get("activeDeadlineSeconds")
        start = self._start_times.get(stored.uid)
        if not isinstance(deadline, int) or start is None:
            return
        delay = max(start + deadline - time.time(), 0.0)
        self._deadline_timers[stored.uid] = asyncio.get_running_loop().call_later(
            delay, self._queue.put_nowait, ("deadline", stored.namespace, stored.name, stored.uid))

    def _check_deadline(self, namespace: str, name: str, uid: str) -> None:
        """The timer fired or the deadline changed: fail the pod if it is past its deadline, else re-arm.

        Like the real kubelet's activeDeadlineHandler: only pods that have a startTime on this node, and
        not pods that are terminal already or being deleted (the deletion stops them anyway).
        """
        stored = self.store.find("pods", namespace, name)
        if stored is None or stored.uid != uid or stored.metadata.get("deletionTimestamp"):
            return
        if (stored.data.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        deadline = (stored.data.get("spec") or {}).get("activeDeadlineSeconds")
        start = self._start_times.get(uid)
        if not isinstance(deadline, int) or start is None:
            return
        if start + deadline > time.time():
            self._arm_deadline(stored)
            return
        self._deadline_timers.pop(uid, None)
        runtime = self._runtimes.get(uid)
        if runtime is not None:
            runtime.exceed_deadline()
        elif self.mode == "status-only":
            self.store.system_update("pods", namespace, name, _deadline_exceeded, uid=uid)

    def _delete(self, namespace: str, name: str, uid: str) -> None:
        stored = self.store.find("pods", namespace, name)
        if stored is None or stored.uid != uid:
            return
        grace = int(stored.metadata.get("deletionGracePeriodSeconds") or 0)
        runtime = self._runtimes.get(uid)
        if runtime is not None:
            runtime.request_deletion(grace)
            return
        if self.mode == "status-only" and (stored.data.get("spec") or {}).get("nodeName") == NODE_NAME:
            self.store.system_update("pods", namespace, name, _killed, uid=uid)
        self.store.finish_pod_deletion(namespace, name, uid)

    # ------------------------------------------------------------------ logs

    def log_buffer(self, pod: Stored, container: str | None, *, previous: bool = False) -> LogBuffer:
        """The log of a container (400 BadRequest if it has not started, like the real API)."""
        spec = pod.data.get("spec") or {}
        names = [str(c.get("name")) for c in spec.get("containers") or []]
        if container is None:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {pod.name}, choose one of: "
                                  f"[{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {pod.name}")
        runtime = self._runtimes.get(pod.uid)
        if runtime is not None:
            container_runtime = next(c for c in runtime.containers if c.name == container)
            buffers = container_runtime.logs
            if previous:
                if container_runtime.restart_count == 0 or len(buffers) < 2:
                    raise bad_request(f'previous terminated container "{container}" in pod "{pod.name}" '
                                      "not found")
                return buffers[-2]
            if buffers:
                return buffers[-1]
            if "terminated" in container_runtime.state:  # never ran (ContainerStatusUnknown)
                raise bad_request(f'container "{container}" in pod "{pod.name}" is terminated')
        elif previous:
            raise bad_request(f'previous terminated container "{container}" in pod "{pod.name}" not found')
        statuses = (pod.data.get("status") or {}).get("containerStatuses") or []
        state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
        if "running" in state or "terminated" in state:
            return self._status_only_logs.setdefault((pod.uid, container), LogBuffer())
        reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            reason = "trying and failing to pull image"
        raise bad_request(f'container "{container}" in pod "{pod.name}" is waiting to start: {reason}')


def _bound(data: Obj) -> Obj:
    data["spec"]["nodeName"] = NODE_NAME
    status = data.setdefault("status", {})
    status["conditions"] = [_condition(status.get("conditions") or [], "PodScheduled", "True")]
    return data


def _unschedulable(data: Obj) -> Obj:
    status = data.setdefault("status", {})
    status["phase"] = "Pending"
    status["conditions"] = [_condition(status.get("conditions") or [], "PodScheduled", "False",
                                       "Unschedulable", _UNSCHEDULABLE_MESSAGE)]
    return data


def _bound_and_running(data: Obj, now: float) -> Obj:
    data["spec"]["nodeName"] = NODE_NAME
    old = data.get("status") or {}
    conditions = [_condition([], kind, "True") for kind in (
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    data["status"] = {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": NODE_IP,
        "podIPs": [{"ip": NODE_IP}],
        "startTime": rfc3339(now),
        "containerStatuses": [{
            "name": container["name"],
            "state": {"running": {"startedAt": rfc3339(now)}},
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": container["image"],
            "imageID": _image_id(str(container["image"])),
            "containerID": f"local://{uuid.uuid4().hex}",
            "started": True,
        } for container in data["spec"].get("containers") or []],
        "qosClass": old.get("qosClass", "BestEffort"),
    }
    return data


def _killed(data: Obj) -> Obj:
    """Running containers of a status-only pod end as if SIGTERM killed them (values are replaced, not
    changed in place: they are shared with the stored version)."""
    status = data.get("status") or {}
    now = rfc3339(time.time())
    entries = []
    changed = False
    for entry in status.get("containerStatuses") or []:
        running = (entry.get("state") or {}).get("running")
        if running is not None:
            entry = {**entry, "ready": False, "started": False, "state": {"terminated": {  # noqa: PLW2901
                "exitCode": 143, "reason": "Error", "startedAt": running.get("startedAt"), "finishedAt": now,
                "containerID": entry.get("containerID", "")}}}
            changed = True
        entries.append(entry)
    if changed:
        status["containerStatuses"] = entries
        status["phase"] = "Failed"
        status["conditions"] = [
            {**condition, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
            if condition.get("type") in ("Ready", "ContainersReady") else condition
            for condition in status.get("conditions") or []]
        data["status"] = status
    return data


def _deadline_exceeded(data: Obj) -> Obj:
    """A status-only pod past its activeDeadlineSeconds: its running containers end as if killed (137), the
    pod is Failed with reason DeadlineExceeded (values are replaced, not changed in place)."""
    status = dict(data.get("status") or {})
    now = rfc3339(time.time())
    entries = []
    for entry in status.get("containerStatuses") or []:
        state = entry.get("state") or {}
        if "running" in state:
            terminated = {"exitCode": 137, "reason": "Error", "startedAt": state["running"].get("startedAt"),
                          "finishedAt": now, "containerID": entry.get("containerID", "")}
        elif "terminated" in state:
            terminated = state["terminated"]
        else:
            terminated = dict(_STATUS_UNKNOWN)
        entries.append({**entry, "ready": False, "started": False, "state": {"terminated": terminated}})
    old_conditions = status.get("conditions") or []
    status["conditions"] = [
        _condition(old_conditions, str(condition.get("type")), "False", "PodCompleted")
        if condition.get("type") in ("Ready", "ContainersReady") else condition
        for condition in old_conditions]
    status["containerStatuses"] = entries
    status["phase"] = "Failed"
    status["reason"] = DEADLINE_EXCEEDED_REASON
    status["message"] = DEADLINE_EXCEEDED_MESSAGE
    data["status"] = status
    return data
