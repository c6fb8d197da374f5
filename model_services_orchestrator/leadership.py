"""Who may act: the rules of leader election on a Lease, as client-go's leaderelection applies them.

Two replicas run so that a lost node stops no simulation, and only one of
them may publish, write records or touch pods. The decisions (may this
process take the Lease or keep it, given what it saw of it and when; is it
still the leader right now) are pure and live here, apart from the calls
that read and write the Lease (``leader_election``). Every time is a reading
of the monotonic clock: a wall clock that jumps must not make two leaders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = [
    "ANNOTATION_EPOCH",
    "JITTER_FACTOR",
    "ElectionTiming",
    "LeadershipLostError",
    "LeaseRecord",
    "Observed",
    "Tenure",
    "next_record",
]

ANNOTATION_EPOCH = "dots.mso/epoch"  # on every record object: the Lease transitions of the leader that wrote it
JITTER_FACTOR = 1.2  # client-go's: a standby retries every retry period times up to this factor


class LeadershipLostError(RuntimeError):
    """This process is not (or no longer) the leader: it must not act, and exits so it restarts as a standby."""


@dataclass(frozen=True)
class ElectionTiming:
    """``LEADER_ELECTION_LEASE_SECONDS``, ``..._RENEW_SECONDS`` and ``..._RETRY_SECONDS``."""

    lease_seconds: float
    renew_seconds: float
    retry_seconds: float

    def problems(self) -> list[str]:
        """What client-go's NewLeaderElector would refuse in these durations; empty when they are usable."""
        found = []
        if self.lease_seconds <= self.renew_seconds:
            found.append("the lease must be longer than the renew deadline")
        if self.renew_seconds <= JITTER_FACTOR * self.retry_seconds:
            found.append(f"the renew deadline must be longer than {JITTER_FACTOR} times the retry period")
        for name, value in (("lease", self.lease_seconds), ("renew deadline", self.renew_seconds),
                            ("retry period", self.retry_seconds)):
            if not value > 0:
                found.append(f"the {name} must be greater than zero")
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, as client-go's LeaderElectionRecord holds it (times as the API's RFC 3339 text)."""

    holder: str
    lease_seconds: int
    acquire_time: str
    renew_time: str
    transitions: int


@dataclass(frozen=True)
class Observed:
    """The record last read, and when (monotonic) it was first seen as it is: a lease runs from then."""

    record: LeaseRecord
    at: float


def next_record(observed: Observed | None, now: float, wall_now: str, identity: str,
                lease_seconds: int) -> LeaseRecord | None:
    """The record to write to take or keep the Lease; ``None`` while another holds it validly.

    client-go's tryAcquireOrRenew: a holder's lease is valid until ``lease_seconds`` (its own figure)
    after this process first saw its record as it is. Keeping the Lease keeps its acquire time and
    transitions; taking it counts one more transition (the epoch the records carry).
    """
    mine = LeaseRecord(identity, lease_seconds, wall_now, wall_now, 0)
    if observed is None:
        return mine
    held = observed.record
    if held.holder == identity:
        return replace(mine, acquire_time=held.acquire_time, transitions=held.transitions)
    if held.holder and observed.at + held.lease_seconds > now:
        return None
    return replace(mine, transitions=held.transitions + 1)


class Tenure:
    """This process's hold on the Lease: it may act only within the renew deadline of its last renewal.

    A renewal counts from the moment its request was sent, not answered, so the other replicas (which
    time the lease from when they see the write) can never think it expired while this one still acts.
    """

    def __init__(self, renew_seconds: float, clock: Callable[[], float]) -> None:
        self._renew_seconds = renew_seconds
        self._clock = clock
        self._renewed_at: float | None = None
        self.epoch = 0

    def renewed(self, sent_at: float, epoch: int) -> None:
        self._renewed_at, self.epoch = sent_at, epoch

    def deadline(self) -> float | None:
        """When this process must stop acting unless it renews; ``None`` when it never led."""
        return None if self._renewed_at is None else self._renewed_at + self._renew_seconds

    def may_act(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and self._clock() < deadline

    def check(self) -> None:
        """Raise ``LeadershipLostError`` unless this process may act right now."""
        if not self.may_act():
            raise LeadershipLostError("this process does not hold the leader Lease (or could not renew it in time)")
