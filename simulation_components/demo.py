"""The quickstart on one machine: what ``ci/demo.sh`` runs.

Starts a local Mosquitto, a real Kubernetes control plane (its kubelet runs each fake model as a local
process), the orchestrator as its own process, and plays the SO for one simulation: DeployModels, the
models' readiness, ModelsReady, a short "simulation", SimulationDone to each model (as today's SO ends a
simulation), each model's answer, AllModelsHaveTerminated. Two models fail on purpose (they exit with
codes 3 and 4 when the simulation ends), so that the demo shows failures too. It prints what happens in
plain words, then a summary table, and exits 0 when every model got the answer it should (1 otherwise,
with the end of the orchestrator's log).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import Daemon, Received, SimulatorRecorder, fake_model_env
from simulation_components.local_daemon import daemon_environment
from simulation_components.local_mosquitto import LocalMosquitto

__all__ = ["DemoRun", "expected_exit_codes", "main", "summary"]

IMAGE = "fake_model:0.0.1"
#: Which models fail on purpose, and with what exit code.
FAILING = {1: 3, 2: 4}


def model_id(index: int) -> str:
    return f"{index}-model"


def expected_exit_codes(models: int) -> dict[str, int]:
    """The exit code each model of the demo ends with."""
    return {model_id(index): FAILING.get(index, 0) for index in range(models)}


@dataclass
class DemoRun:
    """What the demo saw: the answers, and when things happened (seconds since the demo began)."""

    expected: dict[str, int]
    answers: dict[str, tuple[str, int]] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)

    @property
    def as_expected(self) -> bool:
        return "AllModelsHaveTerminated" in self.times and all(
            self.answers.get(model, ("", None))[1] == code for model, code in self.expected.items())


def _seconds(run: DemoRun, since: str, until: str) -> str:
    if since not in run.times or until not in run.times:
        return "-"
    return f"{run.times[until] - run.times[since]:.1f} s"


def summary(run: DemoRun) -> list[str]:
    """The closing table: each model's answer against what it should be, answers by code, and the times."""
    lines = ["", "Summary", f"  {'model':<10} {'answer':<12} {'exit code':>9}   expected"]
    for model, code in run.expected.items():
        status, exit_code = run.answers.get(model, ("none", None))
        mark = "" if exit_code == code else "   <- not as expected"
        lines.append(f"  {model:<10} {status:<12} {'-' if exit_code is None else exit_code:>9}   {code}{mark}")
    by_code = Counter(code for _, code in run.answers.values())
    answered = ", ".join(f"{count} x exit code {code}" for code, count in sorted(by_code.items())) or "none"
    lines += [
        "",
        f"  models: {len(run.expected)}; answers: {answered}",
        f"  start-up (broker, control plane, orchestrator): {_seconds(run, 'begin', 'deploy')}",
        f"  DeployModels -> ModelsReady: {_seconds(run, 'deploy', 'ModelsReady')}",
        f"  ModelsReady -> AllModelsHaveTerminated: {_seconds(run, 'ModelsReady', 'AllModelsHaveTerminated')}",
        f"  total: {_seconds(run, 'begin', 'end')}",
    ]
    return lines


class _Narrator:
    """Prints each step with the seconds since the demo began."""

    def __init__(self) -> None:
        self.began = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.began

    def __call__(self, text: str) -> None:
        print(f"[{self.now():5.1f}s] {text}", flush=True)


def _describe(message: Received, expected: dict[str, int]) -> str | None:
    """One lifecycle message in plain words; ``None`` for what the demo does not show."""
    if message.kind == "ReadyForProcessing":
        return f"{message.model_id} is running and ready (it sent ReadyForProcessing)"
    if message.kind == "ModelsReady":
        return "ModelsReady: every model is ready; the SO may start the simulation"
    if message.kind == "ModelHasTerminated":
        status, code = message.termination()
        on_purpose = " (on purpose)" if code != 0 and expected.get(message.model_id) == code else ""
        return f"{message.model_id} ended: {status}, exit code {code}{on_purpose}"
    if message.kind == "ErrorOccurred":
        return f"ErrorOccurred for {message.model_id}: the orchestrator tells the SO why it failed"
    if message.kind == "AllModelsHaveTerminated":
        return "AllModelsHaveTerminated: the simulation is over; the orchestrator cleans up its pods"
    return None


