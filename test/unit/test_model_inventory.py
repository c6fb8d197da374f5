"""Table tests of the inventory: for every state and event, the effects the SO relies on.

The inventory is where the protocol's promises are kept (ModelsReady once,
one ModelHasTerminated per model, AllModelsHaveTerminated once and last), so
each rule is pinned down here without any I/O.
"""

from __future__ import annotations

import pytest

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import pod_name, unique_pod_name

SIM = "sim-1"
SIMULATOR = "so01"
T0 = 1_000_000.0
START_TIMEOUT = 300.0


def make_inventory() -> inv.Inventory:
    return inv.Inventory(start_timeout_seconds=START_TIMEOUT, min_cleanup_delay_seconds=5.0)


def deploy(inventory: inv.Inventory, *model_ids: str, keep_logs_hours: float = 0.0) -> list[inv.Effect]:
    specs = tuple(inv.ModelSpec(model_id, "image:1", (("A", "1"),)) for model_id in model_ids)
    return inventory.handle(inv.DeployRequested(SIMULATOR, SIM, keep_logs_hours, specs, T0))


def seen(model_id: str, state: ContainerState, *, exit_code: int | None = None, reason: str = "",
         message: str = "", deleting: bool = False, created_at: float | None = T0) -> PodObservation:
    return PodObservation(
        pod_name=pod_name(SIMULATOR, SIM, model_id), simulator_id=SIMULATOR, simulation_id=SIM,
        model_id=model_id, keep_logs_hours=0.0, state=state, reason=reason, message=message, exit_code=exit_code,
        created_at=created_at, deleting=deleting)


def published(effects: list[inv.Effect]) -> list[inv.Effect]:
    return [e for e in effects if isinstance(
        e, inv.PublishModelsReady | inv.PublishModelHasTerminated | inv.PublishAllModelsHaveTerminated)]


def running(inventory: inv.Inventory, *model_ids: str) -> None:
    for model_id in model_ids:
        inventory.handle(inv.PodCreated(SIM, model_id, T0))
        inventory.handle(inv.PodSeen(seen(model_id, ContainerState.RUNNING), T0))


def test_deploy_saves_the_record_before_creating_one_pod_per_model() -> None:
    effects = deploy(make_inventory(), "a", "b")
    assert isinstance(effects[0], inv.SaveRecord)
    assert [e.spec.model_id for e in effects if isinstance(e, inv.CreatePod)] == ["a", "b"]


def test_a_model_listed_twice_gets_one_pod() -> None:
    effects = deploy(make_inventory(), "a", "a", "b")
    assert [e.spec.model_id for e in effects if isinstance(e, inv.CreatePod)] == ["a", "b"]


def test_a_repeated_deploy_creates_nothing_and_answers_nothing() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    assert deploy(inventory, "a", "b") == []
    assert set(inventory.simulations[SIM].models) == {"a"}


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
    effects = inventory.handle(inv.PodSeen(seen("a", state, exit_code=exit_code, reason=reason), T0 + 1))
    reports = [e for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)]
    assert [(r.model_id, r.exit_code) for r in reports] == [("a", expected_code)]
    assert isinstance(effects[0], inv.SaveRecord), "the record is saved before the report"
    failures = [e for e in effects if isinstance(e, inv.ReportFailure)]
    assert [(f.exit_code, f.read_log) for f in failures] == (
        [] if expected_code == 0 else [(expected_code, state is ContainerState.TERMINATED)])


def test_a_termination_seen_again_is_not_reported_again() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    first = inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    again = inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 2))
    gone = inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 3))
    assert len(published(first)) == 1
    assert published(again) == [] and published(gone) == []


def test_all_models_have_terminated_follows_the_last_report_once() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 1))
    effects = inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=2), T0 + 2))
    kinds = [type(e).__name__ for e in published(effects)]
    assert kinds == ["PublishModelHasTerminated", "PublishAllModelsHaveTerminated"]
    assert inventory.simulations[SIM].finished_at == T0 + 2
    assert published(inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=2), T0 + 3))) == []


def test_models_ready_once_when_every_model_is_ready() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    assert published(inventory.handle(inv.ReadyReceived(SIM, "a", T0))) == []
    assert published(inventory.handle(inv.ReadyReceived(SIM, "a", T0))) == []
    effects = inventory.handle(inv.ReadyReceived(SIM, "b", T0))
    assert [type(e) for e in published(effects)] == [inv.PublishModelsReady]
    assert isinstance(effects[0], inv.SaveRecord), "the record says ModelsReady went out before it goes out"
    assert published(inventory.handle(inv.ReadyReceived(SIM, "b", T0))) == []


