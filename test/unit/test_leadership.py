"""The rules of leader election: client-go's validation, tryAcquireOrRenew's decision, the tenure's deadline."""

from __future__ import annotations

import pytest

from model_services_orchestrator.leadership import (
    ElectionTiming,
    LeadershipLostError,
    LeaseRecord,
    Observed,
    Tenure,
    next_record,
)
from model_services_orchestrator.settings import Settings

NOW = "2026-12-03T12:00:00.000000Z"


def held_by(holder: str, transitions: int = 3, lease_seconds: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, lease_seconds, "2026-12-03T11:00:00.000000Z", "2026-12-03T11:59:59.000000Z",
                       transitions)


def test_timing_is_validated_as_client_go_validates_it() -> None:
    assert ElectionTiming(15, 10, 2).problems() == []
    assert ElectionTiming(10, 10, 2).problems() == ["the lease must be longer than the renew deadline"]
    assert ElectionTiming(15, 2.4, 2).problems() == [
        "the renew deadline must be longer than 1.2 times the retry period"]
    assert "the retry period must be greater than zero" in ElectionTiming(15, 10, 0).problems()
    with pytest.raises(ValueError, match="LEADER_ELECTION_LEASE_SECONDS"):
        Settings(leader_election_lease_seconds=5)  # the renew deadline stays 10


def test_a_missing_lease_is_created_with_no_transition() -> None:
    assert next_record(None, 0.0, NOW, "a", 15) == LeaseRecord("a", 15, NOW, NOW, 0)


def test_another_holders_lease_is_valid_for_its_duration_from_when_it_was_first_seen() -> None:
    seen = Observed(held_by("b"), at=100.0)
    assert next_record(seen, 114.9, NOW, "a", 15) is None
    taken = next_record(seen, 115.1, NOW, "a", 15)
    assert taken == LeaseRecord("a", 15, NOW, NOW, 4), "one more transition: the epoch the records carry"


def test_the_holders_own_duration_counts_not_ours() -> None:
    seen = Observed(held_by("b", lease_seconds=60), at=100.0)
    assert next_record(seen, 130.0, NOW, "a", 15) is None


def test_renewing_keeps_the_acquire_time_and_the_transitions() -> None:
    seen = Observed(held_by("a"), at=100.0)
    renewed = next_record(seen, 100.0, NOW, "a", 15)
    assert renewed == LeaseRecord("a", 15, "2026-12-03T11:00:00.000000Z", NOW, 3)


def test_a_handed_back_lease_is_taken_at_once() -> None:
    released = Observed(LeaseRecord("", 1, NOW, NOW, 3), at=100.0)
    assert next_record(released, 100.0, NOW, "a", 15) == LeaseRecord("a", 15, NOW, NOW, 4)


def test_the_tenure_ends_at_the_renew_deadline_counted_from_the_request() -> None:
    now = [0.0]
    tenure = Tenure(10.0, lambda: now[0])
    assert not tenure.may_act(), "never led"
    with pytest.raises(LeadershipLostError):
        tenure.check()
    tenure.renewed(sent_at=5.0, epoch=2)
    now[0] = 14.9
    assert tenure.may_act() and tenure.epoch == 2
    tenure.check()
    now[0] = 15.0
    assert not tenure.may_act()
    with pytest.raises(LeadershipLostError):
        tenure.check()
