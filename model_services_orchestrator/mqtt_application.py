"""The MQTT side: one persistent session with the broker, our subscriptions, and an ordered outbox.

The client id is stable and the session is not clean, so what the SO and the
models publish while the daemon restarts waits at the broker. One client
object lives as long as the daemon and is reconnected, never replaced: paho
keeps the messages the broker has not acknowledged and sends them again, in
order, after reconnecting. Lifecycle messages go out at QoS 2 by default,
because only QoS 2 lets the broker recognise such a resent message as one it
already has: at QoS 1 a broker restart between receiving a message and
acknowledging it makes the SO hear it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.logs import get_logger

__all__ = ["LoginRefusedError", "MqttApplication", "MqttSettings", "Outbox", "is_auth_failure"]

_log = get_logger(__name__)

# CONNACK codes of a refused login: MQTT 3.1.1's (4 bad user name or password, 5 not authorized), and the
# MQTT 5 reason codes paho 2 reports them as (134, 135), whichever protocol the broker speaks.
_LOGIN_REFUSED_CODES = frozenset({4, 5, 134, 135})


class LoginRefusedError(RuntimeError):
    """The broker refused our credentials: retrying cannot help, an operator must fix them."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    username: str
    password: str
    client_id: str
    keepalive: int
    subscriptions: tuple[str, ...]
    publish_qos: int = 2
    # MQTT 3.1.1 has no way to ask the broker how many unacknowledged QoS 2 messages it takes from a
    # client; Mosquitto drops those past its max_inflight_messages (20 by default) without a word.
    max_inflight: int = 20


class Outbox:
    """Messages decided but not yet acknowledged by the broker, handed to the client in order."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[str, bytes]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.sent_by_type: dict[str, int] = {}

    def put(self, topic: str, payload: bytes) -> None:
        self._waiting.append((topic, payload))
        self._wake.set()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._in_flight)

    async def run(self, client: aiomqtt.Client, connected: asyncio.Event, qos: int, window: int) -> None:
        """Hand messages to the client while connected; each one stays in flight until acknowledged.

        In-flight messages survive a disconnection: the client resends them
        itself after reconnecting, so they must not be handed over again. At
        most ``window`` are handed over at once, the client's own in-flight
        limit: past it paho queues them and rescans that queue on every
        acknowledgement.
        """
        while True:
            await connected.wait()
            while self._waiting and len(self._in_flight) < window and connected.is_set():
                topic, payload = self._waiting.popleft()
                # paho sends in call order; the publish starts before its first await, so order holds.
                task = asyncio.ensure_future(self._publish(client, topic, payload, qos))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                task.add_done_callback(lambda _task: self._wake.set())
            self._wake.clear()
            if not self._waiting or len(self._in_flight) >= window or not connected.is_set():
                await self._wake.wait()

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, qos: int) -> None:
        try:
            await client.publish(topic, payload, qos=qos, timeout=math.inf)
        except aiomqtt.MqttCodeError as exc:
            if exc.rc != paho.mqtt.client.MQTT_ERR_NO_CONN:
                raise
            # The connection dropped just now: paho queued the message and sends it after reconnecting.
        kind = topic.rsplit("/", 1)[-1]
        self.sent_by_type[kind] = self.sent_by_type.get(kind, 0) + 1

    def wake(self) -> None:
        self._wake.set()


def _delivering_queue(deliver: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A stand-in for aiomqtt's message queue that hands each message on as paho parses it.

    aiomqtt's iterator spends a task and an ``asyncio.wait`` on every message
    it yields, which is most of the cost of a burst of ten thousand
    ReadyForProcessing. Its queue is where paho's callback puts each message,
    in the event loop's thread: delivering there costs a call.
    """

    class DeliveringQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            deliver(item)

    return DeliveringQueue


class MqttApplication:
    """Keeps a session with the broker up and hands every received message to ``on_message``."""

    def __init__(self, *, settings: MqttSettings, on_message: Callable[[str, bytes], None]) -> None:
        self._settings = settings
        self._on_message = on_message
        self.outbox = Outbox()
        self._connected = asyncio.Event()
        self.reconnects = 0
        self._accepting = True
        self._client = aiomqtt.Client(
            hostname=settings.host,
            port=settings.port,
            username=settings.username or None,
            password=settings.password or None,
            identifier=settings.client_id,
            clean_session=False,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=settings.keepalive,
            max_inflight_messages=settings.max_inflight,
            queue_type=_delivering_queue(self._deliver),
        )
        # aiomqtt warns once per publish past this many awaiting acknowledgement; ours are thousands by design.
        self._client.pending_calls_threshold = 1_000_000

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish_volatile(self, topic: str, payload: bytes) -> None:
        """Send at QoS 0 now, or not at all: for pings and pongs, which are worthless once stale."""
        if self.connected:
            task = asyncio.ensure_future(self._client.publish(topic, payload, qos=0))
            task.add_done_callback(_ignore_failure)

    def stop_receiving(self) -> None:
        """Drop whatever arrives from now on (shutting down): it stays queued at the broker for our next life."""
        self._accepting = False

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty, at most ``timeout`` seconds; say whether it emptied."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.outbox) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (bounded poll)
            await asyncio.sleep(0.02)
        return not len(self.outbox)

    async def run(self) -> None:
        """Connect, subscribe, receive and publish; reconnect with backoff whenever the broker goes away."""
        publisher = asyncio.create_task(
            self.outbox.run(self._client, self._connected, self._settings.publish_qos, self._settings.max_inflight),
            name="mqtt-outbox")
        backoff = 0.5
        try:
            while True:
                try:
                    await self._session()
                except aiomqtt.MqttError as exc:
                    if is_auth_failure(exc):
                        raise LoginRefusedError(
                            f"the broker {self._settings.host}:{self._settings.port} refused the login of user "
                            f"{self._settings.username!r}: {exc}") from exc
                    delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
                    _log.warning("mqtt connection lost, reconnecting", error=str(exc),
                                 delay_seconds=round(delay, 2), unacknowledged=len(self.outbox))
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, 30.0)
                else:
                    backoff = 0.5
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher

    async def _session(self) -> None:
        settings = self._settings
        client = self._client
        # aiomqtt leaves its "connected" future resolved after an unexpected disconnection; a reused
        # client (kept for paho's session state) must wait for the new CONNACK instead.
        if client._connected.done():  # noqa: SLF001
            client._connected = asyncio.get_running_loop().create_future()  # noqa: SLF001
        try:
            async with client:
                self.reconnects += 1
                _log.info("mqtt connected", host=settings.host, port=settings.port, client_id=settings.client_id)
                await client.subscribe([(topic, 1) for topic in settings.subscriptions])
                _log.info("mqtt subscribed", topics=list(settings.subscriptions))
                self._connected.set()
                self.outbox.wake()
                # Messages arrive through _deliver; the iterator only ends the session when the
                # connection drops (MqttError), as it does for a client that reads its messages.
                async for _never in client.messages:
                    pass
        finally:
            self._connected.clear()

    def _deliver(self, message: aiomqtt.Message) -> None:
        if not self._accepting:
            return
        payload = message.payload
        data = payload if isinstance(payload, bytes) else (payload.encode() if isinstance(payload, str) else b"")
        self._on_message(message.topic.value, data)


def _ignore_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it: a lost ping is no news


def is_auth_failure(exc: aiomqtt.MqttError) -> bool:
    """Whether the broker turned our credentials down."""
    if not isinstance(exc, aiomqtt.MqttCodeError):
        return False
    code = exc.rc
    value = code.value if isinstance(code, ReasonCode) else code
    return value in _LOGIN_REFUSED_CODES