def test_no_models_ready_when_a_model_crashed_before_it_was_ready() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=1), T0))
    assert published(inventory.handle(inv.ReadyReceived(SIM, "a", T0))) == []


def test_ready_for_unknown_simulation_or_model_is_ignored() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    assert inventory.handle(inv.ReadyReceived("other", "a", T0)) == []
    assert inventory.handle(inv.ReadyReceived(SIM, "zzz", T0)) == []


def test_rejected_create_fails_the_model_with_minus_one() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    effects = inventory.handle(inv.PodCreateRejected(SIM, "a", "422 invalid", T0))
    assert [(type(e).__name__, getattr(e, "exit_code", None)) for e in published(effects)] == [
        ("PublishModelHasTerminated", inv.EXIT_CREATE_REJECTED), ("PublishAllModelsHaveTerminated", None)]


def test_invalid_image_name_fails_at_once_and_stops_the_pod_in_place() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    effects = inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="InvalidImageName"), T0 + 1))
    assert [getattr(e, "exit_code", None) for e in published(effects)][:1] == [inv.EXIT_START_TIMEOUT]
    assert [e.delete for e in effects if isinstance(e, inv.StopModelPod)] == [False]
    # Its own deletion is not a second failure.
    assert inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 2)) == []


def test_a_pod_stuck_waiting_fails_after_the_start_timeout() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="ImagePullBackOff"), T0 + 1))
    running(inventory, "b")
    assert inventory.next_deadline() == T0 + START_TIMEOUT
    assert published(inventory.handle(inv.Tick(T0 + START_TIMEOUT - 1))) == []
    effects = inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    reports = [e for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)]
    assert [(r.model_id, r.exit_code) for r in reports] == [("a", inv.EXIT_START_TIMEOUT)]
    assert "ImagePullBackOff" in reports[0].reason
    assert [(e.model_id, e.delete) for e in effects if isinstance(e, inv.StopModelPod)] == [("a", False)]


def test_a_running_pod_never_times_out() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    running(inventory, "a")
    assert published(inventory.handle(inv.Tick(T0 + 10 * START_TIMEOUT))) == []


@pytest.mark.parametrize("how", ["deleted", "deletion_timestamp", "missing_from_list"])
def test_a_pod_removed_by_someone_else_fails_with_minus_three(how: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    name = pod_name(SIMULATOR, SIM, "a")
    if how == "deleted":
        effects = inventory.handle(inv.PodGone(SIM, "a", name, T0 + 1))
    elif how == "deletion_timestamp":
        effects = inventory.handle(inv.PodSeen(seen("a", ContainerState.RUNNING, deleting=True), T0 + 1))
    else:
        effects = inventory.handle(inv.PodListed(frozenset({(SIM, "b")}), T0 + 1))
    reports = [(e.model_id, e.exit_code) for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)]
    assert reports == [("a", inv.EXIT_POD_LOST)]


def test_a_listing_recreates_a_model_whose_pod_was_never_made() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    inventory.handle(inv.PodCreateRejected(SIM, "zzz", "ignored", T0))  # unknown model: nothing happens
    model = inventory.model(SIM, "a")
    assert model is not None
    model.creating = False  # as after a restart: the create was never confirmed
    effects = inventory.handle(inv.PodListed(frozenset(), T0 + 1))
    assert [type(e) for e in effects] == [inv.CreatePod]


def test_cleanup_after_keep_logs_hours_and_never_before_the_end() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=0.5)
    running(inventory, "a")
    assert inventory.handle(inv.Tick(T0 + 100_000)) == []  # still running: never deleted
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 10))
    assert inventory.next_deadline() == T0 + 10 + 1800
    assert inventory.handle(inv.Tick(T0 + 10 + 1799)) == []
    effects = inventory.handle(inv.Tick(T0 + 10 + 1800))
    assert effects == [inv.DeleteSimulation(SIMULATOR, SIM)]
    assert inventory.handle(inv.Tick(T0 + 10 + 1801)) == [], "cleanup is asked for once"
    # Our own deletion of the pods is not a failure.
    assert inventory.handle(inv.PodGone(SIM, "a", pod_name(SIMULATOR, SIM, "a"), T0 + 1802)) == []
    inventory.handle(inv.SimulationCleanedUp(SIM))
    assert SIM not in inventory.simulations


def test_zero_keep_logs_hours_cleans_up_after_the_minimum_delay() -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=0.0)
    running(inventory, "a")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0))
    assert inventory.next_deadline() == T0 + 5.0


