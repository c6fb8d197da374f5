"""Exactly once across any kill: the daemon SIGSTOPped, then SIGKILLed, at seeded random instants of every
phase (creates, readies, a burst of terminations), and restarted at once, against a real Mosquitto and the
real control plane.

Whatever the instants, the SO hears ModelsReady once, one ModelHasTerminated per model and
AllModelsHaveTerminated once, and every simulation ends with its cleanup. ``MSO_KILLS`` sets how many kills
(at least 40 here; ``bench/kill_soak.py`` runs 500) and ``MSO_KILL_SEED`` the seed, which a failure names.

The models here are the test itself (the status-only kubelet runs no process). A ReadyForProcessing is QoS 0:
one that reached a daemon killed before its record held it is lost (docs/guarantees.md, "The limits"), and
real models would be restarted to announce themselves again; here every model announces itself again after
each restart, which a ready already recorded ignores.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import kubernetes.client
import pytest

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    Daemon,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    left_in_namespace,
    ready,
    running_pods,
    set_terminated,
    wait_for,
)

MODELS = 100
KILLS = max(40, int(os.environ.get("MSO_KILLS", "40")))
SEED = int(os.environ.get("MSO_KILL_SEED", str(random.SystemRandom().randrange(1 << 32))))


class Killer:
    """Kills the daemon at random instants and starts the next one."""

    def __init__(self, make_daemon: DaemonFactory, kube: ControlPlane, rng: random.Random) -> None:
        self._make = make_daemon
        self._kube = kube
        self._rng = rng
        self.kills: Counter[str] = Counter()
        self.daemon = self._start()

    def _start(self) -> Daemon:
        # No model is restarted for a lost ready (the fixture's READY_SETTLE_SECONDS): the test announces every
        # model again itself.
        return self._make(self._kube, MODEL_START_TIMEOUT_SECONDS=3600)

    def kill_within(self, seconds: float, phase: str) -> None:
        """SIGSTOP at a random instant within ``seconds``, SIGKILL a random moment later, and a new daemon."""
        time.sleep(self._rng.uniform(0.0, seconds))
        self.daemon.signal(signal.SIGSTOP)
        time.sleep(self._rng.uniform(0.0, 0.3))
        self.daemon.kill()
        self.kills[phase] += 1
        self.daemon = self._start()


def terminate_all(api: kubernetes.client.CoreV1Api, names: list[str]) -> None:
    for name in names:
        set_terminated(api, name, 0)


@pytest.mark.timeout(60 + 15 * KILLS)  # about 4 s a kill, on 2 busy cores
def test_exactly_once_across_kills_at_random_instants(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    rng = random.Random(SEED)
    print(f"MSO_KILL_SEED={SEED}")  # to replay a failure
    api = core_api(status_kube)
    killer = Killer(make_daemon, status_kube, rng)
    simulations: list[str] = []
    while sum(killer.kills.values()) < KILLS:
        sim = f"sim-kill-{len(simulations)}"
        simulations.append(sim)
        models = [f"m{index:03d}" for index in range(MODELS)]
        so.deploy(sim, [(model, "fake_model:0.0.1", [("A", "1")]) for model in models])
        killer.kill_within(1.5, "deploy and creates")
        names = running_pods(api, MODELS, timeout=120)

        announcing = threading.Thread(target=ready, args=(so, sim, *models))
        announcing.start()
        killer.kill_within(0.5, "readies")
        announcing.join()
        deadline = time.monotonic() + 120
        while not so.of(sim, "ModelsReady"):
            assert time.monotonic() < deadline, f"no ModelsReady of {sim} (seed {SEED})"
            ready(so, sim, *models)  # the models announce themselves again
            time.sleep(2.0)

        ending = threading.Thread(target=terminate_all, args=(api, names))
        ending.start()
        for _ in range(2):
            killer.kill_within(1.0, "terminations")
        ending.join()
        so.wait_all_terminated(sim, timeout=120)

    for sim in simulations:
        wait_for(lambda: not [name for name in left_in_namespace(api) if "sim-kill" in name],
                 timeout=120, what="every simulation cleaned up")
        counts = Counter(message.kind for message in so.of(sim))
        terminations = Counter(message.model_id for message in so.of(sim, "ModelHasTerminated"))
        assert counts["ModelsReady"] == 1, (sim, SEED)
        assert counts["AllModelsHaveTerminated"] == 1, (sim, SEED)
        assert sorted(terminations) == sorted(f"m{index:03d}" for index in range(MODELS)), (sim, SEED)
        assert set(terminations.values()) == {1}, ("a ModelHasTerminated twice", sim, SEED)
        assert {code for _, code in so.terminations(sim).values()} == {0}, (sim, SEED)
    assert not core_api(status_kube).list_namespaced_pod(NAMESPACE).items
    assert sum(killer.kills.values()) >= 40 and len(killer.kills) == 3, killer.kills
