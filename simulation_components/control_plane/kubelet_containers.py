"""The containers of the control-plane kubelet's pods: one ``ContainerRun`` per container, and what all
pod workers share (``Settings``, ``KubeletContext``).

A container goes through the steps a real kubelet reports: InvalidImageName for a reference it cannot
parse; ErrImagePull then ImagePullBackOff, again and again with a growing back-off, for an image the table
does not run (unknown, ``null``, or a pull-error string); CreateContainerConfigError while a Secret or
ConfigMap its environment reads is missing (fetched from the API at each attempt); then, in process mode, a
local subprocess (argv from the image table plus the container's ``args``, cwd and PYTHONPATH = the
repository root, its own session, SIGKILLed by the kernel if the kubelet dies), whose stdout+stderr is the
log. In status-only mode "running" is only a state. restartPolicy Always/OnFailure restart it after a
CrashLoopBackOff of 1 s doubling to 5 s (not reset after a long run, unlike the real one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from .components import die_with_parent
from .container_env import (
    ContainerConfigError,
    process_environment,
    references,
    resolve_container_env,
    service_environment,
)
from .images import ImageTable, image_reference_is_valid, pull_error
from .kubelet_api import ApiError, KubeApi
from .kubelet_logs import LogBuffer, LogUnavailableError
from .kubelet_status import (
    Obj,
    container_status,
    exit_code_of,
    log_unavailable_message,
    lost,
    new_container_id,
    pull_backoff_message,
    restart_backoff_message,
    running,
    terminated,
    waiting,
)

__all__ = ["ContainerOwner", "ContainerRun", "KubeletContext", "Settings"]

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """How the kubelet behaves; the timings are short so that tests see every step quickly."""

    mode: str
    images: ImageTable
    repo_root: Path
    pull_error_seconds: float = 1.0
    backoff_initial: float = 1.0
    backoff_max: float = 5.0
    config_retry_seconds: float = 1.0
    sigkill_wait_seconds: float = 5.0


@dataclass
class KubeletContext:
    """What every pod worker shares: the API, the settings, the background tasks, the shutdown flag."""

    api: KubeApi
    settings: Settings
    closing: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task that is kept referenced and logs its failure."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def base_environment(self) -> dict[str, str]:
        return process_environment(self.settings.repo_root)


class ContainerOwner(Protocol):
    """What a container needs of its pod (the pod worker): where it runs, and a way to report a change."""

    context: KubeletContext
    namespace: str
    name: str
    uid: str
    pod: Obj
    restart_policy: str
    terminating: bool

    def publish(self) -> None:
        """Write the pod's status again (soon)."""