@pytest.mark.parametrize(("given", "kept"), [(-3.0, 0.0), (float("nan"), 0.0), (2.0, 2.0)])
def test_keep_logs_hours_is_sanitised(given: float, kept: float) -> None:
    inventory = make_inventory()
    deploy(inventory, "a", keep_logs_hours=given)
    assert inventory.simulations[SIM].keep_logs_hours == kept


def test_a_pod_of_another_incarnation_is_ignored() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    stranger = PodObservation(pod_name="other-name", simulator_id=SIMULATOR, simulation_id=SIM, model_id="a",
                              keep_logs_hours=0, state=ContainerState.TERMINATED, exit_code=1)
    assert inventory.handle(inv.PodSeen(stranger, T0)) == []


def test_adopted_pods_never_trigger_models_ready() -> None:
    inventory = make_inventory()
    inventory.adopt([seen("a", ContainerState.RUNNING), seen("b", ContainerState.RUNNING)])
    assert set(inventory.simulations[SIM].models) == {"a", "b"}
    assert published(inventory.handle(inv.ReadyReceived(SIM, "a", T0))) == []
    effects = inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0))
    assert [type(e) for e in published(effects)] == [inv.PublishModelHasTerminated]


def test_ending_early_gives_a_grace_period_then_fails_what_still_runs_with_minus_four() -> None:
    inventory = inv.Inventory(start_timeout_seconds=START_TIMEOUT, min_cleanup_delay_seconds=5.0,
                              stop_grace_seconds=30.0)
    deploy(inventory, "a", "b", "c")
    running(inventory, "a", "b", "c")
    assert inventory.handle(inv.EndRequested(SIM, None, T0)) == []
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 5))  # exits on its own
    assert inventory.next_deadline() == T0 + 30
    assert published(inventory.handle(inv.Tick(T0 + 29))) == []
    effects = inventory.handle(inv.Tick(T0 + 30))
    reports = [(e.model_id, e.exit_code) for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)]
    assert reports == [("b", inv.EXIT_ENDED_EARLY), ("c", inv.EXIT_ENDED_EARLY)]
    assert isinstance(published(effects)[-1], inv.PublishAllModelsHaveTerminated)
    # Stopped in place (activeDeadlineSeconds), never deleted: their logs stay until the cleanup.
    assert {e.model_id for e in effects if isinstance(e, inv.StopModelPod) and not e.delete} == {"b", "c"}
    assert not any(isinstance(e, inv.ReportFailure) for e in effects), "the SO asked for it: no ErrorOccurred"
    # The pods we delete are not reported again.
    assert inventory.handle(inv.PodGone(SIM, "b", pod_name(SIMULATOR, SIM, "b"), T0 + 31)) == []


def test_a_models_own_simulation_done_never_stops_it() -> None:
    # Today's SO ends every simulation with a SimulationDone per model; the models then write their
    # results, which can take many minutes, and exit 0 (PROTOCOL.md section 4).
    inventory = make_inventory()
    deploy(inventory, "a", "b")
    running(inventory, "a", "b")
    assert inventory.handle(inv.EndRequested(SIM, "a", T0)) == []
    assert inventory.handle(inv.EndRequested(SIM, "b", T0)) == []
    assert inventory.next_deadline() is None
    assert inventory.handle(inv.Tick(T0 + 3600)) == []
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 3601))
    effects = inventory.handle(inv.PodSeen(seen("b", ContainerState.TERMINATED, exit_code=0), T0 + 3602))
    assert [(e.model_id, e.exit_code) for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)] \
        == [("b", 0)]


def test_an_unscheduled_pod_that_times_out_is_deleted_as_it_has_no_logs() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="Unschedulable"), T0 + 1))
    effects = inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert [(e.model_id, e.delete) for e in effects if isinstance(e, inv.StopModelPod)] == [("a", True)]


NOT_FOUND = ('rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nope:1": '
             'failed to resolve reference "docker.io/library/nope:1": docker.io/library/nope:1: not found')


