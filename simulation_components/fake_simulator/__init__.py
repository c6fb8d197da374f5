"""A stand-in for the DOTS simulation orchestrator (SO), for the demo and end-to-end tests.

Why this exists: the orchestrator only acts when an SO asks it to. This plays
the SO's side of the lifecycle protocol (PROTOCOL.md section 2): it listens
where the SO listens, sends one DeployModels (by default the upstream
quickstart: four fake models, model 1 failing before ReadyForProcessing,
model 2 failing right after it), prints one line per lifecycle message of its
simulation, and exits 0 on AllModelsHaveTerminated (1 on timeout).

The decoding and formatting are pure functions (tested without a broker);
only :func:`main` does I/O. Run with ``python -m simulation_components.fake_simulator --help``.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.messages import (
    DeployModels,
    EnvironmentVariable,
    ErrorOccurred,
    ModelConfiguration,
    ModelHasTerminated,
    TerminationStatus,
    UnhealthyModel,
    UnhealthyModelStatus,
)

__all__ = [
    "Received",
    "SimulatorOptions",
    "build_deploy_models",
    "deploy_models_topic",
    "describe_message",
    "main",
    "model_environment",
    "parse_args",
    "simulation_done_topics",
    "subscription_topics",
]

EXIT_DONE = 0
EXIT_TIMEOUT = 1
EXIT_MQTT_FAILURE = 3
CONNECT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class SimulatorOptions:
    """What the fake SO is asked to do (from the command line)."""

    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    simulator_name: str = "dots-so"
    simulation_id: str = "sim02-abc"
    simulator_id: str = "204-asd"
    models: int = 4
    image: str = "fake_model:0.0.1"
    keep_logs_hours: float = 0.01
    model_mqtt_host: str = "localhost"
    model_mqtt_port: int = 1883
    model_run_seconds: float = 10.0
    failing_models: bool = True
    timeout: float = 300.0

    @property
    def so(self) -> str:
        """The SO's name as it appears in topics."""
        return self.simulator_name.lower()


@dataclass(frozen=True)
class Received:
    """One lifecycle message of our simulation, decoded and described."""

    kind: str
    model_id: str | None
    line: str

    @property
    def ends_simulation(self) -> bool:
        return self.kind == "AllModelsHaveTerminated"


def subscription_topics(so: str) -> list[str]:
    """Where the SO listens (PROTOCOL.md section 2)."""
    return [f"/lifecycle/mso/{so}/#", f"/lifecycle/model/{so}/#"]


def simulation_done_topics(options: SimulatorOptions) -> list[str]:
    """Where today's SO sends SimulationDone, to each model, to end a simulation: normally, or when it
    failed (an ErrorOccurred) or was deleted."""
    return [f"/lifecycle/{options.so}/model/{options.simulation_id}/{model_id_of(index)}/SimulationDone"
            for index in range(options.models)]


def deploy_models_topic(so: str, simulation_id: str) -> str:
    return f"/lifecycle/{so}/mso/{simulation_id}/DeployModels"


def model_id_of(index: int) -> str:
    return f"{index}-model"


def model_environment(options: SimulatorOptions, model_id: str, index: int) -> list[tuple[str, str]]:
    """The environment of one model, in the upstream quickstart's order."""
    env = [
        ("MQTT_HOST", options.model_mqtt_host),
        ("MQTT_PORT", str(options.model_mqtt_port)),
        ("SIMULATOR_ID", options.simulator_id),
        ("SIMULATION_ID", options.simulation_id),
        ("MODEL_ID", model_id),
        ("MQTT_USERNAME", options.mqtt_username),
        ("MQTT_PASSWORD", options.mqtt_password),
    ]
    if options.failing_models and index in (1, 2):
        env.append(("EXIT_CODE", str(index)))
    env.append(("FAKE_MODEL_RUN_SECONDS", f"{options.model_run_seconds:g}"))
    return env


