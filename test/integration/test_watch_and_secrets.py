"""The pod watch misses nothing across a stream that ends or expires; no secret ever reaches the log."""

from __future__ import annotations

import random
import threading
import time

import kubernetes.client

from model_services_orchestrator.k8s_api import KubernetesGateway, PodWatcher
from model_services_orchestrator.logs import secret_forms
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    NAMESPACE,
    PRINTENV_IMAGE,
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    fake_model_env,
    running_pods,
    set_terminated,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto


def test_the_watch_survives_a_stream_end_and_410_gone(
        status_kube: ControlPlane, so: SimulatorRecorder, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    sim = "sim-watch"
    models = [f"m{i}" for i in range(5)]
    so.deploy(sim, [(m, "fake_model:0.0.1", [("A", "1")]) for m in models])
    api = core_api(status_kube)
    names = running_pods(api, 5)
    for model in models:
        so.publish(f"/lifecycle/model/mso/{sim}/{model}/ReadyForProcessing", b"", qos=0)
    wait_for(lambda: so.of(sim, "ModelsReady"), timeout=20, what="ModelsReady")

    set_terminated(api, names[0], 0)
    wait_for(lambda: len(so.terminations(sim)) == 1, what="first termination")

    status_kube.close_watches()  # the stream ends: resumed from its resourceVersion
    set_terminated(api, names[1], 3)
    wait_for(lambda: len(so.terminations(sim)) == 2, what="termination after the stream ended")

    # Changes made while the watch is expired are found by the re-list that follows 410 Gone (on the real
    # server: kube-apiserver restarts after a compaction, so the watch's resourceVersion is too old).
    status_kube.expire_watches_with_410()
    set_terminated(api, names[2], 0)
    status_kube.close_watches()
    set_terminated(api, names[3], 4)
    wait_for(lambda: len(so.terminations(sim)) == 4, what="terminations across 410 Gone")
    set_terminated(api, names[4], 0)
    so.wait_all_terminated(sim)

    assert sorted(code for _, code in so.terminations(sim).values()) == [0, 0, 0, 3, 4]
    assert len(so.of(sim, "ModelHasTerminated")) == 5, "no transition reported twice"
    assert len(so.of(sim, "AllModelsHaveTerminated")) == 1
    assert len(so.of(sim, "ModelsReady")) == 1
    assert any(e.get("event") == "pod watch expired, listing again" for e in daemon.log_events())


def test_no_secret_in_the_logs(broker: LocalMosquitto, kube: ControlPlane, so: SimulatorRecorder,
                               make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(kube)
    sim = "sim-secrets"
    secrets = {"DB_PASSWORD": "pw-Very-Secret-1", "API_TOKEN": "tok-Very-Secret-2", "SIGNING_KEY": "key-Secret-3",
               # A model that prints its environment writes these escaped (the repr of a dict).
               "QUOTED_PASSWORD": 'pw-"quoted"-4', "SLASHED_SECRET": "pw\\back\\slash-5",
               "SHORT_PASSWORD": "q7"}
    env = [*fake_model_env(broker, sim, "m1", exit_code=1), *secrets.items()]
    so.deploy(sim, [("m1", PRINTENV_IMAGE, env)])
    so.wait_all_terminated(sim)
    daemon.wait_logged("model failed")
    assert daemon.stop() == 0
    text = daemon.log_text()
    assert "deploying models" in text and "model failed" in text, "the log is there to be checked"
    long_secrets = [value for value in [broker.password, kube.token, *secrets.values()] if len(value) >= 3]
    for value in long_secrets:
        assert value not in text
    failed = daemon.wait_logged("model failed")
    printed = "\n".join(failed["last_log_lines"])
    assert "***" in printed, "the model printed its env: blanked"
    error = wait_for(lambda: so.of(sim, "ErrorOccurred"), what="ErrorOccurred")[0].payload.decode("utf-8", "replace")
    assert "***" in error
    for where in (printed, error):
        for value in long_secrets:
            assert not secret_forms(value) & {word for word in _fragments(where, value)}, (value, where)
        assert "'SHORT_PASSWORD': '***'" in where and "'q7'" not in where


def _fragments(text: str, value: str) -> set[str]:
    """Every substring of ``text`` as long as each escaped form of ``value``: what could be a leak."""
    lengths = {len(form) for form in secret_forms(value)}
    return {text[start:start + length] for length in lengths for start in range(len(text) - length + 1)}


def test_stopping_the_watch_ends_its_thread_whenever_it_comes(status_kube: ControlPlane) -> None:
    """A stop that lands while the watch request is on its way must still end the thread at once.

    Otherwise the daemon's exit waits for the stream's silence timeout (90 s by default).
    """
    gateway = KubernetesGateway(
        api_client=kubernetes.client.ApiClient(status_kube.kube_client_configuration()),
        namespace=NAMESPACE, concurrency=1, request_timeout=10, qps=100, burst=100)
    rng = random.Random(7)
    try:
        for attempt in range(40):
            watcher = PodWatcher(gateway=gateway, label_selector="app=none", deliver=lambda _: None,
                                 reduce=lambda pod: pod, watch_timeout_seconds=300, silence_seconds=60)
            thread = threading.Thread(target=watcher.run, daemon=True)
            thread.start()
            # Sweep the moments around the list and the opening of the watch.
            time.sleep(rng.uniform(0.0, 0.04))
            watcher.stop()
            thread.join(3)
            assert not thread.is_alive(), f"attempt {attempt}: the watch thread outlived stop() by 3 s"
    finally:
        gateway.close()
