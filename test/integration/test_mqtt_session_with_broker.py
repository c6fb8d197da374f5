"""The MQTT session against a real Mosquitto: messages both ways, order, a broker restart, a refused login.

The other side of every test is a plain paho client running in its own thread
with a persistent session, so what it counts is what the broker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from model_services_orchestrator import mqtt_packets as packets
from model_services_orchestrator.mqtt_outbox import MqttOutbox
from model_services_orchestrator.mqtt_session import LoginRefusedError, MqttSession, MqttSettings, Presence
from simulation_components.kit import retained_messages
from simulation_components.local_mosquitto import LocalMosquitto
from simulation_components.processes import free_port


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _settings(broker: LocalMosquitto, *, subscriptions: tuple[str, ...] = (), **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": broker.host, "port": broker.port, "username": broker.username, "password": broker.password,
        "client_id": _unique("session"), "keepalive": 5, "subscriptions": subscriptions, **overrides}
    return MqttSettings(**values)


class Peer:
    """A paho client in its own thread, with a persistent session: the broker keeps its messages across restarts."""

    def __init__(self, broker: LocalMosquitto, subscription: str | None = None, client_id: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._subscription = subscription
        self._closed = False
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or _unique("peer"), clean_session=False)
        client.username_pw_set(broker.username, broker.password)
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect(broker.host, broker.port, keepalive=5)
        client.loop_start()
        self._client = client
        if subscription is not None:
            assert self._subscribed.wait(5), "the peer did not subscribe"

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not reason.is_failure and self._subscription is not None:
            client.subscribe(self._subscription, qos=2)

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _topic, payload in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.payloads()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.payloads()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def peers(broker: LocalMosquitto) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(subscription: str | None = None, client_id: str | None = None) -> Peer:
        peer = Peer(broker, subscription, client_id)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


async def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a bounded poll of state owned by callbacks)
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _running(session: MqttSession | MqttOutbox) -> Any:
    task = asyncio.create_task(session.run())
    try:
        await _wait_until(lambda: session.connected or task.done())
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_messages_come_in_as_bytes_in_order_and_go_out(broker: LocalMosquitto, peers: Callable[..., Peer]) -> None:
    base = _unique("t")
    outside = peers(f"{base}/out/#")
    received: list[tuple[str, bytes]] = []

    def on_message(topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        if payload == b"boom":
            raise RuntimeError("a handler failing must not stop the session")
        received.append((topic, payload))
        if ack is not None:
            ack()

    async def scenario() -> MqttSession:
        session = MqttSession(settings=_settings(broker, subscriptions=(f"{base}/in/#",)), on_message=on_message)
        async with _running(session):
            sender = peers()
            await asyncio.to_thread(sender.publish, f"{base}/in/Ready", b"boom")
            for index in range(100):
                await asyncio.to_thread(sender.publish, f"{base}/in/Ready", b"in-%d" % index)
            await _wait_until(lambda: len(received) >= 100)
            for index in range(10):
                session.publish(f"{base}/out/Pong", b"out-%d" % index)
            assert await session.flush(5)
            session.publish_volatile(f"{base}/out/Ping", b"volatile")
            await asyncio.to_thread(outside.wait_for, 11)
        return session

    session = asyncio.run(scenario())
    assert received == [(f"{base}/in/Ready", b"in-%d" % index) for index in range(100)]
    assert all(type(payload) is bytes for _topic, payload in received)
    # At the subscriber, QoS 0 overtakes QoS 2 flows still under way: order holds within each.
    assert [payload for topic, payload in outside.received if topic.endswith("/Pong")] == [
        b"out-%d" % index for index in range(10)]
    assert [payload for topic, payload in outside.received if topic.endswith("/Ping")] == [b"volatile"]
    assert session.sent_by_type == {"Pong": 10}
    assert session.pending() == 0
    assert session.reconnects == 1


@pytest.mark.parametrize("qos", [2, 1, 0])
def test_two_hundred_messages_keep_their_order_within_the_window(
    broker: LocalMosquitto, peers: Callable[..., Peer], qos: int,
) -> None:
    base = _unique("t")
    outside = peers(f"{base}/#")
    delivered: list[int] = []
    most_in_flight = 0

    async def scenario() -> MqttSession:
        nonlocal most_in_flight
        session = MqttSession(settings=_settings(broker, max_inflight=20, publish_qos=qos),
                              on_message=_ignoring)
        client = session._client  # noqa: SLF001 (counting what is handed to paho at once)
        handed = 0
        original = client.publish

        def counting_publish(*args: Any, **kwargs: Any) -> paho.MQTTMessageInfo:
            nonlocal handed, most_in_flight
            handed += 1
            most_in_flight = max(most_in_flight, handed - len(delivered))
            return original(*args, **kwargs)

        client.publish = counting_publish  # type: ignore[method-assign]
        async with _running(session):
            for index in range(200):
                session.publish(f"{base}/ModelsReady", b"%d" % index,
                                on_delivered=functools.partial(delivered.append, index))
            assert session.pending() == 200
            assert await session.flush(10)
        return session

    session = asyncio.run(scenario())
    assert delivered == list(range(200))  # each once, in order
    assert most_in_flight == 20
    assert outside.wait_for(200) == [b"%d" % index for index in range(200)]
    assert session.sent_by_type == {"ModelsReady": 200}


def test_a_broker_restart_loses_nothing_and_repeats_nothing(broker: LocalMosquitto, peers: Callable[..., Peer]) -> None:
    base = _unique("t")
    # The subscriber is away while it all happens: its messages wait at the broker, so what it gets in
    # the end shows what the broker took from us, each message once or not. (Were it connected, a
    # restart could make Mosquitto 2.0 send it again a QoS 2 message it had completed: another leg.)
    subscriber = _unique("peer")
    peers(f"{base}/#", subscriber).close()
    delivered: list[int] = []
    expected = [b"%d" % index for index in range(300)]

    async def scenario() -> tuple[MqttSession, int, bool]:
        session = MqttSession(settings=_settings(broker), on_message=_ignoring)
        at_stop: list[int] = []

        def on_delivered(index: int) -> None:
            delivered.append(index)
            if index == 40:
                # Blocking the loop while the broker stops: what paho has in flight stays unacknowledged.
                broker.stop()
                at_stop.append(session.pending())

        async with _running(session):
            for index in range(200):
                session.publish(f"{base}/Lifecycle", expected[index],
                                on_delivered=functools.partial(on_delivered, index))
            await _wait_until(lambda: not broker.is_running and not session.connected)
            for index in range(200, 300):
                session.publish(f"{base}/Lifecycle", expected[index],
                                on_delivered=functools.partial(on_delivered, index))
            session.publish_volatile(f"{base}/Ping", b"volatile while down")
            started = time.monotonic()
            flushed_while_down = await session.flush(0.3)
            assert 0.25 < time.monotonic() - started < 2.0
            broker.start()
            assert await session.flush(10)
        return session, at_stop[0], flushed_while_down

    session, unacknowledged, flushed_while_down = asyncio.run(scenario())
    assert unacknowledged == 159  # a full window in flight (less the one just delivered), and more waiting
    assert not flushed_while_down
    assert delivered == list(range(300))
    assert session.reconnects == 2
    outside = peers(f"{base}/#", subscriber)
    received = outside.wait_for(300)
    time.sleep(0.3)  # a late duplicate would show up now
    assert outside.payloads() == received == expected
    assert session.sent_by_type == {"Lifecycle": 300}


def test_a_wrong_password_raises_login_refused_at_once(broker: LocalMosquitto) -> None:
    settings = _settings(broker, password="not-the-password")

    async def scenario() -> None:
        session = MqttSession(settings=settings, on_message=_ignoring)
        await asyncio.wait_for(session.run(), timeout=5)

    started = time.monotonic()
    with pytest.raises(LoginRefusedError) as refused:
        asyncio.run(scenario())
    assert time.monotonic() - started < 3
    assert str(refused.value).startswith(
        f"the broker {broker.host}:{broker.port} refused the login of user {broker.username!r}: ")
    assert "not-the-password" not in str(refused.value)


def _keeping(into: list[bytes]) -> Callable[[str, bytes, Callable[[], None] | None], None]:
    """A handler that keeps the payloads and acknowledges each at once."""
    def keep(topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        into.append(payload)
        _ignoring(topic, payload, ack)
    return keep


def _ignoring(_topic: str, _payload: bytes, ack: Callable[[], None] | None) -> None:
    if ack is not None:
        ack()


def test_a_message_not_yet_acknowledged_is_delivered_again_to_the_next_life_and_acks_go_in_order(
    broker: LocalMosquitto, peers: Callable[..., Peer],
) -> None:
    """The runtime acknowledges a message once the record holds what it changed: a kill before that must
    make the broker deliver it again."""
    base = _unique("t")
    settings = _settings(broker, subscriptions=(f"{base}/in/#",))
    acks: dict[bytes, Callable[[], None]] = {}
    second_life: list[bytes] = []

    def hold(_topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        assert ack is not None, "sent at QoS 1"
        acks[payload] = ack

    async def scenario() -> None:
        session = MqttSession(settings=settings, on_message=hold)
        sender = peers()
        async with _running(session):
            for payload in (b"first", b"second", b"third"):
                await asyncio.to_thread(sender.publish, f"{base}/in/Ready", payload)
            await _wait_until(lambda: len(acks) == 3)
            acks[b"second"]()  # done, but behind the first: not acknowledged yet
            acks[b"first"]()  # both go now; the third never
            await asyncio.sleep(0.3)
        again = MqttSession(settings=settings, on_message=_keeping(second_life))
        async with _running(again):
            await _wait_until(lambda: bool(second_life), timeout=5)
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert second_life == [b"third"]


def test_messages_after_stop_receiving_stay_at_the_broker_and_cancelling_disconnects_cleanly(
    broker: LocalMosquitto, peers: Callable[..., Peer],
) -> None:
    base = _unique("t")
    settings = _settings(broker, subscriptions=(f"{base}/in/#",))
    first_life: list[bytes] = []
    second_life: list[bytes] = []

    async def scenario() -> None:
        session = MqttSession(settings=settings, on_message=_keeping(first_life))
        sender = peers()
        async with _running(session):
            await asyncio.to_thread(sender.publish, f"{base}/in/Ready", b"before")
            await _wait_until(lambda: first_life == [b"before"])
            session.stop_receiving()
            await asyncio.to_thread(sender.publish, f"{base}/in/Ready", b"after")
            await asyncio.sleep(0.3)
        await _wait_until(lambda: f"Client {settings.client_id} disconnected." in broker.log_text(), timeout=5)
        again = MqttSession(settings=settings, on_message=_keeping(second_life))
        async with _running(again):
            await _wait_until(lambda: bool(second_life), timeout=5)
            await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert first_life == [b"before"]
    assert second_life == [b"after"]


def test_the_presence_message_goes_first_is_retained_and_a_session_stopped_without_withdrawing_empties_it(
    broker: LocalMosquitto, peers: Callable[..., Peer],
) -> None:
    base = _unique("t")
    presence = Presence(f"{base}/MSOInfo", lambda: b"here")
    outside = peers(f"{base}/#")
    held: list[list[bytes]] = []

    async def scenario() -> MqttSession:
        session = MqttSession(settings=_settings(broker, max_inflight=5), on_message=_ignoring, presence=presence)
        for index in range(12):  # decided before the connection, more than the window
            session.publish(f"{base}/Out", b"%d" % index)
        assert session.pending() == 12
        async with _running(session):
            assert await session.flush(5)
            held.append(await asyncio.to_thread(retained_messages, broker, presence.topic))
        # Cancelled without withdraw_presence (a daemon failing): emptied before the DISCONNECT dropped the Will.
        return session

    session = asyncio.run(scenario())
    assert held == [[b"here"]]
    assert session.sent_by_type == {"MSOInfo": 1, "Out": 12}
    assert outside.wait_for(14)[0] == b"here", "ahead of what waited in the outbox"
    # The empty one goes ahead of whatever still waits for the window, like any presence message: on its topic,
    # it is the last.
    assert [payload for topic, payload in outside.received if topic == presence.topic] == [b"here", b""]
    assert retained_messages(broker, presence.topic) == []


def test_an_idle_session_sends_keepalive_pings() -> None:
    # Mosquitto is slow to drop a silent client (seconds late), so the pings are read in its own log.
    with LocalMosquitto(password=f"mqtt-{secrets.token_hex(8)}", verbose_log=True) as verbose:
        settings = _settings(verbose, keepalive=1)

        async def scenario() -> MqttSession:
            session = MqttSession(settings=settings, on_message=_ignoring)
            async with _running(session):
                await asyncio.sleep(1.6)
            return session

        session = asyncio.run(scenario())
        log = verbose.log_text()
    assert f"Received PINGREQ from {settings.client_id}" in log
    assert session.reconnects == 1


def test_with_no_broker_it_retries_until_cancelled(broker: LocalMosquitto) -> None:
    settings = _settings(broker, port=free_port())

    async def scenario() -> MqttSession:
        session = MqttSession(settings=settings, on_message=_ignoring)
        task = asyncio.create_task(session.run())
        await asyncio.sleep(1.0)  # refused, retried after 0.25-0.5 s, refused again
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=2)
        assert task.cancelled()
        return session

    session = asyncio.run(scenario())
    assert session.reconnects == 0
    assert not session.connected


# ---------------------------------------------------------------- the outbox: packet ids across lives


def _an_earlier_life(broker: LocalMosquitto, client_id: str, flights: list[tuple[int, str, bytes, str]]) -> None:
    """A publisher killed part way: each flight is taken as far as ``sent``, ``received`` (PUBREC read, no
    PUBREL) or ``completed`` (PUBCOMP read), and the socket is dropped without a DISCONNECT."""
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(packets.connect(client_id=f"{client_id}-out", keepalive=30, username=broker.username,
                                     password=broker.password))
        reader = packets.PacketReader()

        def next_packet() -> packets.Packet:
            while True:
                if found := reader.feed(b"") or reader.feed(sock.recv(4096)):
                    return found[0]

        assert packets.connack(next_packet())[1] == 0
        for packet_id, topic, payload, phase in flights:
            sock.sendall(packets.publish(topic, payload, qos=2, packet_id=packet_id))
            if phase == "sent":
                continue
            assert next_packet().kind == packets.PUBREC
            if phase == "completed":
                sock.sendall(packets.pubrel(packet_id))
                assert next_packet().kind == packets.PUBCOMP


def test_the_outbox_resumes_an_earlier_lifes_flows_by_their_ids_and_loses_and_repeats_nothing(
    broker: LocalMosquitto, peers: Callable[..., Peer],
) -> None:
    """The earlier life's packet ids are those its record holds. Received (PUBREC) and recorded: only PUBREL.
    Not received: PUBLISH again, DUP. Completed but not yet recorded as such: only PUBREL. A new message
    under a free id. With paho's own ids the new message took id 1, which the broker still held: lost."""
    base = _unique("t")
    so = peers(f"{base}/#")
    settings = _settings(broker, publish_qos=2)
    _an_earlier_life(broker, settings.client_id, [
        (1, f"{base}/a", b"received", "received"), (2, f"{base}/a", b"completed", "completed"),
        (3, f"{base}/a", b"sent", "sent")])
    delivered: list[int] = []

    async def scenario() -> None:
        outbox = MqttOutbox(settings=settings)
        async with _running(outbox):
            for packet_id, payload, received in ((1, b"received", True), (2, b"completed", True),
                                                 (3, b"sent", False), (4, b"new", False)):
                outbox.send(packet_id, f"{base}/a", payload, received=received,
                            on_received=functools.partial(outbox.release, packet_id),  # saved at once
                            on_delivered=functools.partial(delivered.append, packet_id))
                if received:
                    outbox.release(packet_id)
            await _wait_until(lambda: len(delivered) == 4)
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert sorted(delivered) == [1, 2, 3, 4]
    assert sorted(so.wait_for(4)) == [b"completed", b"new", b"received", b"sent"]
    time.sleep(0.3)
    assert len(so.payloads()) == 4, "none twice"


def test_the_outbox_republishes_what_a_broker_that_lost_our_session_had_received() -> None:
    with LocalMosquitto(password=f"mqtt-{secrets.token_hex(8)}", extra_config=("persistence false",)) as plain:
        base = _unique("t")
        settings = _settings(plain, publish_qos=2)
        _an_earlier_life(plain, settings.client_id, [(9, f"{base}/a", b"held", "received")])
        plain.stop()
        plain.start()  # the held message is gone with the session
        so = Peer(plain, f"{base}/#")
        delivered: list[int] = []

        async def scenario() -> None:
            outbox = MqttOutbox(settings=settings)
            async with _running(outbox):
                outbox.send(9, f"{base}/a", b"held", received=True, on_received=lambda: outbox.release(9),
                            on_delivered=lambda: delivered.append(9))
                outbox.release(9)
                await _wait_until(lambda: delivered == [9])

        try:
            asyncio.run(scenario())
            assert so.wait_for(1) == [b"held"], "at least once: the broker lost it"
        finally:
            so.close()
