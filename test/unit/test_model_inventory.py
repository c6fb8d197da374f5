"""Table tests of the inventory: for every state and event, the decisions the SO relies on.

The inventory is where the protocol's promises are kept (ModelsReady once,
one ModelHasTerminated per model, AllModelsHaveTerminated once and last), so
each rule is pinned down here without any I/O. ``settle`` plays the
runtime's part: the record saved, the decided messages released.
"""

from __future__ import annotations

import dataclasses

import pytest

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import pod_name, unique_pod_name
from model_services_orchestrator.simulation_records import decode_record, encode_record

SIM = "sim-1"
SIMULATOR = "so01"
T0 = 1_000_000.0
START_TIMEOUT = 300.0
Said = tuple[str, str, int]


def make_inventory(**overrides: float) -> inv.Inventory:
    options = {"start_timeout_seconds": START_TIMEOUT, "min_cleanup_delay_seconds": 5.0, **overrides}
    return inv.Inventory(**options)  # type: ignore[arg-type]  # the keyword arguments that are floats


def deploy(inventory: inv.Inventory, *model_ids: str, keep_logs_hours: float = 0.0,
           simulation_id: str = SIM) -> set[str]:
    specs = tuple(inv.ModelSpec(model_id, "image:1", (("A", "1"),)) for model_id in model_ids)
    return inventory.handle(inv.DeployRequested(SIMULATOR, simulation_id, keep_logs_hours, specs, T0))


def settle(inventory: inv.Inventory, simulation_id: str = SIM, *, deliver: bool = True) -> list[Said]:
    """What a sync publishes now (the record saved first), as (kind, model, exit code); confirmed at once."""
    if inventory.needs_save(simulation_id):
        version, _ = inventory.take_changes(simulation_id)
        inventory.record_saved(simulation_id, version)
    released = inventory.releasable(simulation_id)
    if deliver:
        batch = released
        while batch:  # confirmations may release what waited for them (the order across sessions)
            inventory.handle_all(inv.Delivered(message) for message in batch)
            if inventory.needs_save(simulation_id):  # the confirmations, saved by the next sync
                inventory.record_saved(simulation_id, inventory.take_changes(simulation_id)[0])
            batch = inventory.releasable(simulation_id)
            released += batch
    return [(message.kind.value, message.model_id, message.exit_code) for message in released]


def seen(model_id: str, state: ContainerState, *, exit_code: int | None = None, reason: str = "",
         message: str = "", deleting: bool = False, created_at: float | None = T0, queued: bool = False,
         gated: bool = False, stopped_by_kueue: str = "") -> PodObservation:
    return PodObservation(
        pod_name=pod_name(SIMULATOR, SIM, model_id), simulator_id=SIMULATOR, simulation_id=SIM,
        model_id=model_id, keep_logs_hours=0.0, state=state, reason=reason, message=message, exit_code=exit_code,
        created_at=created_at, deleting=deleting, queued=queued, gated=gated, stopped_by_kueue=stopped_by_kueue)


def running(inventory: inv.Inventory, *model_ids: str) -> None:
    for model_id in model_ids:
        inventory.handle(inv.PodCreated(SIM, model_id, T0))
        inventory.handle(inv.PodSeen(seen(model_id, ContainerState.RUNNING), T0))
    settle(inventory)


def ended(inventory: inv.Inventory, model_id: str, code: int, at: float = T0 + 1) -> list[Said]:
    inventory.handle(inv.PodSeen(seen(model_id, ContainerState.TERMINATED, exit_code=code), at))
    return settle(inventory)


def creates(inventory: inv.Inventory) -> list[str]:
    return [create.spec.model_id for create in inventory.pods_to_create(SIM, 10_000)]


# ---------------------------------------------------------------- deploying


def test_pods_are_created_only_once_the_record_exists() -> None:
    inventory = make_inventory()
    assert deploy(inventory, "a", "b") == {SIM}
    assert inventory.needs_save(SIM)
    assert creates(inventory) == [], "no pod before the record (and the Secrets its pods need) is saved"
    settle(inventory)
    assert creates(inventory) == ["a", "b"]


def test_a_model_listed_twice_gets_one_pod() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "a", "b")
    settle(inventory)
    assert creates(inventory) == ["a", "b"]


def test_a_created_pod_is_not_created_again_whichever_came_first() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))  # the create answered first
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING), T0))
    inventory.handle(inv.PodSeen(seen("b", ContainerState.WAITING), T0))  # the watch showed it first
    inventory.handle(inv.PodCreated(SIM, "b", T0))
    assert creates(inventory) == []
    assert {m.phase for m in inventory.simulations[SIM].models.values()} == {inv.Phase.CREATED}


def test_a_repeated_identical_deploy_changes_nothing() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    assert deploy(inventory, "a") == set()
    assert settle(inventory) == []


def test_a_second_deploy_answers_the_models_it_adds_with_minus_one_and_they_hold_up_nothing() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    deploy(inventory, "a", "b")
    assert settle(inventory) == [("ModelHasTerminated", "b", inv.EXIT_CREATE_REJECTED)]
    assert creates(inventory) == []
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == [("ModelsReady", "", 0)]
    assert ended(inventory, "a", 0) == [("ModelHasTerminated", "a", 0), ("AllModelsHaveTerminated", "", 0)]


# ---------------------------------------------------------------- ending


