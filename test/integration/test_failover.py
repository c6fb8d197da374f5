"""Two replicas, one leader: a killed, frozen or rolled-out leader's standby takes over, and the SO hears
every answer exactly once, against a real Mosquitto and the real control plane.

The replicas share the MQTT client id (as a Deployment's pods do) and elect their leader on a Lease with
short durations (a 3 s lease), so that a failover takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import datetime

import pytest

from model_services_orchestrator.messages import MSOInfo
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    Daemon,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    ready,
    retained_messages,
    running_pods,
    set_terminated,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto

IMAGE = "fake_model:0.0.1"
FAILOVERS = max(1, int(os.environ.get("MSO_FAILOVERS", "1")))  # bench/failover.py runs 20
LEASE_SECONDS = 3.0
MSO_INFO = "/lifecycle/mso/dots-so/MSOInfo"
ELECTION = {"LEADER_ELECTION_LEASE_SECONDS": LEASE_SECONDS, "LEADER_ELECTION_RENEW_SECONDS": 2,
            "LEADER_ELECTION_RETRY_SECONDS": 0.5}


def replica(make_daemon: DaemonFactory, kube: ControlPlane, name: str, *, leads: bool) -> Daemon:
    daemon = make_daemon(kube, wait_subscribed=leads, POD_NAME=name, **ELECTION)
    if not leads:  # settled: standing by (or, were it to act as well, connected)
        wait_for(lambda: daemon.logged("standing by: another replica leads") or daemon.logged("mqtt subscribed"),
                 what="the second replica to settle")
    return daemon


def running_simulation(so: SimulatorRecorder, kube: ControlPlane, sim: str, count: int) -> list[str]:
    """A simulation whose ``count`` models run and were announced ready; their pods' names."""
    models = [f"m{index}" for index in range(count)]
    so.deploy(sim, [(model, IMAGE, [("A", "1")]) for model in models])
    names = running_pods(core_api(kube), count)
    ready(so, sim, *models)
    wait_for(lambda: so.of(sim, "ModelsReady"), what="ModelsReady")
    return names


def assert_exactly_once(so: SimulatorRecorder, sim: str, count: int) -> None:
    kinds = Counter(message.kind for message in so.of(sim))
    assert kinds["ModelsReady"] == 1 and kinds["AllModelsHaveTerminated"] == 1, kinds
    answered = Counter(message.model_id for message in so.of(sim, "ModelHasTerminated"))
    assert answered == Counter(f"m{index}" for index in range(count)), "each model answered exactly once"


def mso_infos_heard(so: SimulatorRecorder) -> list[bytes]:
    """Every MSOInfo the SO heard, in order (b"" where one was emptied)."""
    return [message.payload for message in so.messages if message.topic == MSO_INFO]


def assert_kept_its_sessions(daemon: Daemon) -> None:
    assert not daemon.logged("mqtt connection lost, reconnecting"), "nobody took the MQTT session from it"
    assert not daemon.logged("mqtt outbox connection lost, reconnecting")


