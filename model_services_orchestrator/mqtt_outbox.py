"""The lifecycle messages' own MQTT session: packet ids chosen by the record, resumed the spec's way.

Why this exists: ModelsReady, ModelHasTerminated and AllModelsHaveTerminated
must reach the SO exactly once across any kill of the daemon. At QoS 2 that
holds only if a restarted publisher resumes the broker's half-done flows with
the same packet ids: a message the broker has not acknowledged goes again
with its id and DUP (the broker drops it if it already has it), one it has
received (PUBREC) gets only its PUBREL (the broker releases what it holds),
and no new message takes an id the broker still holds. paho chooses ids
itself and keeps them only in memory, so this session is our own, on
``mqtt_packets``: the inventory gives each decided message its packet id and
records it with the decision, records the broker's PUBREC before this session
may send the PUBREL (``release``), and marks the message delivered on PUBCOMP.

Each is a connection of its own (a persistent session), publishing only;
``MqttOutboxes`` spreads the messages over ``OUTBOX_CONNECTIONS`` of them; subscriptions, pongs and best-effort
messages stay on the paho session. At QoS 1 the same rules hold with PUBACK
(at least once: a broker restart between receiving a message and
acknowledging it repeats it). If the broker has lost our session (CONNACK
session present 0 while messages are in flight), what it had received is
published again: at least once is all that is possible then, and it is logged
at error level.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from model_services_orchestrator import mqtt_packets as packets
from model_services_orchestrator.leadership import LeadershipLostError
from model_services_orchestrator.logs import get_logger
from model_services_orchestrator.mqtt_session import (
    LoginRefusedError,
    MqttSettings,
    first_connection_delay,
    is_login_refused,
)

__all__ = ["OUTBOX_CONNECTIONS", "MqttOutbox", "MqttOutboxes"]

# Sessions the lifecycle messages are spread over, by packet id: Mosquitto takes at most
# max_inflight_messages (20) unfinished QoS 2 messages from one client, and each round of them now waits for
# one write of the session record. Fixed: a restart resumes each message on the session its id names.
OUTBOX_CONNECTIONS = 4

_log = get_logger(__name__)

_CONNECT_TIMEOUT = 10.0
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
_READ_BYTES = 64 * 1024


@dataclass(slots=True)
class _Flight:
    packet_id: int
    topic: str
    payload: bytes
    on_received: Callable[[], None]
    on_delivered: Callable[[], None]
    received: bool = False  # the broker answered PUBREC (or the record says it did, in an earlier life)
    released: bool = False  # the record holds the receipt: PUBREL may go


class MqttOutbox:
    """Publishes lifecycle messages under the packet ids the record gives them, in order, a window at a time."""

    def __init__(self, *, settings: MqttSettings, suffix: str = "-out",
                 may_act: Callable[[], bool] = lambda: True) -> None:
        if settings.publish_qos not in (0, 1, 2):
            raise ValueError(f"publish_qos must be 0, 1 or 2, not {settings.publish_qos}")
        self._settings = settings
        self._client_id = settings.client_id + suffix
        self._may_act = may_act  # False: not the leader, so not a byte goes out (LeadershipLostError)
        self._qos = settings.publish_qos
        self._waiting: deque[_Flight] = deque()
        self._on_wire: dict[int, _Flight] = {}  # sent (or to be sent again on the next connection), in order
        self._writer: asyncio.StreamWriter | None = None
        # A connection of this life found the broker without our session: receipts of an earlier life
        # (from the record) are void, what they stood for is published again.
        self._session_lost = False
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()
        self.reconnects = 0
        self.sent_by_type: dict[str, int] = {}

    # --- what the runtime uses -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def send(self, packet_id: int, topic: str, payload: bytes, *, received: bool = False,
             on_received: Callable[[], None], on_delivered: Callable[[], None]) -> None:
        """Publish under ``packet_id``; ``received``: an earlier life recorded the broker's PUBREC, so only its
        PUBREL may go (once ``release``d). ``on_received`` is called on PUBREC, ``on_delivered`` on PUBCOMP
        (PUBACK at QoS 1; at once at QoS 0)."""
        self._drained.clear()
        self._waiting.append(_Flight(packet_id, topic, payload, on_received, on_delivered,
                                     received=received and not self._session_lost))
        self._pump()

    def release(self, packet_id: int) -> None:
        """The record holds the broker's receipt of this message: complete its flow (PUBREL)."""
        flight = self._on_wire.get(packet_id)
        if flight is None:
            flight = next((waiting for waiting in self._waiting if waiting.packet_id == packet_id), None)
        if flight is None or flight.released:
            return
        flight.released = True
        if flight.received and packet_id in self._on_wire:
            self._write(packets.pubrel(packet_id))

    def pending(self) -> int:
        return len(self._waiting) + len(self._on_wire)

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending, at most ``timeout`` seconds; whether everything went out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        return not self.pending()

    # --- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, resume, publish; reconnect with backoff. Raises ``LoginRefusedError`` on refused credentials,
        ``BrokerUnreachableError`` when no first connection was accepted within the settings' first_connect_timeout.
        """
        settings = self._settings
        loop = asyncio.get_running_loop()
        started = loop.time()
        ever_connected = False
        backoff = _FIRST_BACKOFF
        while True:
            try:
                established = await self._connection()
                error = "connection closed"
            except LoginRefusedError:
                raise
            except (OSError, TimeoutError, packets.MalformedPacketError, asyncio.IncompleteReadError) as exc:
                established, error = False, f"{type(exc).__name__}: {exc}"
            finally:
                await self._close()
            if established:
                backoff = _FIRST_BACKOFF
            delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
            ever_connected = ever_connected or established or self.reconnects > 0
            if ever_connected:
                _log.warning("mqtt outbox connection lost, reconnecting", error=error, delay_seconds=round(delay, 2),
                             unacknowledged=self.pending())
            else:
                # Never connected: nothing was lost, and a broker that never answers is a setting to fix.
                delay = first_connection_delay(settings, waited=loop.time() - started, delay=delay, error=error)
                _log.warning("mqtt outbox connection failed, retrying", client_id=self._client_id,
                             host=settings.host, port=settings.port, error=error, delay_seconds=round(delay, 2))
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _connection(self) -> bool:
        """One connection, until it ends; whether it got as far as CONNACK."""
        settings = self._settings
        if not self._may_act():
            raise LeadershipLostError("not the leader: the MQTT session is the leader's")
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(settings.host, settings.port)
        try:
            writer.write(packets.connect(client_id=self._client_id, keepalive=settings.keepalive,
                                         username=settings.username, password=settings.password))
            parser = packets.PacketReader()
            answers: list[packets.Packet] = []
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                while not answers:
                    data = await reader.read(_READ_BYTES)
                    if not data:
                        raise OSError("closed by the broker before CONNACK")
                    answers = parser.feed(data)
            session_present, code = packets.connack(answers[0])
        except BaseException:
            writer.close()
            raise
        if code:
            writer.close()
            if is_login_refused(code):
                raise LoginRefusedError(f"the broker {settings.host}:{settings.port} refused the login of user "
                                        f"{settings.username!r} (CONNACK {code})")
            raise OSError(f"connection refused by the broker (CONNACK {code})")
        self._writer = writer
        self.reconnects += 1
        _log.info("mqtt outbox connected", client_id=self._client_id, session_present=session_present,
                  in_flight=len(self._on_wire))
        self._resume(session_present)
        keepalive = asyncio.create_task(self._keepalive(), name="mqtt-outbox-keepalive")
        try:
            for packet in answers[1:]:
                self._handle(packet)
            while data := await self._read(reader):
                for packet in parser.feed(data):
                    self._handle(packet)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        return True

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        keepalive = self._settings.keepalive
        if keepalive <= 0:
            return await reader.read(_READ_BYTES)
        # The broker answers every PINGREQ: silence for one and a half keepalives is a dead connection.
        async with asyncio.timeout(keepalive * 1.5):
            return await reader.read(_READ_BYTES)

    async def _keepalive(self) -> None:
        interval = max(self._settings.keepalive / 2, 0.5) if self._settings.keepalive > 0 else None
        while interval is not None:
            await asyncio.sleep(interval)
            self._write(packets.pingreq())

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    def _resume(self, session_present: bool) -> None:
        """Take up, in order, what the last connection (or the last life, through the record) left half done."""
        if not session_present:
            self._session_lost = True
            voided = [flight for flight in (*self._on_wire.values(), *self._waiting) if flight.received]
            if self._on_wire or voided:
                _log.error("the broker lost our session: what it had not completed is published again, at least "
                           "once", messages=len(self._on_wire) + len(voided))
            for flight in voided:
                flight.received = flight.released = False
        for flight in self._on_wire.values():
            if not flight.received:
                self._write(packets.publish(flight.topic, flight.payload, qos=self._qos, packet_id=flight.packet_id,
                                            dup=session_present))
            elif flight.released:
                self._write(packets.pubrel(flight.packet_id))
        self._pump()

    # --- packets -------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._may_act():
            raise LeadershipLostError("not the leader: nothing may be published")
        if self._writer is not None:
            self._writer.write(data)

    def _pump(self) -> None:
        while self._writer is not None and self._waiting and len(self._on_wire) < self._settings.max_inflight:
            flight = self._waiting.popleft()
            if self._qos == 0:
                self._write(packets.publish(flight.topic, flight.payload, qos=0))
                self._delivered(flight)
                continue
            self._on_wire[flight.packet_id] = flight
            if not flight.received:
                self._write(packets.publish(flight.topic, flight.payload, qos=self._qos, packet_id=flight.packet_id,
                                            dup=False))
            elif flight.released:
                self._write(packets.pubrel(flight.packet_id))

    def _handle(self, packet: packets.Packet) -> None:
        if packet.kind == packets.PUBREC:
            flight = self._on_wire.get(packets.packet_id(packet))
            if flight is None:
                return
            if not flight.received:
                flight.received = True
                flight.on_received()
            if flight.released:
                self._write(packets.pubrel(flight.packet_id))
        elif packet.kind in (packets.PUBCOMP, packets.PUBACK):
            flight = self._on_wire.pop(packets.packet_id(packet), None)
            if flight is not None:
                self._delivered(flight)
                self._pump()
        elif packet.kind != packets.PINGRESP:
            raise packets.MalformedPacketError(f"unexpected packet type {packet.kind} on a publishing session")

    def _delivered(self, flight: _Flight) -> None:
        kind = flight.topic.rsplit("/", 1)[-1]
        self.sent_by_type[kind] = self.sent_by_type.get(kind, 0) + 1
        try:
            flight.on_delivered()
        except Exception:  # noqa: BLE001 (logged; the outbox goes on)
            _log.exception("mqtt delivery callback failed")
        if not self.pending():
            self._drained.set()


class MqttOutboxes:
    """``OUTBOX_CONNECTIONS`` outboxes (client ids ``<MQTT_CLIENT_ID>-out<k>``), a message on the one its packet
    id names: each has the broker's in-flight window to itself. Messages on different sessions may overtake
    each other; the inventory releases a simulation's messages so that none may (``Inventory.releasable``)."""

    def __init__(self, *, settings: MqttSettings, connections: int = OUTBOX_CONNECTIONS,
                 may_act: Callable[[], bool] = lambda: True) -> None:
        self.outboxes = [MqttOutbox(settings=settings, suffix=f"-out{index}", may_act=may_act)
                         for index in range(connections)]

    def _of(self, packet_id: int) -> MqttOutbox:
        return self.outboxes[packet_id % len(self.outboxes)]

    @property
    def connected(self) -> bool:
        return all(outbox.connected for outbox in self.outboxes)

    @property
    def reconnects(self) -> int:
        return sum(outbox.reconnects for outbox in self.outboxes)

    @property
    def sent_by_type(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for outbox in self.outboxes:
            for kind, count in outbox.sent_by_type.items():
                total[kind] = total.get(kind, 0) + count
        return total

    def send(self, packet_id: int, topic: str, payload: bytes, *, received: bool = False,
             on_received: Callable[[], None], on_delivered: Callable[[], None]) -> None:
        self._of(packet_id).send(packet_id, topic, payload, received=received, on_received=on_received,
                                 on_delivered=on_delivered)

    def release(self, packet_id: int) -> None:
        self._of(packet_id).release(packet_id)

    def pending(self) -> int:
        return sum(outbox.pending() for outbox in self.outboxes)

    async def flush(self, timeout: float) -> bool:
        flushed = await asyncio.gather(*(outbox.flush(timeout) for outbox in self.outboxes))
        return all(flushed)

    async def run(self) -> None:
        """Every session; the first to fail (a refused login) ends this."""
        await asyncio.gather(*(outbox.run() for outbox in self.outboxes))