@pytest.mark.parametrize(
    ("state", "exit_code", "reason", "expected_code"),
    [
        (ContainerState.TERMINATED, 0, "Completed", 0),
        (ContainerState.TERMINATED, 1, "Error", 1),
        (ContainerState.TERMINATED, 137, "OOMKilled", 137),
        (ContainerState.TERMINATED, None, "Error", inv.EXIT_POD_LOST),
        (ContainerState.LOST, None, "Evicted", inv.EXIT_POD_LOST),
    ],
)
def test_container_end_is_reported_with_its_code(
    state: ContainerState, exit_code: int | None, reason: str, expected_code: int
) -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.PodSeen(seen("a", state, exit_code=exit_code, reason=reason), T0 + 1))
    assert inventory.releasable(SIM) == [], "nothing goes out before the record holding it is saved"
    assert settle(inventory) == [("ModelHasTerminated", "a", expected_code)]
    reports = inventory.take_reports(SIM)
    assert [(r.exit_code, r.read_log) for r in reports] == (
        [] if expected_code == 0 else [(expected_code, state is ContainerState.TERMINATED)])


def test_a_termination_seen_again_is_not_reported_again() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    assert len(ended(inventory, "a", 0)) == 1
    assert ended(inventory, "a", 0, T0 + 2) == []
    inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 3))
    assert settle(inventory) == []


def test_all_models_have_terminated_follows_the_last_report_once() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    ended(inventory, "a", 0)
    assert ended(inventory, "b", 2, T0 + 2) == [("ModelHasTerminated", "b", 2), ("AllModelsHaveTerminated", "", 0)]
    assert inventory.simulations[SIM].finished_at == T0 + 2
    assert ended(inventory, "b", 2, T0 + 3) == []


def test_a_decided_message_waits_for_the_broker_and_is_released_once() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    first = settle(inventory, deliver=False)
    assert [kind for kind, _, _ in first] == ["ModelHasTerminated"], "the end waits for the terminations"
    assert settle(inventory, deliver=False) == []
    simulation = inventory.simulations[SIM]
    assert simulation.all_terminated is inv.Delivery.DECIDED
    assert not inventory.cleanup_due(SIM, T0 + 10_000), "never cleaned up before the broker confirmed the end"


# ---------------------------------------------------------------- ready


def test_models_ready_once_when_every_model_is_ready() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == []
    inventory.handle(inv.ReadyReceived(SIM, "b", T0))
    assert inventory.needs_save(SIM), "the record says ModelsReady is decided before it goes out"
    assert settle(inventory) == [("ModelsReady", "", 0)]
    inventory.handle(inv.ReadyReceived(SIM, "b", T0))
    assert settle(inventory) == []


def test_a_ready_changes_the_record_at_once() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    assert inventory.handle(inv.ReadyReceived(SIM, "a", T0)) == {SIM}
    assert inventory.needs_save(SIM)
    assert inventory.take_changes(SIM)[1] == {"a"}


def test_no_models_ready_when_a_model_crashed_before_it_was_ready() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    ended(inventory, "b", 1)
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == []


def test_ready_for_unknown_simulation_or_model_is_ignored() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    assert inventory.handle(inv.ReadyReceived("other", "a", T0)) == set()
    assert inventory.handle(inv.ReadyReceived(SIM, "zzz", T0)) == set()
    running(inventory, "a")
    inventory.handle(inv.Tick(T0 + 10 * START_TIMEOUT))
    assert settle(inventory) == []


# ---------------------------------------------------------------- failures


def test_rejected_create_fails_the_model_with_minus_one() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreateRejected(SIM, "a", "422 invalid", T0))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_CREATE_REJECTED),
                                 ("AllModelsHaveTerminated", "", 0)]


def test_a_model_never_created_fails_at_its_start_deadline_with_minus_two() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)  # creates keep failing on a transient error: nothing is decided by that
    assert inventory.next_deadline() == T0 + START_TIMEOUT
    inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]
    assert creates(inventory) == [] and inventory.pods_to_stop(SIM) == []
    # The create that was under way lands after all: the pod it made is stopped.
    inventory.handle(inv.PodCreated(SIM, "a", T0 + START_TIMEOUT + 1))
    assert [stop.model_id for stop in inventory.pods_to_stop(SIM)] == ["a"]


def test_invalid_image_name_fails_at_once_and_stops_the_pod_in_place() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="InvalidImageName"), T0 + 1))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]
    assert [stop.delete for stop in inventory.pods_to_stop(SIM)] == [False]
    inventory.handle(inv.PodStopped(SIM, "a"))
    assert inventory.pods_to_stop(SIM) == []
    # Its own end is not a second failure.
    inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 2))
    assert settle(inventory) == []


def test_a_pod_stuck_waiting_fails_after_the_start_timeout() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="ImagePullBackOff"), T0 + 1))
    running(inventory, "b")
    assert inventory.next_deadline() == T0 + START_TIMEOUT
    inventory.handle(inv.Tick(T0 + START_TIMEOUT - 1))
    assert settle(inventory) == []
    inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]
    assert "ImagePullBackOff" in inventory.take_reports(SIM)[0].reason
    assert [(stop.model_id, stop.delete) for stop in inventory.pods_to_stop(SIM)] == [("a", False)]