def _follow(so: SimulatorRecorder, simulation_id: str, run: DemoRun, say: Callable[[str], None], *,
            simulate_seconds: float, timeout: float, daemon: Daemon) -> None:
    """Play the SO until AllModelsHaveTerminated (or the timeout)."""
    shown = 0
    done_sent = False
    end_at: float | None = None
    deadline = time.monotonic() + timeout
    models = list(run.expected)

    def end_simulation(why: str) -> None:
        nonlocal done_sent
        done_sent = True
        say(f"SO: {why}: SimulationDone to each model")
        for model in models:
            so.publish(f"/lifecycle/{so.so}/model/{simulation_id}/{model}/SimulationDone", b"", qos=0)

    while "AllModelsHaveTerminated" not in run.times:
        if time.monotonic() > deadline:
            say(f"no AllModelsHaveTerminated within {timeout:g} s")
            return
        daemon.check_alive()
        messages = so.of(simulation_id)
        for message in messages[shown:]:
            if (text := _describe(message, run.expected)) is not None:
                say(text)
            if message.kind == "ModelHasTerminated":
                run.answers[message.model_id] = message.termination()
            if message.kind in ("ModelsReady", "AllModelsHaveTerminated"):
                run.times.setdefault(message.kind, time.monotonic())
            if message.kind == "ModelsReady":
                say(f"SO: the simulation runs for {simulate_seconds:g} s")
                end_at = time.monotonic() + simulate_seconds
            if message.kind == "ErrorOccurred" and not done_sent:
                end_simulation("a model failed, so the simulation ends")  # as today's SO does
        shown = len(messages)
        if end_at is not None and not done_sent and time.monotonic() >= end_at:
            end_simulation("the simulation is done")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/demo.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4, help="how many models (default 4; 1-model and 2-model "
                                                              "fail on purpose)")
    parser.add_argument("--simulate-seconds", type=float, default=2.0,
                        help="how long the SO lets the simulation run after ModelsReady")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the end (default 120)")
    parser.add_argument("--show-daemon-log", action="store_true", help="print the orchestrator's log afterwards")
    args = parser.parse_args(argv)
    if args.models < 1:
        parser.error("--models must be at least 1")

    say = _Narrator()
    run = DemoRun(expected=expected_exit_codes(args.models))
    begin = time.monotonic()
    run.times["begin"] = begin
    simulation_id = f"demo-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="mso-demo-") as scratch:
        say("Starting Mosquitto, the MQTT broker (password login, its own port)")
        with LocalMosquitto(password=secrets.token_hex(8)) as broker:
            say(f"Mosquitto listens on {broker.host}:{broker.port}")
            say("Starting a Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, and a "
                "kubelet that runs each model as a local process")
            with ControlPlane(kubelet="process") as kube:
                say(f"Kubernetes {kube.version()} answers on {kube.url} (namespace {kube.namespace})")
                env = daemon_environment(broker, kube, {"LOG_FORMAT": "json", "HTTP_PORT": 0})
                daemon = Daemon(env=env, log_path=Path(scratch) / "daemon.log").start()
                so: SimulatorRecorder | None = None
                try:
                    say("Starting the orchestrator (python -m model_services_orchestrator)")
                    daemon.wait_logged("mqtt subscribed", timeout=60)
                    say("The orchestrator is connected to MQTT and listens for DeployModels")
                    so = SimulatorRecorder(broker)
                    so.client.subscribe(f"/lifecycle/model/mso/{simulation_id}/+/ReadyForProcessing", qos=1)
                    failing = [f"{model_id(i)} exits with {code}" for i, code in FAILING.items() if i < args.models]
                    run.times["deploy"] = time.monotonic()
                    so.deploy(simulation_id, [
                        (model, IMAGE, fake_model_env(broker, simulation_id, model, exit_code=code or None,
                                                      run_seconds=args.timeout))
                        for model, code in run.expected.items()])
                    say(f"SO: DeployModels for simulation {simulation_id}: {args.models} models "
                        f"({', '.join(run.expected)}); each becomes a pod")
                    if failing:
                        say(f"Failing on purpose when the simulation ends: {'; '.join(failing)}")
                    _follow(so, simulation_id, run, say, simulate_seconds=args.simulate_seconds,
                            timeout=args.timeout, daemon=daemon)
                finally:
                    if so is not None:
                        so.close()
                    daemon.stop()
                say("Stopping the orchestrator, the control plane and Mosquitto")
        run.times["end"] = time.monotonic()
        print("\n".join(summary(_relative(run, begin))), flush=True)
        if args.show_daemon_log or not run.as_expected:
            print("--- the orchestrator's log (the end) ---")
            print(daemon.log_text()[-6000:])
    return 0 if run.as_expected else 1


def _relative(run: DemoRun, begin: float) -> DemoRun:
    return DemoRun(run.expected, run.answers, {name: at - begin for name, at in run.times.items()})


if __name__ == "__main__":
    sys.exit(main())