@pytest.mark.timeout(120 + 60 * FAILOVERS)
def test_a_killed_leaders_standby_answers_within_the_lease_and_nothing_is_lost_or_repeated(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    leader = replica(make_daemon, status_kube, "mso-0", leads=True)
    standby = replica(make_daemon, status_kube, "mso-1", leads=False)
    api = core_api(status_kube)
    failovers: list[float] = []
    for round_ in range(FAILOVERS):
        sim = f"sim-failover-kill-{round_}"
        names = running_simulation(so, status_kube, sim, 6)
        for name in names[:3]:
            set_terminated(api, name, 0)
        wait_for(lambda sim=sim: len(so.terminations(sim)) == 3, what="three answers from the leader")  # type: ignore[misc]
        leader.kill()
        killed_at = time.monotonic()
        for name in names[3:]:
            set_terminated(api, name, 0)
        wait_for(lambda sim=sim: len(so.terminations(sim)) >= 4, timeout=60,  # type: ignore[misc]
                 what="the new leader's first answer")
        failovers.append(time.monotonic() - killed_at)
        so.wait_all_terminated(sim)
        assert_exactly_once(so, sim, 6)
        assert standby.logged("leading")[0]["epoch"] == round_ + 1, "the Lease changed hands once more"
        assert_kept_its_sessions(standby)
        # The killed replica comes back (Kubernetes restarts it) as the standby.
        leader, standby = standby, replica(make_daemon, status_kube, f"mso-{round_ + 2}", leads=False)
    print("failover seconds:", json.dumps([round(seconds, 2) for seconds in failovers]))
    assert max(failovers) < LEASE_SECONDS + 5, f"a standby answered {max(failovers):.1f} s after the kill"


def test_a_frozen_leader_woken_after_its_lease_acts_no_more_and_exits(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    sim = "sim-failover-freeze"
    leader = replica(make_daemon, status_kube, "mso-a", leads=True)
    standby = replica(make_daemon, status_kube, "mso-b", leads=False)
    names = running_simulation(so, status_kube, sim, 4)
    api = core_api(status_kube)
    set_terminated(api, names[0], 0)
    wait_for(lambda: len(so.terminations(sim)) == 1, what="an answer from the first leader")
    connections = len(leader.logged("mqtt connected"))
    leader.signal(signal.SIGSTOP)
    for name in names[1:]:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    leader.signal(signal.SIGCONT)
    wait_for(lambda: not leader.alive, timeout=30, what="the woken leader to exit")
    assert leader.process is not None and leader.process.returncode == 1
    assert leader.logged("leadership lost: stopping")
    assert len(leader.logged("mqtt connected")) == connections, "it never connected again"
    # The new leader kept its sessions; the SO heard each answer once, so the woken one published nothing.
    time.sleep(1.0)  # what it might have sent would have arrived by now
    assert_exactly_once(so, sim, 4)
    assert_kept_its_sessions(standby)
    assert standby.alive


def test_a_rollout_hands_the_lease_over_at_once(
        status_kube: ControlPlane, broker: LocalMosquitto, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    sim = "sim-failover-rollout"
    old = replica(make_daemon, status_kube, "mso-a", leads=True)
    names = running_simulation(so, status_kube, sim, 4)
    api = core_api(status_kube)
    set_terminated(api, names[0], 0)
    wait_for(lambda: len(so.terminations(sim)) == 1, what="an answer from the old replica")
    new = replica(make_daemon, status_kube, "mso-b", leads=False)  # the surge: both run
    set_terminated(api, names[1], 0)
    wait_for(lambda: len(so.terminations(sim)) == 2, what="an answer while both run")
    assert_kept_its_sessions(old)  # the new replica stands by: it took no session
    assert old.stop() == 0  # SIGTERM
    for name in names[2:]:
        set_terminated(api, name, 0)
    so.wait_all_terminated(sim)
    assert_exactly_once(so, sim, 4)
    assert_kept_its_sessions(new)
    # The old one emptied MSOInfo before handing the Lease back, so the new one's came after and stays.
    wait_for(lambda: len(mso_infos_heard(so)) >= 3, what="the new leader's MSOInfo")
    heard = mso_infos_heard(so)
    assert [bool(payload) for payload in heard] == [True, False, True], heard
    assert retained_messages(broker, MSO_INFO) == heard[-1:]
    [taken] = new.logged("leading")
    [handed_back] = old.logged("leadership handed back")
    # Handed back, so taken at once (the standby retries every 0.5 to 0.6 s), not after the old lease ran out.
    waited = (datetime.fromisoformat(taken["timestamp"]) - datetime.fromisoformat(handed_back["timestamp"]))
    assert taken["epoch"] == 1 and waited.total_seconds() < LEASE_SECONDS, waited


def test_only_the_leader_publishes_mso_info_a_standbys_death_leaves_it_and_a_killed_leaders_will_precedes_the_next(
        status_kube: ControlPlane, broker: LocalMosquitto, so: SimulatorRecorder,
        make_daemon: DaemonFactory) -> None:
    leader = replica(make_daemon, status_kube, "mso-a", leads=True)
    [info] = wait_for(lambda: retained_messages(broker, MSO_INFO), what="the leader's MSOInfo")
    standby = replica(make_daemon, status_kube, "mso-b", leads=False)
    standby.kill()  # a standby has no connection to the broker, hence no Will that could empty the leader's
    time.sleep(1.0)  # a Will would have been sent by now
    assert retained_messages(broker, MSO_INFO) == [info]
    assert mso_infos_heard(so) == [info], "the standby published nothing"

    successor = replica(make_daemon, status_kube, "mso-c", leads=False)
    leader.kill()
    # The killed leader's Will empties it at once; the successor publishes it when it takes over.
    wait_for(lambda: len(mso_infos_heard(so)) >= 3, timeout=30, what="the successor's MSOInfo")
    assert mso_infos_heard(so) == [info, b"", info]
    assert successor.logged("leading")
    time.sleep(1.0)  # nothing empties it after that (a late Will would have come by now)
    assert retained_messages(broker, MSO_INFO) == [info]
    assert MSOInfo.FromString(info).capabilities