def test_a_pod_gated_by_kueue_waits_past_the_start_timeout_which_counts_from_its_ungating() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    assert [create.group_size for create in inventory.pods_to_create(SIM, 10)] == [1]
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    gated = seen("a", ContainerState.WAITING, reason="SchedulingGated", queued=True, gated=True)
    inventory.handle(inv.PodSeen(gated, T0 + 1))
    assert inventory.next_deadline() is None
    inventory.handle(inv.Tick(T0 + 10 * START_TIMEOUT))
    assert settle(inventory) == [], "waiting for Kueue is not failing to start"
    ungated = T0 + 20 * START_TIMEOUT
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="ContainerCreating", queued=True), ungated))
    assert inventory.next_deadline() == ungated + START_TIMEOUT
    inventory.handle(inv.Tick(ungated + START_TIMEOUT))
    assert settle(inventory)[0] == ("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)


def test_a_kueue_group_that_can_never_be_complete_answers_every_model_at_once() -> None:
    inventory = make_inventory(whole_groups=True)
    deploy(inventory, "a", "b", "c")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="SchedulingGated", queued=True,
                                      gated=True), T0 + 1))
    inventory.handle(inv.PodCreateRejected(SIM, "b", "422 Invalid", T0 + 1))
    said = settle(inventory)
    assert sorted(said) == [("AllModelsHaveTerminated", "", 0), ("ModelHasTerminated", "a", -1),
                            ("ModelHasTerminated", "b", -1), ("ModelHasTerminated", "c", -1)]
    assert "model b has no pod" in inventory.take_reports(SIM)[-1].reason
    assert [stop.model_id for stop in inventory.pods_to_stop(SIM)] == ["a"], "a's gated pod stopped, kept"
    assert inventory.pods_to_create(SIM, 10) == []
    # Without Kueue's groups, the others go on.
    plain = make_inventory()
    deploy(plain, "a", "b")
    settle(plain)
    plain.handle(inv.PodCreateRejected(SIM, "b", "422 Invalid", T0 + 1))
    assert settle(plain) == [("ModelHasTerminated", "b", -1)]


def test_a_group_kueue_stops_is_reported_minus_three_with_kueues_reason_at_once() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    running(inventory, "a", "b")
    why = "WorkloadEvicted: The workload is deactivated"
    for model_id in ("a", "b"):  # the condition comes before the deletion, while the container still runs
        inventory.handle(inv.PodSeen(seen(model_id, ContainerState.RUNNING, queued=True, stopped_by_kueue=why),
                                     T0 + 2))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_POD_LOST),
                                 ("ModelHasTerminated", "b", inv.EXIT_POD_LOST), ("AllModelsHaveTerminated", "", 0)]
    assert all(report.reason == f"stopped by Kueue: {why}" for report in inventory.take_reports(SIM))


@pytest.mark.parametrize("how", ["deleted", "deletion_timestamp", "missing_from_list"])
def test_a_pod_removed_by_someone_else_fails_with_minus_three(how: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    if how == "deleted":
        inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 1))
    elif how == "deletion_timestamp":
        inventory.handle(inv.PodSeen(seen("a", ContainerState.RUNNING, deleting=True), T0 + 1))
    else:
        inventory.handle(inv.ListStarted())
        inventory.handle(inv.PodListed((seen("b", ContainerState.RUNNING),), T0 + 1))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_POD_LOST)]


@pytest.mark.parametrize("learnt_by", ["created", "watched"])
def test_a_pod_learnt_of_after_a_list_was_requested_is_not_gone_for_missing_from_it(learnt_by: str) -> None:
    """A list is a snapshot from when it was requested: a pod made after that is not in it, and runs."""
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.ListStarted())
    if learnt_by == "created":
        inventory.handle(inv.PodCreated(SIM, "b", T0))
    else:
        inventory.handle(inv.PodSeen(seen("b", ContainerState.WAITING), T0))
    inventory.handle(inv.PodListed((seen("a", ContainerState.RUNNING),), T0 + 1))
    assert settle(inventory) == []
    # The next list, requested once the pod was known, may say it is gone.
    inventory.handle(inv.ListStarted())
    inventory.handle(inv.PodListed((seen("a", ContainerState.RUNNING),), T0 + 2))
    assert settle(inventory) == [("ModelHasTerminated", "b", inv.EXIT_POD_LOST)]


def test_a_list_without_its_start_takes_no_pod_for_gone() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    inventory.handle(inv.PodListed((), T0 + 1))
    assert settle(inventory) == []


def test_a_create_refused_for_a_while_fails_at_its_deadline_with_the_reason() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreateFailed(SIM, "a", "403 Forbidden: pods is forbidden"))
    assert settle(inventory) == [] and creates(inventory) == ["a"], "retried, not answered"
    inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT),
                                 ("AllModelsHaveTerminated", "", 0)]
    reasons = [report.reason for report in inventory.take_reports(SIM)]
    assert reasons == ["container did not start: pod not created: 403 Forbidden: pods is forbidden"]


def test_an_adopted_pod_labelled_nan_is_still_cleaned_up() -> None:
    inventory = make_inventory()
    nan = PodObservation(pod_name=pod_name(SIMULATOR, SIM, "a"), simulator_id=SIMULATOR, simulation_id=SIM,
                         model_id="a", keep_logs_hours=float("nan"), state=ContainerState.RUNNING, created_at=T0)
    inventory.handle(inv.PodListed((nan,), T0))
    assert inventory.simulations[SIM].keep_logs_hours == 0.0
    ended(inventory, "a", 0)
    assert inventory.cleanup_due(SIM, T0 + 10)


def test_a_deploy_with_an_id_that_cannot_be_answered_answers_the_others_minus_one() -> None:
    inventory = make_inventory()
    specs = (inv.ModelSpec("a", "image:1"),)
    inventory.handle(inv.DeployRequested(SIMULATOR, SIM, 0.0, specs, T0, refused="model id 'b\\x00' holds U+0000"))
    assert settle(inventory) == [("ModelHasTerminated", "a", inv.EXIT_CREATE_REJECTED),
                                 ("AllModelsHaveTerminated", "", 0)]
    assert creates(inventory) == []
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == [], "never a ModelsReady"


def test_unique_pod_names_of_two_sos_differ() -> None:
    assert unique_pod_name(SIMULATOR, SIM, "a", "so-a") != unique_pod_name(SIMULATOR, SIM, "a", "so-b")


def test_a_listing_leaves_a_model_whose_pod_is_still_to_be_made_to_its_create() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodListed((), T0 + 1))
    assert settle(inventory) == [] and creates(inventory) == ["a"]