def build_deploy_models(options: SimulatorOptions) -> DeployModels:
    """The DeployModels the fake SO sends: ``--models`` fake models named ``0-model``, ``1-model``, ..."""
    configurations = []
    for index in range(options.models):
        model_id = model_id_of(index)
        configurations.append(
            ModelConfiguration(
                modelID=model_id,
                imageUrl=options.image,
                environmentVariables=[
                    EnvironmentVariable(name=name, value=value)
                    for name, value in model_environment(options, model_id, index)
                ],
            )
        )
    return DeployModels(
        simulatorId=options.simulator_id,
        modelConfigurations=configurations,
        keepLogsHours=options.keep_logs_hours,
    )


def _split_topic(topic: str, so: str, simulation_id: str) -> tuple[str, str | None] | None:
    """(kind, model id or None) of a lifecycle topic of our simulation addressed to the SO."""
    parts = topic.split("/")
    if len(parts) not in (6, 7) or parts[0] != "" or parts[1] != "lifecycle":
        return None
    if parts[2] not in ("mso", "model") or parts[3] != so or parts[4] != simulation_id:
        return None
    if len(parts) == 6:
        return parts[5], None
    return parts[6], parts[5]


def _describe_payload(kind: str, payload: bytes) -> str:
    if kind == "ModelHasTerminated":
        terminated = ModelHasTerminated.FromString(payload)
        return f" {TerminationStatus.Name(terminated.status)} {terminated.exitCode}"
    if kind == "ErrorOccurred":
        return f": {ErrorOccurred.FromString(payload).error_message}"
    if kind == "UnhealthyModel":
        return f" {UnhealthyModelStatus.Name(UnhealthyModel.FromString(payload).status)}"
    return ""


