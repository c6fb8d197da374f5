"""Admission by the namespace's ResourceQuota, without I/O: quantities, what a pod takes, what a quota allows,
and the FIFO decision. (The queue in the inventory and its record: ``test_model_inventory``; on the real control plane:
``test/integration/test_admission.py``.)"""

from __future__ import annotations

from fractions import Fraction

import pytest

from model_services_orchestrator.admission import (
    Quota,
    decide,
    describe,
    parse_quantity,
    pod_demand,
    read_quota,
    scaled,
)
from model_services_orchestrator.pod_specs import PodSettings, build_pod

CPU, MEMORY, PODS = "requests.cpu", "requests.memory", "pods"
SIM, SIMULATOR = "sim-1", "so01"


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Fraction(1, 10)), ("1.5", Fraction(3, 2)), ("2", Fraction(2)), ("128Mi", Fraction(128 * 2**20)),
    ("1Gi", Fraction(2**30)), ("1G", Fraction(10**9)), ("1e3", Fraction(1000)), ("0.5Ki", Fraction(512)),
    ("1k", Fraction(1000)), ("250u", Fraction(1, 4000)),
])
def test_kubernetes_quantities_are_read_exactly(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "1.2.3", "m"])
def test_what_is_no_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_a_pod_takes_itself_and_its_requests_and_limits_as_the_daemon_builds_it() -> None:
    settings = PodSettings(so="dots-so", cpu_request="250m", memory_request="256Mi", cpu_limit="1",
                           memory_limit="1Gi")
    body = build_pod(settings=settings, simulator_id=SIMULATOR, simulation_id=SIM, model_id="m", image="i:1",
                     env=(), keep_logs_hours=0.0)
    assert pod_demand(body) == {PODS: 1, CPU: Fraction(1, 4), MEMORY: 256 * 2**20, "limits.cpu": 1,
                                "limits.memory": 2**30}


def test_a_limit_without_a_request_requests_as_much() -> None:
    body = {"spec": {"containers": [{"resources": {"limits": {"cpu": "2"}}}]}}
    assert pod_demand(body) == {PODS: Fraction(1), CPU: Fraction(2), "limits.cpu": Fraction(2)}


def test_a_quota_is_read_under_the_canonical_names_and_its_scopes_decide_whether_it_holds_our_pods() -> None:
    quota = read_quota({"metadata": {"name": "q"}, "spec": {"hard": {
        "cpu": "4", "requests.cpu": "3", "count/pods": "10", "services": "2", "requests.nvidia.com/gpu": "1"}},
        "status": {"used": {"requests.cpu": "1500m", "pods": "2"}}})
    assert quota == Quota("q", hard={CPU: Fraction(3), PODS: Fraction(10)},
                          used={CPU: Fraction(3, 2), PODS: Fraction(2)}, applies=True)
    assert read_quota({"metadata": {"name": "t"}, "spec": {"hard": {"pods": "1"}, "scopes": ["Terminating"]}}
                      ).applies is False
    assert read_quota({"metadata": {"name": "n"}, "spec": {"hard": {"pods": "1"}, "scopeSelector": {
        "matchExpressions": [{"scopeName": "NotBestEffort", "operator": "Exists"}]}}}).applies is True


def test_describe_writes_amounts_as_people_do() -> None:
    assert describe({CPU: Fraction(3, 2), MEMORY: Fraction(768 * 2**20), PODS: Fraction(6)}) == (
        "pods=6, requests.cpu=1500m, requests.memory=768Mi")


POD = {PODS: Fraction(1), CPU: Fraction(1, 2)}
QUOTA = Quota("compute", hard={CPU: Fraction(4), PODS: Fraction(10)}, used={CPU: Fraction(1)})


def test_simulations_are_admitted_in_order_while_they_fit_and_the_first_that_does_not_holds_up_the_rest() -> None:
    queue = [("a", scaled(POD, 2)), ("b", scaled(POD, 5)), ("c", scaled(POD, 1))]
    verdicts = decide(queue, [QUOTA], reserved={})
    # 3 CPUs free: a (1) fits, b (2.5) does not fit the 2 left, c (0.5) would, but waits behind b (strict FIFO).
    assert verdicts.admitted == ["a"]
    assert verdicts.waiting["b"] == "needs requests.cpu=2500m; free in ResourceQuota compute: requests.cpu=2"
    assert verdicts.waiting["c"] == "behind simulation b, first in the queue"
    assert verdicts.never == {}


def test_what_admitted_simulations_still_create_is_not_free() -> None:
    assert decide([("a", scaled(POD, 2))], [QUOTA], reserved={CPU: Fraction(5, 2)}).admitted == []
    assert decide([("a", scaled(POD, 2))], [QUOTA], reserved={CPU: Fraction(2)}).admitted == ["a"]


def test_a_simulation_that_needs_more_than_hard_is_never_admitted_and_holds_up_nobody() -> None:
    verdicts = decide([("big", scaled(POD, 9)), ("small", scaled(POD, 1))], [QUOTA], reserved={})
    assert verdicts.never == {"big": "needs requests.cpu=4500m, more than ResourceQuota compute allows at all "
                                     "(requests.cpu=4)"}
    assert verdicts.admitted == ["small"]


def test_every_quota_that_applies_must_hold_it_and_one_that_does_not_apply_is_ignored() -> None:
    pods = Quota("pods", hard={PODS: Fraction(1)})
    scoped = Quota("terminating", hard={CPU: Fraction(0)}, applies=False)
    assert decide([("a", scaled(POD, 2))], [QUOTA, pods, scoped], reserved={}).never["a"].startswith(
        "needs pods=2, more than ResourceQuota pods allows")
    assert decide([("a", scaled(POD, 1))], [QUOTA, pods, scoped], reserved={}).admitted == ["a"]


def test_a_quota_its_controller_has_not_counted_yet_admits_nothing_until_it_has() -> None:
    fresh = read_quota({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}})
    assert not fresh.counted
    verdicts = decide([("a", {PODS: Fraction(1)}), ("b", {PODS: Fraction(11)})], [fresh], {})
    assert verdicts.admitted == []
    assert verdicts.waiting == {"a": "ResourceQuota new not counted yet by its controller"}
    assert "b" in verdicts.never, "what can never fit is known from hard alone"
    counted = read_quota({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "10", "requests.cpu": "4"}},
                          "status": {"used": {"pods": "0", "requests.cpu": "0"}}})
    assert counted.counted and decide([("a", {PODS: Fraction(1)})], [counted], {}).admitted == ["a"]
