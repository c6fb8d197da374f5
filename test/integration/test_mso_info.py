"""The retained MSOInfo (docs/protocol.md section 7) against a real Mosquitto with logins and a real daemon process.

Published retained on every connection of the daemon's session, emptied by the session's Will when the
process is killed (SIGKILL: no DISCONNECT, so the broker sends the Will) and by the daemon itself when it
stops cleanly (a DISCONNECT makes the broker drop the Will). The two-replica case is in test_failover.py.
"""

from __future__ import annotations

from model_services_orchestrator import __version__
from model_services_orchestrator.messages import MSOInfo
from model_services_orchestrator.protocol import ADMISSION, CAPABILITIES, PROTOCOL_VERSION
from simulation_components.control_plane import ControlPlane
from simulation_components.kit import DaemonFactory, SimulatorRecorder, retained_messages, wait_for
from simulation_components.local_mosquitto import LocalMosquitto

TOPIC = "/lifecycle/mso/dots-so/MSOInfo"


def retained_info(broker: LocalMosquitto) -> MSOInfo:
    """The retained MSOInfo, once there is one."""
    [payload] = wait_for(lambda: retained_messages(broker, TOPIC), timeout=20, what="a retained MSOInfo")
    return MSOInfo.FromString(payload)


def test_the_retained_mso_info_is_there_while_the_daemon_is_and_its_will_empties_it_on_sigkill(
        status_kube: ControlPlane, broker: LocalMosquitto, so: SimulatorRecorder,
        make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube)
    info = retained_info(broker)
    assert info.protocol_version == PROTOCOL_VERSION == "1.1.0"
    assert info.daemon_version == __version__
    # Admission by the namespace's quota is on (QUOTA_ADMISSION's default, and the Role lets it read quotas).
    assert list(info.capabilities) == [*CAPABILITIES, ADMISSION]
    # Today's SO subscribes to /lifecycle/mso/<so>/#: it hears it too (and, not knowing it, ignores it).
    wait_for(lambda: [m for m in so.messages if m.topic == TOPIC], what="the SO to hear MSOInfo")

    daemon.kill()  # SIGKILL: the kernel closes the socket, the broker sends the Will
    wait_for(lambda: retained_messages(broker, TOPIC) == [], timeout=20, what="the Will to empty MSOInfo")
    assert wait_for(lambda: [m.payload for m in so.messages if m.topic == TOPIC][1:], what="the Will")[-1] == b""


def test_every_connection_publishes_it_again_and_a_clean_stop_empties_it(
        status_kube: ControlPlane, broker: LocalMosquitto, make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(status_kube, QUOTA_ADMISSION="false")
    assert list(retained_info(broker).capabilities) == list(CAPABILITIES), "no admission announced when it is off"
    # Someone empties it, then the broker restarts: the daemon's next connection puts it back.
    connections = len(daemon.logged("mqtt subscribed"))
    clearer = SimulatorRecorder(broker)
    clearer.client.publish(TOPIC, b"", qos=1, retain=True).wait_for_publish(10)
    clearer.close()
    assert retained_messages(broker, TOPIC) == []
    broker.restart()
    wait_for(lambda: len(daemon.logged("mqtt subscribed")) > connections, timeout=30, what="a reconnection")
    assert retained_info(broker).protocol_version == PROTOCOL_VERSION

    assert daemon.stop() == 0  # SIGTERM: a clean stop, with a DISCONNECT
    assert retained_messages(broker, TOPIC) == [], "a clean stop empties MSOInfo itself"