def describe_message(topic: str, payload: bytes, *, so: str, simulation_id: str) -> Received | None:
    """Describe a lifecycle message for our simulation in one line; None for anything else.

    Examples: ``ModelsReady``, ``ModelHasTerminated 1-model FAILED 1``,
    ``ErrorOccurred 1-model: <message>``, ``AllModelsHaveTerminated``.
    """
    split = _split_topic(topic, so, simulation_id)
    if split is None:
        return None
    kind, model_id = split
    head = kind if model_id is None else f"{kind} {model_id}"
    try:
        detail = _describe_payload(kind, payload)
    except (DecodeError, ValueError) as error:
        detail = f" <undecodable payload of {len(payload)} bytes: {error}>"
    return Received(kind, model_id, head + detail)


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> SimulatorOptions:
    env = os.environ if environ is None else environ
    defaults = SimulatorOptions()
    parser = argparse.ArgumentParser(
        prog="python -m simulation_components.fake_simulator",
        description="Play the DOTS simulation orchestrator: send DeployModels and print what comes back.",
    )
    parser.add_argument("--mqtt-host", default=env.get("MQTT_HOST", defaults.mqtt_host))
    parser.add_argument("--mqtt-port", type=int, default=int(env.get("MQTT_PORT") or defaults.mqtt_port))
    parser.add_argument("--mqtt-username", default=env.get("MQTT_USERNAME", defaults.mqtt_username))
    parser.add_argument("--mqtt-password", default=env.get("MQTT_PASSWORD", defaults.mqtt_password))
    parser.add_argument("--simulator-name", default=env.get("SIMULATOR_NAME", defaults.simulator_name))
    parser.add_argument("--simulation-id", default=defaults.simulation_id)
    parser.add_argument("--simulator-id", default=defaults.simulator_id)
    parser.add_argument("--models", type=int, default=defaults.models, help="number of models (default 4)")
    parser.add_argument("--image", default=defaults.image)
    parser.add_argument("--keep-logs-hours", type=float, default=defaults.keep_logs_hours)
    parser.add_argument("--model-mqtt-host", help="MQTT host the models are told (default: --mqtt-host)")
    parser.add_argument(
        "--model-mqtt-port", type=int, help="MQTT port the models are told (default: --mqtt-port)"
    )
    parser.add_argument("--model-run-seconds", type=float, default=defaults.model_run_seconds)
    parser.add_argument(
        "--no-failing-models",
        dest="failing_models",
        action="store_false",
        help="do not give models 1 and 2 EXIT_CODE 1 and 2 (the quickstart does)",
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds (default 300)")
    args = parser.parse_args(argv)
    if args.models < 0:
        parser.error("--models must not be negative")
    return SimulatorOptions(
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        mqtt_username=args.mqtt_username,
        mqtt_password=args.mqtt_password,
        simulator_name=args.simulator_name,
        simulation_id=args.simulation_id,
        simulator_id=args.simulator_id,
        models=args.models,
        image=args.image,
        keep_logs_hours=args.keep_logs_hours,
        model_mqtt_host=args.model_mqtt_host if args.model_mqtt_host is not None else args.mqtt_host,
        model_mqtt_port=args.model_mqtt_port if args.model_mqtt_port is not None else args.mqtt_port,
        model_run_seconds=args.model_run_seconds,
        failing_models=args.failing_models,
        timeout=args.timeout,
    )


def _say(text: str) -> None:
    print(text, flush=True)


def _connect_and_subscribe(options: SimulatorOptions, inbox: queue.Queue[mqtt.MQTTMessage]) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"fake-so-{uuid.uuid4().hex[:12]}", clean_session=True
    )
    if options.mqtt_username:
        client.username_pw_set(options.mqtt_username, options.mqtt_password)
    subscribed = threading.Event()
    failures: list[str] = []
    pending: set[int] = set()
    lock = threading.Lock()

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            failures.append(f"connection refused: {reason_code}")
            subscribed.set()
            return
        with lock:
            _, mid = client.subscribe([(topic, 1) for topic in subscription_topics(options.so)])
            if mid is not None:
                pending.add(mid)

    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            failures.append(f"subscription refused: {reason_codes}")
        with lock:
            pending.discard(mid)
            if not pending:
                subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda client, userdata, message: inbox.put(message)
    client.connect(options.mqtt_host, options.mqtt_port)
    client.loop_start()
    if not subscribed.wait(CONNECT_TIMEOUT_SECONDS) or failures:
        client.loop_stop()
        reason = failures[0] if failures else "no answer"
        raise ConnectionError(f"MQTT {options.mqtt_host}:{options.mqtt_port}: {reason}")
    return client


def run(options: SimulatorOptions) -> int:
    """Send DeployModels, print the lifecycle messages of the simulation; return the exit code."""
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    try:
        client = _connect_and_subscribe(options, inbox)
    except (OSError, ConnectionError) as error:
        _say(f"could not connect: {error}")
        return EXIT_MQTT_FAILURE
    try:
        topic = deploy_models_topic(options.so, options.simulation_id)
        deploy = build_deploy_models(options)
        client.publish(topic, deploy.SerializeToString(), qos=1).wait_for_publish(CONNECT_TIMEOUT_SECONDS)
        _say(f"DeployModels sent: {options.models} models of simulation {options.simulation_id} on {topic}")
        deadline = time.monotonic() + options.timeout
        ended = False
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = inbox.get(timeout=remaining)
            except queue.Empty:
                break
            received = describe_message(
                message.topic, bytes(message.payload), so=options.so, simulation_id=options.simulation_id
            )
            if received is None:
                continue
            _say(received.line)
            if received.ends_simulation:
                return EXIT_DONE
            if received.kind == "ErrorOccurred" and not ended:
                # As today's SO: a failed model fails the simulation, ended by SimulationDone to every
                # model, at QoS 0, whether it listens yet or not.
                ended = True
                _say("simulation failed: SimulationDone to each model")
                for done in simulation_done_topics(options):
                    client.publish(done, b"", qos=0)
        _say(f"timeout: no AllModelsHaveTerminated within {options.timeout:g}s")
        return EXIT_TIMEOUT
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(parse_args(argv)))