@pytest.mark.parametrize("message", [
    NOT_FOUND,
    'failed to pull and unpack image "docker.io/acme/private:1": failed to resolve reference '
    '"docker.io/acme/private:1": pull access denied, repository does not exist or may require authorization: '
    "server message: insufficient_scope: authorization failed",
    'failed to pull and unpack image "ghcr.io/acme/x:1": failed to resolve reference "ghcr.io/acme/x:1": '
    "failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized",
    'rpc error: code = NotFound desc = failed to pull and unpack image "registry.local/x:2": manifest unknown',
])
def test_an_image_the_registry_refuses_twice_fails_at_once_with_its_message(message: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    first = inventory.handle(inv.PodSeen(seen("a", ContainerState.WAITING, reason="ErrImagePull", message=message),
                                         T0 + 2))
    assert published(first) == []
    # The same status seen again (a re-list) is not a second answer of the registry.
    assert published(inventory.handle(inv.PodSeen(
        seen("a", ContainerState.WAITING, reason="ErrImagePull", message=message), T0 + 2.5))) == []
    backoff = f'Back-off pulling image "x": ErrImagePull: {message}'
    assert published(inventory.handle(inv.PodSeen(
        seen("a", ContainerState.WAITING, reason="ImagePullBackOff", message=backoff), T0 + 3))) == []
    effects = inventory.handle(inv.PodSeen(
        seen("a", ContainerState.WAITING, reason="ErrImagePull", message=message), T0 + 15))
    reports = [e for e in published(effects) if isinstance(e, inv.PublishModelHasTerminated)]
    assert [(r.model_id, r.exit_code) for r in reports] == [("a", inv.EXIT_START_TIMEOUT)]
    failure = next(e for e in effects if isinstance(e, inv.ReportFailure))
    assert message in failure.reason


@pytest.mark.parametrize("message", [
    'failed to pull and unpack image "docker.io/library/x:1": failed to copy: httpReadSeeker: failed open: '
    "unexpected status code 503 Service Unavailable",
    'failed to pull and unpack image "docker.io/library/x:1": failed to resolve reference: '
    "429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit",
    'failed to pull and unpack image "docker.io/library/x:1": dial tcp 10.0.0.1:443: i/o timeout',
])
def test_a_transient_pull_error_waits_for_the_start_timeout(message: str) -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    inventory.handle(inv.PodCreated(SIM, "a", T0))
    for attempt in range(5):
        for reason in ("ErrImagePull", "ImagePullBackOff"):
            assert published(inventory.handle(inv.PodSeen(
                seen("a", ContainerState.WAITING, reason=reason, message=message), T0 + 10 * attempt + 1))) == []
    effects = inventory.handle(inv.Tick(T0 + START_TIMEOUT))
    assert [getattr(e, "exit_code", None) for e in published(effects)][:1] == [inv.EXIT_START_TIMEOUT]




@pytest.mark.parametrize("requested", [float("inf"), 1e308, 10_000.0])
def test_keep_logs_hours_is_capped_so_pods_are_never_kept_forever(requested: float) -> None:
    inventory = inv.Inventory(start_timeout_seconds=START_TIMEOUT, min_cleanup_delay_seconds=5.0,
                              max_keep_logs_hours=168.0)
    deploy(inventory, "a", keep_logs_hours=requested)
    running(inventory, "a")
    inventory.handle(inv.PodSeen(seen("a", ContainerState.TERMINATED, exit_code=0), T0 + 10))
    assert inventory.next_deadline() == T0 + 10 + 168 * 3600
    assert [type(e) for e in inventory.handle(inv.Tick(T0 + 10 + 168 * 3600))] == [inv.DeleteSimulation]


def test_ids_that_differ_only_in_case_get_pods_of_their_own() -> None:
    effects = deploy(make_inventory(), "ModelA", "modela", "MODELA")
    names = [e.pod_name for e in effects if isinstance(e, inv.CreatePod)]
    assert names[0] == pod_name(SIMULATOR, SIM, "ModelA") and len(set(names)) == 3


def test_a_pod_name_taken_by_another_is_never_taken_over() -> None:
    inventory = make_inventory()
    deploy(inventory, "a")
    effects = inventory.handle(inv.PodCreateRejected(SIM, "a", "409 taken", T0, name_taken=True))
    assert published(effects) == []
    [create] = [e for e in effects if isinstance(e, inv.CreatePod)]
    assert create.pod_name == unique_pod_name(SIMULATOR, SIM, "a") != pod_name(SIMULATOR, SIM, "a")
    # The unique name taken too (by someone who means it): the model gets its answer, -1.
    effects = inventory.handle(inv.PodCreateRejected(SIM, "a", "409 taken", T0, name_taken=True))
    assert [(e.model_id, e.exit_code) for e in published(effects)
            if isinstance(e, inv.PublishModelHasTerminated)] == [("a", inv.EXIT_CREATE_REJECTED)]


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
    effects = inventory.handle(inv.PodSeen(theirs, T0 + 1))
    assert {(e.simulation_id, e.model_id) for e in published(effects)
            if isinstance(e, inv.PublishModelHasTerminated)} == {("x-y", "z")}
    other = inventory.model("x", "y-z")
    assert other is not None and other.termination is None
