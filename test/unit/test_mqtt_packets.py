"""The publishing session's packets: the bytes MQTT 3.1.1 prescribes, read back however a stream cuts them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_services_orchestrator import mqtt_packets as packets
from model_services_orchestrator.packet_ids import MAX_PACKET_ID, PacketIds


def test_connect_is_a_persistent_session_with_credentials() -> None:
    data = packets.connect(client_id="mso-out", keepalive=30, username="u", password="p")
    assert data[0] == 0x10
    assert data[2:12] == b"\x00\x04MQTT\x04\xc0\x00\x1e"  # protocol level 4; user name and password; not clean
    assert data.endswith(b"\x00\x07mso-out\x00\x01u\x00\x01p")


def test_publish_carries_qos_dup_and_the_packet_id() -> None:
    data = packets.publish("/a/b", b"xy", qos=2, packet_id=513, dup=True)
    assert data == b"\x3c\x0a\x00\x04/a/b\x02\x01xy"
    assert packets.publish("/a", b"", qos=0) == b"\x30\x04\x00\x02/a"
    with pytest.raises(ValueError, match="packet id"):
        packets.publish("/a", b"", qos=1, packet_id=0)


def test_pubrel_pingreq_disconnect() -> None:
    assert packets.pubrel(7) == b"\x62\x02\x00\x07"
    assert packets.pingreq() == b"\xc0\x00"
    assert packets.disconnect() == b"\xe0\x00"


@given(st.lists(st.tuples(st.sampled_from([packets.PUBREC, packets.PUBCOMP, packets.PUBACK]),
                          st.integers(1, MAX_PACKET_ID)), max_size=20), st.integers(1, 7))
def test_the_reader_gives_every_packet_whatever_the_cuts(acks: list[tuple[int, int]], cut: int) -> None:
    stream = b"\x20\x02\x01\x00" + b"".join(bytes([kind << 4, 2]) + number.to_bytes(2, "big") for kind, number in acks)
    reader = packets.PacketReader()
    read = [packet for start in range(0, len(stream), cut) for packet in reader.feed(stream[start:start + cut])]
    assert packets.connack(read[0]) == (True, 0)
    assert [(packet.kind, packets.packet_id(packet)) for packet in read[1:]] == acks


def test_a_long_packet_has_a_multi_byte_length() -> None:
    data = packets.publish("/t", b"x" * 300, qos=1, packet_id=1)
    assert data[1:3] == bytes([0x80 | (306 % 128), 306 // 128])
    [packet] = packets.PacketReader().feed(data)
    assert packet.kind == 3 and packet.body.endswith(b"x" * 300)


def test_a_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(packets.MalformedPacketError):
        packets.PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_packet_ids_are_never_given_twice_and_a_freed_one_comes_round_last() -> None:
    ids = PacketIds()
    ids.hold(2)
    assert [ids.take() for _ in range(3)] == [1, 3, 4]
    ids.free(1)
    assert ids.take() == 5, "a freed id is not given again at once"
    for _ in range(MAX_PACKET_ID - 5):
        assert ids.take() != 0
    assert ids.take() == 1 and ids.take() == 0, "all in use"
