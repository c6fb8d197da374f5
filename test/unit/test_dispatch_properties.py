"""Property test of the decoding and dispatch path: whatever arrives, the inventory stays consistent.

Arbitrary bytes on arbitrary topics, mixed with real DeployModels,
ReadyForProcessing, SimulationDone and pod changes in any order, go
through the same decode and dispatch functions the daemon uses. The promises
to the SO must hold at every step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.messages import DeployModels, EnvironmentVariable, ModelConfiguration, codec
from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import pod_name
from model_services_orchestrator.simulation_records import RecordEncoder, encode_record

SO = "dots-so"
SIMS = ["s1", "s2"]
MODELS = ["a", "b", "c"]

deploy = st.builds(
    lambda sim, models: (f"/lifecycle/{SO}/mso/{sim}/DeployModels", DeployModels(
        simulatorId="so01", keepLogsHours=0.0, modelConfigurations=[
            ModelConfiguration(modelID=m, imageUrl="img", environmentVariables=[
                EnvironmentVariable(name="PASSWORD", value="x")]) for m in models]).SerializeToString()),
    st.sampled_from(SIMS), st.lists(st.sampled_from(MODELS), min_size=1, max_size=4))
ready = st.builds(lambda sim, model: (f"/lifecycle/model/mso/{sim}/{model}/ReadyForProcessing", b""),
                  st.sampled_from(SIMS), st.sampled_from(MODELS))
done = st.builds(lambda sim: (f"/lifecycle/{SO}/mso/{sim}/SimulationDone", b""), st.sampled_from(SIMS))
garbage = st.tuples(st.sampled_from([f"/lifecycle/{SO}/mso/s1/DeployModels", "/lifecycle/model/mso/s1/a/x",
                                     f"/healthcheck/{SO}/mso/i/PingHealthSOToMSO"]) | st.text(max_size=40),
                    st.binary(max_size=200))
Step = Callable[[float], list[inv.Event]]


def from_mqtt(topic_and_payload: tuple[str, bytes]) -> Step:
    def events(now: float) -> list[inv.Event]:
        topic, payload = topic_and_payload
        try:
            message = codec.decode(topic, payload, so=SO, max_payload_bytes=10_000, now=now)
        except codec.DecodeError:
            return []
        return [] if isinstance(message, codec.HealthPing | codec.ModelPong) else [message]
    return events


def from_pod(sim: str, model: str, state: ContainerState, code: int, deleting: bool) -> Step:
    def events(now: float) -> list[inv.Event]:
        seen = PodObservation(pod_name=pod_name("so01", sim, model), simulator_id="so01", simulation_id=sim,
                              model_id=model, keep_logs_hours=0, state=state, exit_code=code,
                              created_at=now, deleting=deleting)
        return [inv.PodSeen(seen, now)]
    return events


def from_create(sim: str, model: str, ok: bool) -> Step:
    return lambda now: [inv.PodCreated(sim, model, now) if ok else inv.PodCreateRejected(sim, model, "no", now)]


def from_tick(later: float) -> Step:
    return lambda now: [inv.Tick(now + later)]


step = st.one_of(
    st.one_of(deploy, ready, done, garbage).map(from_mqtt),
    st.builds(from_pod, st.sampled_from(SIMS), st.sampled_from(MODELS), st.sampled_from(list(ContainerState)),
              st.integers(-5, 3), st.booleans()),
    st.builds(from_create, st.sampled_from(SIMS), st.sampled_from(MODELS), st.booleans()),
    st.builds(from_tick, st.floats(0, 1000)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60), st.lists(st.booleans(), min_size=60, max_size=60))
def test_whatever_arrives_the_promises_hold(steps: list[Step], confirms: list[bool]) -> None:
    inventory = inv.Inventory(start_timeout_seconds=100, min_cleanup_delay_seconds=5, stop_grace_seconds=10)
    records = RecordEncoder()
    parts: dict[str, dict[int, dict[str, str]]] = {}
    released: Counter[tuple[str, str, str]] = Counter()
    unconfirmed: list[inv.Outgoing] = []
    now = 0.0
    for events, confirm in zip(steps, confirms, strict=False):
        now += 1.0
        touched = inventory.handle_all(events(now))
        if confirm:  # the broker confirms what it was handed so far
            touched |= inventory.handle_all(inv.Delivered(message) for message in unconfirmed)
            unconfirmed.clear()
        for simulation_id in touched:
            # What a sync does: save the record (incrementally), then release what the saved record decided.
            simulation = inventory.simulations.get(simulation_id)
            if simulation is None or not inventory.needs_save(simulation_id):
                continue
            version, changed = inventory.take_changes(simulation_id)
            saved = records.encode(simulation, changed)
            parts.setdefault(simulation_id, {}).update(saved.parts)
            full = encode_record(simulation)
            assert saved.head == full.head, "the incremental record is the full record"
            assert parts[simulation_id] == full.parts
            inventory.record_saved(simulation_id, version)
            for message in inventory.releasable(simulation_id):
                if message.kind is inv.MessageKind.ALL_MODELS_HAVE_TERMINATED:
                    assert all((simulation_id, inv.MessageKind.MODEL_HAS_TERMINATED.value, m) in released
                               for m in simulation.models), "AllModelsHaveTerminated comes last"
                released[(simulation_id, message.kind.value, message.model_id)] += 1
                unconfirmed.append(message)
        for simulation in inventory.simulations.values():
            models = simulation.models.values()
            assert simulation.ready_count == sum(m.ready for m in models)
            assert simulation.terminated_count == sum(m.termination is not None for m in models)
            if simulation.models_ready is not inv.Delivery.NONE:
                assert simulation.ready_count == len(simulation.models)
            assert (simulation.all_terminated is not inv.Delivery.NONE) == (
                simulation.terminated_count == len(simulation.models))
            assert set(simulation.to_create) == {m.model_id for m in models if m.phase is inv.Phase.PENDING
                                                 and m.spec is not None}
    # Simulations end and are forgotten only through cleanup, which these steps never carry out: so each
    # simulation lived once, and every message was handed out at most once.
    assert all(count == 1 for count in released.values())