def test_an_image_the_registry_refuses_twice_fails_at_once_with_its_message() -> None:
    message = ('rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nope:1": '
               'failed to resolve reference "docker.io/library/nope:1": docker.io/library/nope:1: not found')
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    for when, reason in ((T0 + 2, "ErrImagePull"), (T0 + 2.5, "ErrImagePull"), (T0 + 3, "ImagePullBackOff")):
        # The same status seen again (a re-list) is not a second answer of the registry.
        inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason=reason, message=message), when))
        assert settle(inventory) == []
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="ErrImagePull", message=message), T0 + 15))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]
    assert message in inventory.take_reports(SIM)[0].reason


@pytest.mark.parametrize("message", [
    "pull access denied, repository does not exist or may require authorization",
    "failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized",
    "manifest unknown",
])
def test_other_refusals_of_the_registry_count_too(message: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    for when, reason in ((T0 + 1, "ErrImagePull"), (T0 + 2, "ImagePullBackOff"), (T0 + 3, "ErrImagePull")):
        inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason=reason, message=message), when))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]


@pytest.mark.parametrize("message", [
    "failed to copy: httpReadSeeker: failed open: unexpected status code 503 Service Unavailable",
    "429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit",
    "dial tcp 10.0.0.1:443: i/o timeout",
])
def test_a_transient_pull_error_waits_for_the_start_timeout(message: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    for attempt in range(5):
        for reason in ("ErrImagePull", "ImagePullBackOff"):
            inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason=reason, message=message),
                                         T0 + 10 * attempt + 1))
            assert settle(inventory) == []
    inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_START_TIMEOUT)]


def test_an_unscheduled_pod_that_times_out_is_deleted_as_it_has_no_logs() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="Unschedulable"), T0 + 1))
    inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert [(stop.model_id, stop.delete) for stop in inventory.pods_to_stop(SIM)] == [("a", True)]


# ---------------------------------------------------------------- ending early


def test_ending_early_gives_a_grace_period_then_stops_what_still_runs_with_minus_four() -> None:
    inventory = make_inventory(stop_grace_seconds=30.0)
    deploy(inventory, "a", "b", "c")
    running(inventory, "a", "b", "c")
    inventory.handle(inv.EndRequested(SIM, None, T0))
    ended(inventory, "a", 0, T0 + 5)  # exits on its own
    assert inventory.next_deadline() == T0 + 30
    inventory.handle(inv.Tick(T0 + 29))
    assert settle(inventory) == []
    inventory.handle(inv.Tick(T0 + 30))
    assert settle(inventory) == [("ModelHasTerminated", "b", inv.EXIT_ENDED_EARLY),
                                 ("ModelHasTerminated", "c", inv.EXIT_ENDED_EARLY),
                                 ("AllModelsHaveTerminated", "", 0)]
    # Stopped in place (activeDeadlineSeconds), never deleted: their logs stay until the cleanup.
    assert {(stop.model_id, stop.delete) for stop in inventory.pods_to_stop(SIM)} == {("b", False), ("c", False)}
    assert inventory.take_reports(SIM) == [], "the SO asked for it: no ErrorOccurred"
    assert not inventory.cleanup_due(SIM, T0 + 100), "not before the stops are done"
    inventory.handle_all([inv.PodStopped(SIM, "b"), inv.PodStopped(SIM, "c")])
    settle(inventory)
    assert inventory.cleanup_due(SIM, T0 + 100)
    # The pods it stopped are not reported again.
    ended(inventory, "b", 137, T0 + 31)
    assert settle(inventory) == []


def test_a_ready_models_own_simulation_done_lets_it_finish_until_the_finish_timeout() -> None:
    # Today's SO ends every simulation with a SimulationDone per model; the models then write their
    # results, which can take many minutes, and exit 0 (PROTOCOL.md section 4).
    inventory = make_inventory(finish_timeout_seconds=3600.0)
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle_all([inv.ReadyReceived(SIM, "a", T0), inv.ReadyReceived(SIM, "b", T0)])
    settle(inventory)
    inventory.handle_all([inv.EndRequested(SIM, "a", T0), inv.EndRequested(SIM, "b", T0)])
    inventory.handle(inv.Tick(T0 + 3599))
    assert settle(inventory) == [] and inventory.pods_to_stop(SIM) == []
    assert ended(inventory, "a", 0, T0 + 3000) == [("ModelHasTerminated", "a", 0)]
    inventory.handle(inv.Tick(T0 + 3600))
    assert settle(inventory) == [("ModelHasTerminated", "b", inv.EXIT_ENDED_EARLY), ("AllModelsHaveTerminated", "", 0)]
    assert [stop.model_id for stop in inventory.pods_to_stop(SIM)] == ["b"]
    assert not inventory.pods_to_stop(SIM)[0].delete, "stopped in place: its pod and logs kept"
    termination = inventory.simulations[SIM].models["b"].termination
    assert termination is not None and "3600 s after the SO's SimulationDone" in termination.reason


def test_a_simulation_done_to_a_model_not_heard_from_stops_it_after_the_grace_and_models_ready_never_comes() -> None:
    """Today's SO ends a failed or deleted simulation with SimulationDone to each model, often while they start:
    a model not yet subscribed never hears it."""
    inventory = make_inventory(stop_grace_seconds=30.0)
    deploy(inventory, "a", "b", "c")
    running(inventory, "a", "b")  # c's pod is not created yet
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    settle(inventory)
    inventory.handle_all([inv.EndRequested(SIM, model, T0 + 1) for model in ("a", "b", "c")])
    settle(inventory)
    assert creates(inventory) == [], "no pod for a model that could never hear the SO"
    inventory.handle_all([inv.ReadyReceived(SIM, "b", T0 + 2), inv.ReadyReceived(SIM, "c", T0 + 2)])
    assert settle(inventory) == [], "no ModelsReady after the SO ended the simulation"
    inventory.handle(inv.Tick(T0 + 31))
    said = settle(inventory)
    assert sorted(said[:2]) == [("ModelHasTerminated", "b", -4), ("ModelHasTerminated", "c", -4)]
    assert [stop.model_id for stop in inventory.pods_to_stop(SIM)] == ["b"]
    assert ended(inventory, "a", 0, T0 + 40)[0] == ("ModelHasTerminated", "a", 0)
    assert inventory.simulations[SIM].models_ready is inv.Delivery.NONE


