"""The MQTT side: one persistent session with the broker, our subscriptions, and an ordered outbox.

Why this exists: a thin asyncio adapter over paho's own client, owned here in
the open, instead of aiomqtt. aiomqtt's message iterator costs a task and an
``asyncio.wait`` per message, which is most of the cost of a burst of ten
thousand ReadyForProcessing, and reusing one aiomqtt client after an
unexpected disconnection needs a write to its private state. Here paho's
``on_message`` hands each message on with a plain call, in the event loop's
thread, and everything is done through paho's public API: the socket
callbacks hook its socket into the event loop (``loop_read`` when readable,
``loop_write`` when it has something to send), a task calls ``loop_misc``
every second for the keepalive, and only the blocking TCP connect runs in a
worker thread.

The client id is stable and the session is not clean, so what the SO and the
models publish while the daemon restarts waits at the broker. One paho client
lives as long as the session object and is reconnected, never replaced: paho
keeps the QoS 1 and 2 messages the broker has not acknowledged and sends them
again, in order, after reconnecting (``PUBLISH`` with DUP for those not yet
received, ``PUBREL`` for those received but not completed). Lifecycle
messages go out at QoS 2 by default, because only QoS 2 lets the broker
recognise such a resent message as one it already has: at QoS 1 a broker
restart between receiving a message and acknowledging it makes the SO hear it
twice.

Received messages are acknowledged when the application says so (paho's
manual acknowledgement, in the order they arrived, as MQTT 3.1.1 asks): the
runtime does once the record holds what a message changed. What a kill
interrupts before that, or what arrives after
:meth:`MqttSession.stop_receiving`, is never acknowledged and the broker
delivers it again to our next life.

The session is also the daemon's presence (:class:`Presence`): a retained
message published on each connection, which the connection's Will empties.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.leadership import LeadershipLostError
from model_services_orchestrator.logs import get_logger
from model_services_orchestrator.topics import topic_problem

if TYPE_CHECKING:
    from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage, SocketLike
    from paho.mqtt.properties import Properties

__all__ = ["BrokerUnreachableError", "LoginRefusedError", "MqttSession", "MqttSettings", "Presence",
           "first_connection_delay", "is_login_refused"]

_log = get_logger(__name__)

# CONNACK codes of a refused login: MQTT 3.1.1's (4 bad user name or password, 5 not authorized), and the
# MQTT 5 reason codes paho 2 reports them as (134, 135), whichever protocol the broker speaks.
_LOGIN_REFUSED_CODES = frozenset({4, 5, 134, 135})

# Seconds between calls of paho's loop_misc (keepalive pings, dead-connection checks); a quarter of a
# shorter keepalive, so a ping is never late enough for the broker to give up on us (at 1.5 keepalives).
_MISC_INTERVAL = 1.0
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
_DISCONNECT_GRACE = 1.0  # seconds to let our DISCONNECT packet go out when run() is cancelled

_OnDelivered = Callable[[], None] | None


class LoginRefusedError(RuntimeError):
    """The broker refused our credentials: retrying cannot help, an operator must fix them."""


class BrokerUnreachableError(RuntimeError):
    """No connection to the broker was ever accepted within ``first_connect_timeout``: most likely the wrong host
    or port, which an operator must fix. Once connected, a session reconnects for ever instead."""

    def __init__(self, *, host: str, port: int, waited_seconds: float, last_error: str) -> None:
        super().__init__(f"no connection to the broker {host}:{port} accepted in {waited_seconds:.1f} s: {last_error}")
        self.host, self.port = host, port
        self.waited_seconds = waited_seconds
        self.last_error = last_error


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
    # How long the first connection may take (a host that never answers, refuses or does not resolve) before
    # BrokerUnreachableError; once a connection was accepted, reconnections are tried for ever.
    first_connect_timeout: float = math.inf


@dataclass(frozen=True, slots=True)
class Presence:
    """A retained message that says the session's owner is there (the daemon's MSOInfo, PROTOCOL.md section 7).

    Published at QoS 1, retained, on every connection, ahead of what waits
    in the outbox. The connection's Will is an empty retained message on the
    same topic, so the broker empties it when the connection ends without a
    DISCONNECT (a killed process, a lost network); a clean stop empties it
    itself (:meth:`MqttSession.withdraw_presence`), since a DISCONNECT makes
    the broker drop the Will.
    """

    topic: str
    payload: Callable[[], bytes]  # asked on every connection: what the owner announces by then


def first_connection_delay(settings: MqttSettings, *, waited: float, delay: float, error: str) -> float:
    """The pause before another attempt at a first connection: ``delay``, cut to what is left of
    ``first_connect_timeout``; ``BrokerUnreachableError`` once nothing is left."""
    left = settings.first_connect_timeout - waited
    if left <= 0:
        raise BrokerUnreachableError(host=settings.host, port=settings.port, waited_seconds=waited, last_error=error)
    return min(delay, left)


def is_login_refused(reason: ReasonCode | int) -> bool:
    """Whether a CONNACK code (paho's ``ReasonCode`` or a bare MQTT 3.1.1 number) says our login was refused."""
    value = reason.value if isinstance(reason, ReasonCode) else reason
    return value in _LOGIN_REFUSED_CODES


def _check_topic(topic: str) -> None:
    # Checked when a message is decided, not when it is handed over later: a topic the broker refuses
    # would make it disconnect us, and paho would resend it, and be disconnected, on every reconnection.
    if (problem := topic_problem(topic)) is not None:
        raise ValueError(f"cannot publish to {topic[:300]!r}: it {problem}")


class MqttSession:
    """Keeps a session with the broker up, hands every received message to ``on_message``, publishes in order."""

    def __init__(self, *, settings: MqttSettings,
                 on_message: Callable[[str, bytes, Callable[[], None] | None], None],
                 on_connected: Callable[[bool], None] | None = None,
                 may_act: Callable[[], bool] = lambda: True,
                 presence: Presence | None = None) -> None:
        """``on_message(topic, payload, ack)``: ``ack()`` acknowledges the message to the broker (acknowledgements
        go out in the order the messages came, each once its own ``ack`` and those before were called); ``ack``
        is ``None`` for a QoS 0 message, which has no acknowledgement.
        ``on_connected(session_present)``: called (in the loop) each time the session is connected and
        subscribed; ``session_present`` says whether the broker still had our session.
        ``may_act()``: whether this process leads; when it does not, nothing is published, and connecting
        raises ``LeadershipLostError`` (it would take the session from the leader).
        ``presence``: a retained message published on every connection and emptied by the Will (see
        :class:`Presence`); published only while ``may_act()``, like everything else."""
        if settings.publish_qos not in (0, 1, 2):
            raise ValueError(f"publish_qos must be 0, 1 or 2, not {settings.publish_qos}")
        if settings.max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, not {settings.max_inflight}")
        self._settings = settings
        self._on_message = on_message
        self._on_connected = on_connected
        self._may_act = may_act
        # Received QoS 1 and 2 messages not yet acknowledged, in order: message id -> its QoS once its ack
        # was called, 0 before.
        self._unacknowledged: dict[int, int] = {}
        self._session_present = False
        self.reconnects = 0
        self.sent_by_type: dict[str, int] = {}
        self._connected = False
        self._accepting = True
        # The outbox: messages decided but not handed to paho yet, and those paho holds until acknowledged.
        self._waiting: deque[tuple[str, bytes, _OnDelivered]] = deque()
        self._in_flight: dict[int, tuple[str, _OnDelivered]] = {}  # paho's message id -> (kind, on_delivered)
        self._pump_scheduled = False
        self._write_scheduled = False
        self._drain_waiters: set[asyncio.Future[None]] = set()
        # Set by run(): the loop paho's callbacks must run in.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # The current connection attempt: paho's blocking connect in a worker thread.
        self._connecting: asyncio.Future[MQTTErrorCode] | None = None
        self._session_ended: asyncio.Future[str] | None = None
        self._socket_closed: asyncio.Future[None] | None = None
        self._refusal: ReasonCode | None = None
        self._subscribe_mid: int | None = None
        self._established = False
        self._ever_connected = False  # a CONNACK accepted our connection, once in this session's life
        self._presence = presence
        # What the presence message is to say next (its payload after a connection, b"" once withdrawn); None
        # when nothing is due.
        self._presence_next: bytes | None = None
        self._withdrawn = False

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # we decide when to reconnect; paho must not downgrade or retry itself
            manual_ack=True,
        )
        client.username_pw_set(settings.username or None, settings.password or None)
        # At most this many QoS 1/2 messages part way through their flow: our window is the same, so paho
        # never holds a message back itself (it would rescan its whole queue on every acknowledgement).
        client.max_inflight_messages_set(settings.max_inflight)
        client.enable_logger(logging.getLogger("paho.mqtt.client"))  # through the same pipeline as ours
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = self._handle_socket_open
        client.on_socket_close = self._handle_socket_close
        client.on_socket_register_write = self._handle_socket_register_write
        client.on_socket_unregister_write = self._handle_socket_unregister_write
        if presence is not None:
            _check_topic(presence.topic)
            # Sent by the broker, for us, when a connection ends without our DISCONNECT: kept for every
            # reconnection. Only a connected session has one, so a standby replica's death empties nothing.
            client.will_set(presence.topic, b"", qos=1, retain=True)
        # No network here: only records where reconnect() goes.
        client.connect_async(settings.host, settings.port, settings.keepalive)
        self._client = client

    # --- what the application uses -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and subscribed: messages flow both ways."""
        return self._connected

    def publish(self, topic: str, payload: bytes, on_delivered: Callable[[], None] | None = None) -> None:
        """Send in order at the configured QoS; ``on_delivered`` is called (in the loop) once the broker has it.

        The message waits here until connected and the window has room; once
        handed to paho it survives disconnections (paho resends it after
        reconnecting) and is never handed over again.
        """
        _check_topic(topic)
        if not self._may_act():
            raise LeadershipLostError("not the leader: nothing may be published")
        self._waiting.append((topic, payload, on_delivered))
        self._schedule_pump()

    def publish_volatile(self, topic: str, payload: bytes) -> None:
        """Send at QoS 0 now, or not at all: for pings and pongs, which are worthless once stale."""
        _check_topic(topic)
        if self._connected and self._may_act():
            self._client.publish(topic, payload, qos=0)

    def stop_receiving(self) -> None:
        """Drop whatever arrives from now on (shutting down).

        Dropped messages are not acknowledged, so the broker delivers them
        again to our next session (at QoS 1, that of our subscriptions; a
        QoS 2 message is past that point when it reaches us).
        """
        self._accepting = False

    def pending(self) -> int:
        """Messages published and not yet delivered: waiting here or in flight."""
        return len(self._waiting) + len(self._in_flight) + (self._presence_next is not None)

    async def withdraw_presence(self, timeout: float) -> bool:
        """Empty the retained presence message and publish it no more (a clean stop, before the DISCONNECT that
        makes the broker drop the Will); say whether the broker had everything within ``timeout`` seconds."""
        if self._presence is None:
            return True
        self._withdrawn = True
        self._presence_next = b""  # a connection made after this (still stopping) empties it too
        if not self._connected:
            return False  # the connection that went away left its Will
        self._schedule_pump()
        return await self.flush(timeout)

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending, at most ``timeout`` seconds; say whether everything went out."""
        if not self.pending():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        finally:
            self._drain_waiters.discard(waiter)
        return True

    async def run(self) -> None:
        """Connect, subscribe, receive and publish; reconnect with backoff whenever the broker goes away.

        Raises :class:`LoginRefusedError` when the broker refuses our
        credentials, :class:`BrokerUnreachableError` when no first connection
        was accepted within ``first_connect_timeout``. Cancelling it
        disconnects cleanly and closes the socket.
        """
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        keepalive = asyncio.create_task(self._call_loop_misc(), name="mqtt-keepalive")
        settings = self._settings
        started = loop.time()
        backoff = _FIRST_BACKOFF
        try:
            while True:
                error = await self._session()
                if self._refusal is not None and is_login_refused(self._refusal):
                    raise LoginRefusedError(
                        f"the broker {settings.host}:{settings.port} refused the login of user "
                        f"{settings.username!r}: {self._refusal}")
                if self._established:
                    backoff = _FIRST_BACKOFF  # a session that got going starts the backoff over
                delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
                if self._ever_connected:
                    _log.warning("mqtt connection lost, reconnecting", error=error,
                                 delay_seconds=round(delay, 2), unacknowledged=self.pending())
                else:
                    # Never connected: nothing was lost, and a broker that never answers is a setting to fix.
                    delay = first_connection_delay(settings, waited=loop.time() - started, delay=delay, error=error)
                    _log.warning("mqtt connection failed, retrying", host=settings.host, port=settings.port,
                                 error=error, delay_seconds=round(delay, 2))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            await self._close()

    # --- connections ---------------------------------------------------------------------------

    async def _session(self) -> str:
        """One connection, from connecting to its loss; returns what ended it."""
        loop = self._require_loop()
        if not self._may_act():
            raise LeadershipLostError("not the leader: the MQTT session is the leader's")
        self._refusal = None
        self._established = False
        ended: asyncio.Future[str] = loop.create_future()
        self._session_ended = ended
        # paho's connect blocks on the TCP handshake. The socket callbacks it makes from the worker
        # thread hop to the loop (see _in_loop); nothing else touches the client until it returns.
        connecting = loop.run_in_executor(None, self._client.reconnect)
        self._connecting = connecting
        try:
            await asyncio.shield(connecting)  # if run() is cancelled, _close() waits for the thread
        except OSError as exc:
            return f"cannot connect: {exc}"
        return await ended

    async def _call_loop_misc(self) -> None:
        keepalive = self._settings.keepalive
        interval = min(_MISC_INTERVAL, keepalive / 4) if keepalive > 0 else _MISC_INTERVAL
        while True:
            await asyncio.sleep(interval)
            if self._connecting is None or self._connecting.done():
                self._client.loop_misc()

    async def _close(self) -> None:
        """Disconnect cleanly (DISCONNECT, then close), or just close the socket if that does not go out."""
        if self._presence is not None and not self._withdrawn and self._connected:
            # Stopping without withdraw_presence (a failure): our DISCONNECT drops the Will, so empty the
            # presence message now; paho writes it before the DISCONNECT.
            self._withdrawn, self._presence_next = True, b""
            self._send_presence()
        self._connected = False
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            await asyncio.wait({connecting})  # bounded by paho's connect_timeout
        if connecting is not None and connecting.done() and not connecting.cancelled():
            connecting.exception()  # retrieved: a failed last attempt is no news when stopping
        client = self._client
        if client.socket() is None:
            return
        closed: asyncio.Future[None] = self._require_loop().create_future()
        self._socket_closed = closed
        client.disconnect()
        client.loop_write()  # normally sends DISCONNECT at once, and paho closes the socket after it
        if client.socket() is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DISCONNECT_GRACE):
                    await closed
        if client.socket() is not None:
            # The broker does not read: give up on a clean goodbye. Documented to drop the connection at once.
            client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive)

    def _handle_connect(
        self, client: paho.Client, _userdata: Any, flags: ConnectFlags, reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            # paho closes the socket next and calls on_disconnect, which ends the session.
            self._refusal = reason
            return
        self.reconnects += 1
        self._ever_connected = True
        self._session_present = bool(flags.session_present)
        settings = self._settings
        _log.info("mqtt connected", host=settings.host, port=settings.port, client_id=settings.client_id,
                  session_present=flags.session_present)
        if settings.subscriptions:
            _rc, mid = client.subscribe([(topic, 1) for topic in settings.subscriptions])
            self._subscribe_mid = mid
        else:
            self._subscribed()

    def _handle_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        self._subscribe_mid = None
        refused = [topic for topic, reason in zip(self._settings.subscriptions, reasons, strict=False)
                   if reason.is_failure]
        if refused:
            _log.error("mqtt subscription refused", topics=refused)
        self._subscribed()

    def _subscribed(self) -> None:
        _log.info("mqtt subscribed", topics=list(self._settings.subscriptions))
        self._connected = True
        self._established = True
        if self._presence is not None and not self._withdrawn:
            self._presence_next = self._presence.payload()  # on every connection: a lost one's Will emptied it
        self._schedule_pump()
        if self._on_connected is not None:
            try:
                self._on_connected(self._session_present)
            except Exception:  # noqa: BLE001 (logged: an exception through paho would break its read state)
                _log.exception("mqtt connection callback failed")

    def _handle_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: DisconnectFlags, reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected = False
        self._subscribe_mid = None
        # The broker sends what we did not acknowledge again on the next connection (DUP), by the same ids.
        self._unacknowledged.clear()
        if self._settings.publish_qos == 0 and self._in_flight:
            # paho drops QoS 0 messages not yet written when the connection goes: at most once.
            _log.warning("mqtt messages lost with the connection", count=len(self._in_flight))
            self._in_flight.clear()
            self._notify_if_drained()
        ended = self._session_ended
        if ended is not None and not ended.done():
            if self._refusal is not None:
                ended.set_result(f"connection refused: {self._refusal}")
            else:
                ended.set_result(f"connection lost ({reason})")

    # --- messages ------------------------------------------------------------------------------

    def _handle_message(self, client: paho.Client, _userdata: Any, message: MQTTMessage) -> None:
        if not self._accepting and message.qos < 2:
            return  # not acknowledged: the broker keeps it for our next session
        mid, qos = message.mid, message.qos
        acknowledge: Callable[[], None] | None = None
        if qos:
            self._unacknowledged[mid] = 0
            acknowledge = functools.partial(self._acknowledge, client, mid, qos)
        try:
            if self._accepting:
                payload = message.payload
                self._on_message(message.topic, payload if isinstance(payload, bytes) else bytes(payload),
                                 acknowledge)
            elif acknowledge is not None:
                acknowledge()
        except Exception:  # noqa: BLE001 (logged: an exception through paho would break its read state)
            _log.exception("mqtt message handling failed")
            if acknowledge is not None:
                acknowledge()

    def _acknowledge(self, client: paho.Client, mid: int, qos: int) -> None:
        if mid not in self._unacknowledged:
            return  # from an earlier connection: the broker sends it again, acknowledged then
        self._unacknowledged[mid] = qos
        # In order: the first ones that are done, up to one that is not.
        while self._unacknowledged and (first := next(iter(self._unacknowledged.items())))[1]:
            del self._unacknowledged[first[0]]
            client.ack(first[0], first[1])

    def _handle_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, _reason: ReasonCode, _properties: Properties,
    ) -> None:
        entry = self._in_flight.pop(mid, None)
        if entry is None:
            return  # a volatile message went out
        kind, on_delivered = entry
        self.sent_by_type[kind] = self.sent_by_type.get(kind, 0) + 1
        if on_delivered is not None:
            try:
                on_delivered()
            except Exception:  # noqa: BLE001 (logged; the outbox goes on)
                _log.exception("mqtt delivery callback failed")
        self._schedule_pump()
        self._notify_if_drained()

    def _schedule_pump(self) -> None:
        # Once per loop iteration at most, and outside paho's callbacks: paho counts a message as in
        # flight until its on_publish returns, so a hand-over from inside it would be held back by paho.
        if (not self._pump_scheduled and self._connected and (self._waiting or self._presence_next is not None)
                and len(self._in_flight) < self._settings.max_inflight):
            self._pump_scheduled = True
            self._require_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._presence_next is not None and not self._send_presence():
            return
        qos = self._settings.publish_qos
        window = self._settings.max_inflight
        while self._connected and self._waiting and len(self._in_flight) < window and self._may_act():
            topic, payload, on_delivered = self._waiting.popleft()
            info = self._client.publish(topic, payload, qos=qos)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                # Its message id (a 16-bit counter) is still taken by an old message in flight: try
                # again with the next id once an acknowledgement comes.
                self._waiting.appendleft((topic, payload, on_delivered))
                return
            if qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._waiting.appendleft((topic, payload, on_delivered))
                return
            # At QoS 1 and 2 paho now owns it, connected or not (NO_CONN: it sends it after reconnecting).
            self._in_flight[info.mid] = (topic.rsplit("/", 1)[-1], on_delivered)

    def _send_presence(self) -> bool:
        """Hand the due presence message to paho, within our window; False when it must wait for room."""
        presence, payload = self._presence, self._presence_next
        assert presence is not None and payload is not None
        if not self._connected or len(self._in_flight) >= self._settings.max_inflight or not self._may_act():
            return False
        info = self._client.publish(presence.topic, payload, qos=1, retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return False  # its id is still taken (see _pump): again after the next acknowledgement
        self._presence_next = None
        self._in_flight[info.mid] = (presence.topic.rsplit("/", 1)[-1], None)
        return True

    def _notify_if_drained(self) -> None:
        if self._drain_waiters and not self._waiting and not self._in_flight and self._presence_next is None:
            for waiter in self._drain_waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- paho's socket in the event loop -------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the MQTT session is not running")
        return self._loop

    def _in_loop(self, callback: Callable[[int], None], fd: int) -> None:
        """Run now if in the loop's thread, else hop there (in order: the loop runs such calls first come first)."""
        if threading.get_ident() == self._loop_thread:
            callback(fd)
        else:
            self._require_loop().call_soon_threadsafe(callback, fd)

    def _handle_socket_open(self, _client: paho.Client, _userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._watch_reads, sock.fileno())

    def _handle_socket_close(self, _client: paho.Client, _userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._forget, sock.fileno())  # called before paho closes it: the number is still its own

    def _handle_socket_register_write(self, _client: paho.Client, _userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._write_soon, sock.fileno())

    def _handle_socket_unregister_write(self, _client: paho.Client, _userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._unwatch_writes, sock.fileno())

    def _watch_reads(self, fd: int) -> None:
        self._require_loop().add_reader(fd, self._client.loop_read)

    def _write_soon(self, _fd: int) -> None:
        # paho has packets to send. The socket can nearly always take them at once: write them later in
        # this loop iteration, all together, and watch for writability only if some remain (a full
        # buffer). Watching at once would cost two epoll changes per acknowledgement in a burst.
        if not self._write_scheduled:
            self._write_scheduled = True
            self._require_loop().call_soon(self._write_now)

    def _write_now(self) -> None:
        self._write_scheduled = False
        client = self._client
        if client.socket() is None:
            return
        client.loop_write()
        sock = client.socket()
        if sock is not None and client.want_write():
            # paho calls on_socket_unregister_write once it has written everything.
            self._require_loop().add_writer(sock.fileno(), client.loop_write)

    def _unwatch_writes(self, fd: int) -> None:
        self._require_loop().remove_writer(fd)

    def _forget(self, fd: int) -> None:
        loop = self._require_loop()
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        closed = self._socket_closed
        if closed is not None and not closed.done():
            closed.set_result(None)
