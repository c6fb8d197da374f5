"""The packet ids of lifecycle messages not yet delivered: each in use once, never one the broker may hold.

Pure. A lifecycle message gets its MQTT packet id when it is decided, and the
record keeps it with the decision, so a restarted daemon resumes the broker's
flow under the same id (``mqtt_outbox``). An id is free again only once the
record says its message was delivered: until then the broker may hold it, and
a new message under it would be taken for a resend and dropped.
"""

from __future__ import annotations

__all__ = ["MAX_PACKET_ID", "PacketIds"]

MAX_PACKET_ID = 0xFFFF


class PacketIds:
    """Ids from 1 to 65535, given out in turn (a freed id is the last to come round again)."""

    def __init__(self) -> None:
        self._in_use: set[int] = set()
        self._next = 1

    def take(self) -> int:
        """A free id, now in use; 0 when all 65535 are in use."""
        for _ in range(MAX_PACKET_ID):
            candidate = self._next
            self._next = candidate % MAX_PACKET_ID + 1
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                return candidate
        return 0

    def hold(self, packet_id: int) -> None:
        """An id the records say is in use (restoring)."""
        if packet_id:
            self._in_use.add(packet_id)

    def free(self, packet_id: int) -> None:
        self._in_use.discard(packet_id)

    def __contains__(self, packet_id: int) -> bool:
        return packet_id in self._in_use