def test_models_ready_decided_but_not_yet_released_is_never_sent_after_the_sos_end() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))  # decided, the record not saved yet
    inventory.handle(inv.EndRequested(SIM, "a", T0))
    assert settle(inventory) == []


def restartable(inventory: inv.Inventory) -> None:
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    settle(inventory)


def test_a_running_model_unheard_since_a_connection_is_restarted_once_under_a_new_name() -> None:
    inventory = make_inventory(ready_settle_seconds=10.0)
    restartable(inventory)
    first = inventory.simulations[SIM].models["b"].pod_name
    inventory.handle(inv.Connected(T0 + 5))
    inventory.handle(inv.Tick(T0 + 14))
    assert inventory.pods_to_delete(SIM) == []
    inventory.handle(inv.Tick(T0 + 15))
    assert settle(inventory) == []
    assert [(delete.model_id, delete.pod_name) for delete in inventory.pods_to_delete(SIM)] == [("b", first)]
    [create] = inventory.pods_to_create(SIM, 10)
    assert create.spec.model_id == "b" and create.pod_name != first
    assert inventory.take_restarts(SIM) == ["b"]
    # The old pod going is no -3; the new one runs and announces itself.
    inventory.handle(inv.PodGone(SIM, "b", first, T0 + 16))
    inventory.handle(inv.PodDeleted(SIM, "b", first))
    assert settle(inventory) == [] and inventory.pods_to_delete(SIM) == []
    inventory.handle(inv.PodCreated(SIM, "b", T0 + 16))
    inventory.handle(inv.PodSeen(PodObservation(
        pod_name=create.pod_name, simulator_id=SIMULATOR, simulation_id=SIM, model_id="b", keep_logs_hours=0.0,
        state=ContainerState.RUNNING), T0 + 17))
    # Once only: a second connection does not restart it again.
    inventory.handle(inv.Connected(T0 + 20))
    inventory.handle(inv.Tick(T0 + 40))
    assert inventory.pods_to_create(SIM, 10) == []
    inventory.handle(inv.ReadyReceived(SIM, "b", T0 + 41))
    assert settle(inventory) == [("ModelsReady", "", 0)]


def test_a_restored_model_the_watch_shows_running_only_after_the_connection_is_checked_too() -> None:
    inventory = make_inventory(ready_settle_seconds=10.0)
    restartable(inventory)
    simulation = recorded_as(inventory.simulations[SIM])
    for model in simulation.models.values():
        model.container = None  # what a record holds: the watch has not listed the pods yet
    restarted = make_inventory(ready_settle_seconds=10.0)
    restarted.restore(simulation, T0 + 2)
    restarted.handle(inv.Connected(T0 + 5))  # connected before the first list arrived
    restarted.handle(inv.PodListed((seen("a", ContainerState.RUNNING), seen("b", ContainerState.RUNNING)), T0 + 6))
    restarted.handle(inv.Tick(T0 + 15))
    settle(restarted)
    assert [delete.model_id for delete in restarted.pods_to_delete(SIM)] == ["b"]
    assert restarted.take_restarts(SIM) == ["b"]


def test_a_model_first_shown_not_yet_running_after_the_connection_is_not_restarted() -> None:
    inventory = make_inventory(ready_settle_seconds=10.0)
    deploy(inventory, "a")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    settle(inventory)
    simulation = recorded_as(inventory.simulations[SIM])
    restarted = make_inventory(ready_settle_seconds=10.0)
    restarted.restore(simulation, T0 + 2)
    restarted.handle(inv.Connected(T0 + 5))
    restarted.handle(inv.PodListed((seen("a", ContainerState.WAITING),), T0 + 6))
    restarted.handle(inv.PodSeen(seen("a", ContainerState.RUNNING), T0 + 7))  # it starts, and will announce
    restarted.handle(inv.Tick(T0 + 30))
    settle(restarted)
    assert restarted.pods_to_delete(SIM) == [] and restarted.take_restarts(SIM) == []


def test_a_ready_that_arrives_within_the_settle_time_restarts_nothing() -> None:
    inventory = make_inventory(ready_settle_seconds=10.0)
    restartable(inventory)
    inventory.handle(inv.Connected(T0 + 5))
    inventory.handle(inv.ReadyReceived(SIM, "b", T0 + 6))
    inventory.handle(inv.Tick(T0 + 60))
    assert inventory.pods_to_delete(SIM) == [] and inventory.pods_to_create(SIM, 10) == []


def test_nothing_is_restarted_after_models_ready_or_the_sos_end() -> None:
    for end in (inv.EndRequested(SIM, "a", T0 + 1), inv.EndRequested(SIM, None, T0 + 1)):
        inventory = make_inventory(ready_settle_seconds=10.0)
        restartable(inventory)
        inventory.handle(end)
        inventory.handle(inv.Connected(T0 + 5))
        inventory.handle(inv.Tick(T0 + 20))
        assert inventory.pods_to_delete(SIM) == []


# ---------------------------------------------------------------- cleanup


