"""The Lease that says which replica leads, read and written through the official client.

Two replicas of the daemon may run (a rollout, a lost node); this module is
how they agree that one acts. It carries out the rules of ``leadership``:
a standby tries every retry period (with client-go's jitter) until the
Lease is free or expired, then takes it; the leader renews it every retry
period and gives up, raising ``LeadershipLostError``, when a renewal has not gone
through within the renew deadline. A clean stop hands the Lease back (an
empty holder, a one-second lease), so the standby takes over at once.

No library does this for asyncio with the official client: kubernetes'
``leaderelection`` package is thread-based and uses the wall clock, and
kopf's peering is an annotation protocol of its own, not a Lease.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NoReturn

import kubernetes
from kubernetes.client.exceptions import ApiException

from model_services_orchestrator.k8s_api import api_request
from model_services_orchestrator.leadership import (
    JITTER_FACTOR,
    ElectionTiming,
    LeadershipLostError,
    LeaseRecord,
    Observed,
    Tenure,
    next_record,
)
from model_services_orchestrator.logs import get_logger

__all__ = ["LeaderElector"]

_log = get_logger(__name__)


def _wall_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record_of(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(holder=spec.get("holderIdentity") or "",
                       lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
                       acquire_time=spec.get("acquireTime") or "", renew_time=spec.get("renewTime") or "",
                       transitions=int(spec.get("leaseTransitions") or 0))


def _spec_of(record: LeaseRecord) -> dict[str, Any]:
    return {"holderIdentity": record.holder, "leaseDurationSeconds": record.lease_seconds,
            "acquireTime": record.acquire_time, "renewTime": record.renew_time,
            "leaseTransitions": record.transitions}


class LeaderElector:
    """Takes, keeps and hands back the Lease ``name``; ``tenure`` says whether this process may act."""

    def __init__(self, *, api_client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
                 timing: ElectionTiming, request_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = api_client
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name, self.identity = namespace, name, identity
        self._timing = timing
        # A request never outlasts the renew deadline: a leader that cannot renew in time must know it in time.
        self._request_timeout = min(request_timeout, timing.renew_seconds)
        self._clock = clock
        self.tenure = Tenure(timing.renew_seconds, clock)
        self._observed: Observed | None = None
        self._resource_version = ""
        self._refusals = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    @property
    def leading(self) -> bool:
        return self.tenure.may_act()

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        said = False
        while not await self._try():
            if not said and self._observed is not None:
                _log.info("standing by: another replica leads", lease=self.name,
                          leader=self._observed.record.holder, identity=self.identity)
                said = True
            await asyncio.sleep(self._timing.retry_seconds * random.uniform(1.0, JITTER_FACTOR))  # noqa: S311
        _log.info("leading", lease=self.name, identity=self.identity, epoch=self.tenure.epoch)

    async def keep(self) -> NoReturn:
        """Renew the Lease every retry period; raise ``LeadershipLostError`` once the renew deadline passes."""
        while True:
            await asyncio.sleep(self._timing.retry_seconds)
            while not await self._try():
                deadline = self.tenure.deadline()
                if deadline is None or self._clock() >= deadline:
                    raise LeadershipLostError(f"the Lease {self.name} was not renewed within "
                                              f"{self._timing.renew_seconds} s")
                await asyncio.sleep(min(self._timing.retry_seconds, max(0.0, deadline - self._clock())))
            if not self.leading:  # renewed, but only after the deadline (a frozen process, a slow answer)
                raise LeadershipLostError(f"the Lease {self.name} was renewed too late to be relied on")

    async def release(self) -> None:
        """Hand the Lease back on a clean stop (client-go's ReleaseOnCancel), if this process still holds it."""
        if not self.leading or self._observed is None:
            return
        now = _wall_now()
        record = LeaseRecord("", 1, now, now, self._observed.record.transitions)
        try:
            await self._in_thread(lambda: self._write(record))
        except Exception as exc:  # noqa: BLE001 (the standby then waits for the lease to expire)
            _log.warning("the Lease was not handed back: the standby takes it when it expires", lease=self.name,
                         error=type(exc).__name__)
            return
        _log.info("leadership handed back", lease=self.name)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- one attempt

    async def _try(self) -> bool:
        """One tryAcquireOrRenew: whether this process holds the Lease now."""
        sent_at = self._clock()
        try:
            return bool(await self._in_thread(lambda: self._try_blocking(sent_at)))
        except Exception as exc:  # noqa: BLE001 (any failure to talk to the API is a lease not renewed)
            status = exc.status if isinstance(exc, ApiException) else None
            if status == 403 and self._refusals % 30 == 0:
                # Not transient unless the API server just restarted: most likely the Role lacks this Lease.
                _log.error("the leader Lease is forbidden to this service account", lease=self.name,
                           fix=f"add {self.name!r} to the resourceNames of the Role's leases rule (role.yaml), "
                               "or set LEADER_ELECTION=false for a single replica")
            self._refusals += status == 403
            # As the gateway says it, so one event tells an operator that the API cannot be reached or refuses.
            _log.warning("kubernetes call failed, retrying", call="take or renew the leader Lease", status=status,
                         error=type(exc).__name__, detail=str(exc)[:300])
            return False

    def _try_blocking(self, sent_at: float) -> bool:
        lease = self._read()
        if lease is not None:
            record = _record_of(lease)
            if self._observed is None or self._observed.record != record:
                self._observed = Observed(record, self._clock())
            self._resource_version = lease["metadata"]["resourceVersion"]
        wanted = next_record(None if lease is None else self._observed, self._clock(), _wall_now(), self.identity,
                             max(1, round(self._timing.lease_seconds)))
        if wanted is None:
            return False
        try:
            self._write(wanted, create=lease is None)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first: it leads
                return False
            raise
        self._observed = Observed(wanted, sent_at)
        self.tenure.renewed(sent_at, wanted.transitions)
        return True

    def _read(self) -> dict[str, Any] | None:
        try:
            return self._request("GET", f"{self._collection}/{self.name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _write(self, record: LeaseRecord, *, create: bool = False) -> None:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if not create:
            metadata["resourceVersion"] = self._resource_version  # optimistic: a concurrent write makes it 409
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": _spec_of(record)}
        answer = (self._request("POST", self._collection, body) if create
                  else self._request("PUT", f"{self._collection}/{self.name}", body))
        self._resource_version = answer["metadata"]["resourceVersion"]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = api_request(self._client, method, path, body=body, timeout=self._request_timeout)
        return answer

    async def _in_thread(self, call: Callable[[], bool | None]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