def _kill(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the container's process group (its own session) once; the process alone if that fails."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def _kill_if_started(creation: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not creation.cancelled() and creation.exception() is None:
        _kill(creation.result(), signal.SIGKILL)


class ContainerRun:
    """One container: its reported state, its process and the log of its current and previous run."""

    def __init__(self, pod: ContainerOwner, spec: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
        self.pod = pod
        self.name = str(spec["name"])
        self.image = str(spec["image"])
        self.spec = spec
        self.state: Obj = waiting("ContainerCreating")
        self.last_state: Obj = {}
        self.restart_count = 0
        self.pulled = False
        self.container_id = ""
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.logs: list[LogBuffer] = []  # the current (or last) run last, at most two
        if previous:  # adopted after a kubelet restart: the processes of that run are gone
            self.restart_count = int(previous.get("restartCount") or 0)
            state = previous.get("state") or {}
            if "terminated" in state:
                self.state = dict(state)
            elif "running" in state:
                self.state = lost(time.time())

    def status(self) -> Obj:
        """The ``containerStatuses`` entry."""
        return container_status(name=self.name, image=self.image, state=self.state, last_state=self.last_state,
                                restart_count=self.restart_count, pulled=self.pulled, container_id=self.container_id)

    def set_state(self, state: Obj) -> None:
        """Report a new state (and write the pod status)."""
        self.state = state
        self.pod.publish()

    def _should_restart(self) -> bool:
        if self.pod.terminating or "terminated" not in self.state:
            return False
        policy = self.pod.restart_policy
        return policy == "Always" or (policy == "OnFailure" and self.state["terminated"].get("exitCode") != 0)

    async def run(self) -> None:
        """Pull, configure, start, wait; restart as the restartPolicy says. Cancelled when the pod stops."""
        settings = self.pod.context.settings
        delay = settings.backoff_initial
        if "terminated" in self.state:  # adopted
            if not self._should_restart():
                return
            delay = await self._back_off(delay)
        if not image_reference_is_valid(self.image):
            self.set_state(waiting("InvalidImageName", f'Failed to apply default image tag "{self.image}": '
                                   f'couldn\'t parse image name "{self.image}": invalid reference format'))
            await asyncio.Future()  # the kubelet keeps failing on it until the pod stops
        argv = await self._pull()
        self.pulled = True
        while True:
            env = await self._configure()
            await self._start_and_wait(argv, env)
            if not self._should_restart():
                return
            delay = await self._back_off(delay)

    async def _back_off(self, delay: float) -> float:
        self.last_state = self.state
        pod = self.pod
        self.set_state(waiting("CrashLoopBackOff", restart_backoff_message(delay, self.name, pod.name,
                                                                           pod.namespace, pod.uid)))
        await asyncio.sleep(delay)
        self.restart_count += 1
        return min(delay * 2, self.pod.context.settings.backoff_max)

    async def _pull(self) -> list[str]:
        settings = self.pod.context.settings
        table = settings.images
        if settings.mode == "status-only" and self.image not in table:
            return []  # status-only: any image "exists" unless the table says it is missing
        failure = pull_error(table, self.image)
        if failure is None:
            return list(cast(list[str], table[self.image]))
        backoff = settings.backoff_initial
        while True:  # like the real one: ErrImagePull, then ImagePullBackOff for a growing time, again
            self.set_state(waiting("ErrImagePull", failure))
            await asyncio.sleep(settings.pull_error_seconds)
            self.set_state(waiting("ImagePullBackOff", pull_backoff_message(self.image, failure)))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.backoff_max)

    async def _configure(self) -> dict[str, str]:
        """The environment, once every Secret and ConfigMap it reads exists (CreateContainerConfigError until)."""
        context = self.pod.context
        while True:
            objects: dict[tuple[str, str], Obj | None] = {}
            for resource, name in sorted(references(self.spec)):
                try:
                    objects[(resource, name)] = await context.api.request(
                        "GET", f"/api/v1/namespaces/{self.pod.namespace}/{resource}/{name}")
                except ApiError as error:
                    if error.status != 404:
                        self.set_state(waiting("CreateContainerConfigError", error.message))
                        await asyncio.sleep(context.settings.config_retry_seconds)
                        break
                    objects[(resource, name)] = None
            else:
                try:
                    container_env = resolve_container_env(objects, self.pod.pod, self.spec)
                except ContainerConfigError as error:
                    self.set_state(waiting("CreateContainerConfigError", str(error)))
                    await asyncio.sleep(context.settings.config_retry_seconds)
                    continue
                return {**context.base_environment(), **service_environment(), "HOSTNAME": self.pod.name,
                        **container_env}

    async def _start_and_wait(self, argv: list[str], env: dict[str, str]) -> None:
        settings = self.pod.context.settings
        buffer = LogBuffer()
        self.logs = [*self.logs[-1:], buffer]
        started = time.time()
        self.container_id = new_container_id()
        if settings.mode == "status-only":
            self.set_state(running(started))
            await asyncio.Future()  # "runs" until the pod stops (which cancels this task)
        creation = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *argv, *(str(arg) for arg in self.spec.get("args") or []), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            cwd=str(settings.repo_root), start_new_session=True, preexec_fn=die_with_parent))
        try:
            process = await asyncio.shield(creation)
        except asyncio.CancelledError:
            creation.add_done_callback(_kill_if_started)  # stopped while starting: leave no orphan
            raise
        except OSError as error:
            self.state = terminated(128, started_at=None, finished_at=time.time(), container_id=self.container_id,
                                    reason="StartError", message=str(error))
            buffer.finish()
            self.pod.publish()
            return
        self.process = process
        self.set_state(running(started))
        reader = asyncio.create_task(self._read_output(process, buffer))
        try:
            return_code = await process.wait()
            try:
                await asyncio.wait_for(asyncio.shield(reader), 2.0)
            except TimeoutError:  # a grandchild holds the pipe open
                reader.cancel()
        finally:
            if process.returncode is None:
                _kill(process, signal.SIGKILL)
            buffer.finish()
        self.state = terminated(exit_code_of(return_code), started_at=started, finished_at=time.time(),
                                container_id=self.container_id)
        self.process = None
        self.pod.publish()

    @staticmethod
    async def _read_output(process: asyncio.subprocess.Process, buffer: LogBuffer) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            buffer.append(chunk)

    def signal(self, sig: signal.Signals) -> None:
        """Signal the running process, if there is one."""
        if self.process is not None and self.process.returncode is None:
            _kill(self.process, sig)

    def log_buffer(self, previous: bool) -> LogBuffer:
        """The log of the current (or last) run, or of the one before with ``previous``."""
        if previous:
            if self.restart_count == 0 or len(self.logs) < 2:
                raise LogUnavailableError(400, f'previous terminated container "{self.name}" in pod "{self.pod.name}" '
                                          "not found")
            return self.logs[-2]
        if not self.logs:
            raise LogUnavailableError(400, log_unavailable_message(self.name, self.pod.name, self.state))
        return self.logs[-1]