def test_cleanup_after_keep_logs_hours_and_never_before_the_end() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=0.5)
    running(inventory, "a")
    assert not inventory.cleanup_due(SIM, T0 + 100_000), "still running: never deleted"
    ended(inventory, "a", 0, T0 + 10)
    assert inventory.next_deadline() == T0 + 10 + 1800
    assert not inventory.cleanup_due(SIM, T0 + 10 + 1799)
    assert inventory.handle(inv.Tick(T0 + 10 + 1800)) == {SIM}
    assert inventory.cleanup_due(SIM, T0 + 10 + 1800)
    inventory.handle(inv.SimulationCleanedUp(SIM))
    assert SIM not in inventory.simulations


def test_zero_keep_logs_hours_cleans_up_after_the_minimum_delay() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=0.0)
    running(inventory, "a")
    ended(inventory, "a", 0, T0)
    assert inventory.next_deadline() == T0 + 5.0


@pytest.mark.parametrize(("given", "kept"), [(-3.0, 0.0), (float("nan"), 0.0), (2.0, 2.0)])
def test_keep_logs_hours_is_sanitised(given: float, kept: float) -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=given)
    assert inventory.simulations[SIM].keep_logs_hours == kept


@pytest.mark.parametrize("requested", [float("inf"), 1e308, 10_000.0])
def test_keep_logs_hours_is_capped_so_pods_are_never_kept_forever(requested: float) -> None:
    inventory = make_inventory(max_keep_logs_hours=168.0)
    deploy(inventory, "a", keep_logs_hours=requested)
    running(inventory, "a")
    ended(inventory, "a", 0, T0 + 10)
    assert inventory.next_deadline() == T0 + 10 + 168 * 3600
    assert inventory.cleanup_due(SIM, T0 + 10 + 168 * 3600)


# ---------------------------------------------------------------- pods, names, adoption


def test_a_pod_of_another_incarnation_is_ignored() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    stranger = PodObservation(pod_name="other-name", simulator_id=SIMULATOR, simulation_id=SIM, model_id="a",
                              keep_logs_hours=0, state=ContainerState.TERMINATED, exit_code=1)
    assert inventory.handle(inv.PodSeen(stranger, T0)) == set()


def test_orphan_pods_are_adopted_from_a_listing_and_never_trigger_models_ready() -> None:
    inventory = make_inventory()
    inventory.handle(inv.PodListed((seen("a", ContainerState.RUNNING), seen("b", ContainerState.RUNNING)), T0))
    assert set(inventory.simulations[SIM].models) == {"a", "b"}
    settle(inventory)
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == []
    assert ended(inventory, "a", 0) == [("ModelHasTerminated", "a", 0)]


def test_ids_that_differ_only_in_case_get_pods_of_their_own() -> None:
    inventory = make_inventory()
    deploy(inventory, "ModelA", "modela", "MODELA")
    settle(inventory)
    names = [create.pod_name for create in inventory.pods_to_create(SIM, 10)]
    assert names[0] == pod_name(SIMULATOR, SIM, "ModelA") and len(set(names)) == 3


def test_a_pod_name_taken_by_another_is_never_taken_over() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    settle(inventory)
    inventory.handle(inv.PodCreateRejected(SIM, "a", "409 taken", T0, name_taken=True))
    assert settle(inventory) == []
    [create] = inventory.pods_to_create(SIM, 10)
    assert create.pod_name == unique_pod_name(SIMULATOR, SIM, "a") != pod_name(SIMULATOR, SIM, "a")
    # The unique name taken too (by someone who means it): the model gets its answer, -1.
    inventory.handle(inv.PodCreateRejected(SIM, "a", "409 taken", T0, name_taken=True))
    assert settle(inventory)[:1] == [("ModelHasTerminated", "a", inv.EXIT_CREATE_REJECTED)]


def test_hyphen_joins_that_coincide_are_told_apart_by_exact_ids() -> None:
    assert pod_name("so", "x-y", "z") == pod_name("so", "x", "y-z")
    assert unique_pod_name("so", "x-y", "z") != unique_pod_name("so", "x", "y-z")
    inventory = make_inventory()
    inventory.handle(inv.DeployRequested("so", "x-y", 0.0, (inv.ModelSpec("z", "image:1"),), T0))
    inventory.handle(inv.DeployRequested("so", "x", 0.0, (inv.ModelSpec("y-z", "image:1"),), T0))
    inventory.handle(inv.PodCreated("x-y", "z", T0))
    # The pod the watch shows carries the exact ids of x-y/z: it ends x-y/z and nothing of x/y-z.
    theirs = PodObservation(pod_name=pod_name("so", "x-y", "z"), simulator_id="so", simulation_id="x-y",
                            model_id="z", keep_logs_hours=0, state=ContainerState.TERMINATED, exit_code=0)
    assert inventory.handle(inv.PodSeen(theirs, T0 + 1)) == {"x-y"}
    other = inventory.model("x", "y-z")
    assert other is not None and other.termination is None


# ---------------------------------------------------------------- restoring


def test_a_restored_simulation_publishes_again_what_was_decided_and_not_confirmed() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=4), T0 + 1))
    assert len(settle(inventory, deliver=False)) == 2  # handed out; the daemon dies before the broker confirms
    simulation = inventory.simulations[SIM]
    restarted = make_inventory()
    simulation.outgoing.clear()
    simulation.version = simulation.saved_version
    restarted.restore(simulation, T0 + 2)
    assert settle(restarted) == [("ModelHasTerminated", "a", 0), ("ModelHasTerminated", "b", 4),
                                 ("AllModelsHaveTerminated", "", 0)]
    assert settle(restarted) == []


def recorded_as(simulation: inv.Simulation, **changes: object) -> inv.Simulation:
    """The simulation as a record read back after a kill holds it: saved, nothing in flight."""
    for name, value in changes.items():
        setattr(simulation, name, value)
    simulation.outgoing.clear()
    simulation.version = simulation.saved_version = 1
    return simulation


