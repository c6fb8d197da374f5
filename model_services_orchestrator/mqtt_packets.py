"""The few MQTT 3.1.1 packets our own publishing session speaks, as bytes: pure encoding and decoding.

Why this exists: exactly once across a kill needs the packet id of every
lifecycle message chosen by us and kept in the record (PUBLISH resent with its
own id and DUP, PUBREL alone for one the broker already received), and paho
picks packet ids itself, from 1 again in every new client. The publishing
session (``mqtt_outbox``) therefore writes its packets with this module. It
covers what a publisher needs: CONNECT, PUBLISH, PUBREL, PINGREQ and
DISCONNECT out; CONNACK, PUBACK, PUBREC, PUBCOMP and PINGRESP in (MQTT 3.1.1,
sections 2 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONNACK",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBREC",
    "MalformedPacketError",
    "Packet",
    "PacketReader",
    "connack",
    "connect",
    "disconnect",
    "packet_id",
    "pingreq",
    "publish",
    "pubrel",
]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
_MAX_REMAINING = 268_435_455  # four bytes of variable length


class MalformedPacketError(ValueError):
    """The broker sent bytes that are no MQTT packet."""


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int
    flags: int
    body: bytes


def _length(value: int) -> bytes:
    if not 0 <= value <= _MAX_REMAINING:
        raise ValueError(f"a packet of {value} bytes is over MQTT's limit")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def connect(*, client_id: str, keepalive: int, username: str = "", password: str = "",
            clean_session: bool = False) -> bytes:
    flags = (0x02 if clean_session else 0) | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = _string("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + _string(client_id)
    if username:
        body += _string(username)
        if password:
            body += _string(password)
    return _packet(CONNECT, 0, body)


def publish(topic: str, payload: bytes, *, qos: int, packet_id: int = 0, dup: bool = False) -> bytes:
    if qos and not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"a QoS {qos} PUBLISH needs a packet id from 1 to 65535, not {packet_id}")
    flags = (0x08 if dup and qos else 0) | qos << 1
    body = _string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return _packet(PUBLISH, flags, body)


def pubrel(packet_id: int) -> bytes:
    return _packet(PUBREL, 0x02, packet_id.to_bytes(2, "big"))


def pingreq() -> bytes:
    return _packet(PINGREQ, 0, b"")


def disconnect() -> bytes:
    return _packet(DISCONNECT, 0, b"")


def connack(packet: Packet) -> tuple[bool, int]:
    """(session present, return code) of a CONNACK."""
    if packet.kind != CONNACK or len(packet.body) != 2:
        raise MalformedPacketError(f"expected a CONNACK, got packet type {packet.kind}")
    return bool(packet.body[0] & 0x01), packet.body[1]


def packet_id(packet: Packet) -> int:
    """The packet id of a PUBACK, PUBREC or PUBCOMP."""
    if len(packet.body) != 2:
        raise MalformedPacketError(f"packet type {packet.kind} of {len(packet.body)} bytes, not 2")
    return int.from_bytes(packet.body, "big")


class PacketReader:
    """Splits a byte stream into packets, however it was cut into reads."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets: list[Packet] = []
        while (packet := self._next()) is not None:
            packets.append(packet)
        return packets

    def _next(self) -> Packet | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buffer):
                return None
            if index > 4:
                raise MalformedPacketError("remaining length of more than four bytes")
            digit = buffer[index]
            length += (digit & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not digit & 0x80:
                break
        if len(buffer) < index + length:
            return None
        packet = Packet(buffer[0] >> 4, buffer[0] & 0x0F, bytes(buffer[index:index + length]))
        del buffer[:index + length]
        return packet