def test_cleaning_up_a_delivered_simulation_leaves_its_old_packet_ids_to_their_new_messages() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert settle(inventory) == [("ModelsReady", "", 0)]
    assert ended(inventory, "a", 0)[-1] == ("AllModelsHaveTerminated", "", 0)
    settle(inventory)  # the deliveries saved: the ids are free
    finished = inventory.simulations[SIM]
    restarted = make_inventory()
    restarted.restore(recorded_as(finished), T0 + 2)  # its ids, delivered, are free to take again
    other = "sim-other"
    deploy(restarted, "b", simulation_id=other)
    restarted.handle(inv.PodCreated(other, "b", T0 + 3))
    restarted.handle(inv.PodSeen(dataclasses.replace(seen("b", ContainerState.RUNNING), simulation_id=other,
                                                     pod_name=pod_name(SIMULATOR, other, "b")), T0 + 3))
    restarted.handle(inv.ReadyReceived(other, "b", T0 + 4))
    restarted.record_saved(other, restarted.take_changes(other)[0])
    [models_ready] = restarted.releasable(other)
    assert models_ready.packet_id == finished.models_ready_id, "the same id, as after any restart"
    restarted.handle(inv.Received(models_ready))  # the broker's PUBREC for the new message
    restarted.handle(inv.SimulationCleanedUp(SIM))
    assert restarted.receipts == {models_ready.packet_id: models_ready.key}, "its receipt is kept"
    assert models_ready.packet_id in restarted.packet_ids, "and its id stays in use"


def test_a_restore_decides_models_ready_when_every_ready_is_recorded_and_it_is_not() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    for model in inventory.simulations[SIM].models.values():
        model.ready = True  # the record holds both readies; the kill came before the decision was saved
    restarted = make_inventory()
    restarted.restore(recorded_as(inventory.simulations[SIM], models_ready=inv.Delivery.NONE), T0 + 2)
    assert restarted.releasable(SIM) == [], "saved before it goes out"
    assert settle(restarted) == [("ModelsReady", "", 0)]
    assert settle(restarted) == []


def test_a_restored_simulation_whose_models_were_all_refused_gets_no_models_ready() -> None:
    inventory = make_inventory()
    inventory.handle(inv.DeployRequested(SIMULATOR, SIM, 0.0, (inv.ModelSpec("a", "i:1"), inv.ModelSpec("b", "i:1")),
                                         T0, unknown={"i:1": "unknown ModelService"}))
    assert settle(inventory) == [("ModelHasTerminated", "a", -1), ("ModelHasTerminated", "b", -1),
                                 ("AllModelsHaveTerminated", "", 0)]
    restarted = make_inventory()
    restarted.restore(recorded_as(inventory.simulations[SIM]), T0 + 2)
    assert "ModelsReady" not in [kind for kind, _model, _code in settle(restarted)]


def test_a_restore_decides_all_models_have_terminated_and_the_cleanup_follows() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    ended(inventory, "a", 0)
    ended(inventory, "b", 0)
    restarted = make_inventory()
    restarted.restore(recorded_as(inventory.simulations[SIM], all_terminated=inv.Delivery.NONE, finished_at=None),
                      T0 + 100)
    assert settle(restarted) == [("AllModelsHaveTerminated", "", 0)]
    assert restarted.cleanup_due(SIM, T0 + 106)


def test_created_pods_are_saved_with_the_next_save_or_once_creation_is_done() -> None:
    # A save per pass of creates would take the API server's time from the creates themselves.
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    settle(inventory)
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    assert not inventory.needs_save(SIM), "b is still to be created: a's pod waits for the next save"
    inventory.handle(inv.ReadyReceived(SIM, "a", T0))
    assert inventory.needs_save(SIM) and inventory.take_changes(SIM)[1] == {"a"}
    inventory.record_saved(SIM, inventory.simulations[SIM].version)
    inventory.handle(inv.PodCreated(SIM, "b", T0))
    assert inventory.needs_save(SIM), "creation done: what it made is saved"
    version, changed = inventory.take_changes(SIM)
    assert changed == {"b"} and version > inventory.simulations[SIM].saved_version


def test_a_restored_message_the_session_record_says_was_received_gets_only_its_release() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    handed_out = settle(inventory, deliver=False)
    inventory.handle(inv.Received(_message(inventory, "a")))
    receipts, unwritten = inventory.receipts_to_write()
    assert len(handed_out) == 2 and list(receipts.values()) == [(SIM, "ModelHasTerminated", "a")]
    assert unwritten == list(receipts), "not written yet: no PUBREL"
    simulation = recorded_as(inventory.simulations[SIM])
    restarted = make_inventory()
    restarted.restore_receipts(receipts)
    restarted.restore(simulation, T0 + 2)
    released = restarted.releasable(SIM)
    assert [(message.model_id, message.received) for message in released] == [("a", True), ("b", False)]
    assert [message.packet_id for message in released] == [simulation.models["a"].packet_id,
                                                           simulation.models["b"].packet_id], "the recorded ids"


def _message(inventory: inv.Inventory, model_id: str) -> inv.Outgoing:
    simulation = inventory.simulations[SIM]
    model = simulation.models[model_id]
    assert model.termination is not None
    return inv.Outgoing(SIM, inv.MessageKind.MODEL_HAS_TERMINATED, simulation.version, model_id,
                        model.termination.exit_code, packet_id=model.packet_id)


def test_messages_that_could_overtake_each_other_on_different_sessions_wait() -> None:
    """ModelsReady is delivered before any termination is handed out; AllModelsHaveTerminated after all."""
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle_all([inv.ReadyReceived(SIM, "a", T0), inv.ReadyReceived(SIM, "b", T0)])
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    inventory.record_saved(SIM, inventory.take_changes(SIM)[0])
    [ready] = inventory.releasable(SIM)
    assert ready.kind is inv.MessageKind.MODELS_READY, "a's end waits for ModelsReady's delivery"
    assert inventory.releasable(SIM) == []
    inventory.handle(inv.Delivered(ready))
    inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    assert [kind for kind, _, _ in settle(inventory, deliver=False)] == ["ModelHasTerminated"] * 2


# ---------------------------------------------------------------- admission by the namespace's quota


def queued_deploy(inventory: inv.Inventory, *model_ids: str, at: float = T0) -> None:
    specs = tuple(inv.ModelSpec(model_id, "image:1") for model_id in model_ids)
    inventory.handle(inv.DeployRequested(SIMULATOR, SIM, 0.0, specs, at, queued=True))


def test_a_queued_simulation_creates_no_pod_and_starts_no_timeout_until_admitted() -> None:
    inventory = make_inventory()
    queued_deploy(inventory, "m1", "m2")
    assert settle(inventory) == []
    assert inventory.pods_to_create(SIM, 10) == []
    assert [simulation.simulation_id for simulation in inventory.queued()] == [SIM]
    assert inventory.next_deadline() is None
    inventory.handle(inv.Tick(T0 + START_TIMEOUT * 10))  # waiting in the queue is not starting
    assert settle(inventory) == []
    admitted_at = T0 + START_TIMEOUT * 10 + 1
    inventory.handle(inv.Admitted(SIM, admitted_at))
    assert inventory.pods_to_create(SIM, 10) == []  # not before the record holds the admission
    settle(inventory)
    assert [create.spec.model_id for create in inventory.pods_to_create(SIM, 10)] == ["m1", "m2"]
    assert inventory.queued() == []
    assert inventory.next_deadline() == admitted_at + START_TIMEOUT
    assert inventory.admission_waits == [START_TIMEOUT * 10 + 1]


def test_a_simulation_that_can_never_fit_gets_failed_minus_1_for_every_model_at_once() -> None:
    inventory = make_inventory()
    queued_deploy(inventory, "m1", "m2")
    settle(inventory)
    inventory.handle(inv.AdmissionRefused(SIM, "not admitted: needs pods=2, more than ...", T0 + 1))
    assert settle(inventory) == [("ModelHasTerminated", "m1", -1), ("ModelHasTerminated", "m2", -1),
                                 ("AllModelsHaveTerminated", "", 0)]
    reports = inventory.take_reports(SIM)
    assert [report.reason for report in reports] == ["not admitted: needs pods=2, more than ..."] * 2


def test_the_admission_timeout_ends_the_wait_with_minus_2_and_says_what_was_missing() -> None:
    inventory = make_inventory(admission_timeout_seconds=60.0)
    queued_deploy(inventory, "m1")
    settle(inventory)
    inventory.handle(inv.AdmissionWaiting(SIM, "needs pods=1; free in ResourceQuota q: pods=0"))
    assert inventory.next_deadline() == T0 + 60.0
    inventory.handle(inv.Tick(T0 + 60.0))
    assert settle(inventory) == [("ModelHasTerminated", "m1", -2), ("AllModelsHaveTerminated", "", 0)]
    [report] = inventory.take_reports(SIM)
    assert report.reason == ("not admitted within ADMISSION_TIMEOUT_SECONDS (60 s): needs pods=1; free in "
                             "ResourceQuota q: pods=0")


def test_the_queue_is_in_the_record_and_a_restored_simulation_waits_again_in_its_place() -> None:
    inventory = make_inventory(admission_timeout_seconds=600.0)
    queued_deploy(inventory, "m1", at=T0 + 5)
    settle(inventory)
    write = encode_record(inventory.simulations[SIM])
    restored = decode_record(write.head, write.parts.get, {"m1": inv.ModelSpec("m1", "image:1")})
    assert restored.queued_at == T0 + 5
    later = make_inventory(admission_timeout_seconds=600.0)
    later.restore(restored, T0 + 100)
    assert later.pods_to_create(SIM, 10) == []
    assert [simulation.simulation_id for simulation in later.queued()] == [SIM]
    assert later.next_deadline() == T0 + 5 + 600.0  # the wait counts from the first DeployModels
    admitted = inv.Simulation(SIMULATOR, "other", 0.0)
    write = encode_record(admitted)
    assert decode_record(write.head, write.parts.get).queued_at is None


def test_a_queued_simulation_the_so_ends_leaves_the_queue_and_its_models_are_answered() -> None:
    inventory = make_inventory(stop_grace_seconds=1.0)
    queued_deploy(inventory, "m1")
    settle(inventory)
    inventory.handle(inv.EndRequested(SIM, None, T0 + 1))
    assert inventory.queued() == []
    inventory.handle(inv.Tick(T0 + 2))
    assert settle(inventory) == [("ModelHasTerminated", "m1", -4), ("AllModelsHaveTerminated", "", 0)]
    assert inventory.pods_to_create(SIM, 10) == []


def test_a_queued_simulation_ended_through_one_model_answers_every_model() -> None:
    # Today's SO ends a failed simulation by a SimulationDone to each model: one of them lost (QoS 0), the
    # simulation, never to be admitted now, must still answer every model.
    inventory = make_inventory(stop_grace_seconds=1.0)
    queued_deploy(inventory, "m1", "m2")
    settle(inventory)
    inventory.handle(inv.EndRequested(SIM, "m1", T0 + 1))
    assert inventory.queued() == []
    inventory.handle(inv.Tick(T0 + 2))
    assert settle(inventory) == [("ModelHasTerminated", "m1", -4), ("ModelHasTerminated", "m2", -4),
                                 ("AllModelsHaveTerminated", "", 0)]
