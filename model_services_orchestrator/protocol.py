"""What this daemon tells its peers about the wire contract it speaks (PROTOCOL.md section 7).

Why this exists: an SO cannot otherwise tell which of the additions ("ours")
an MSO supports. The protocol version and the capabilities are published in
the retained MSOInfo and the protocol version in every health pong; they live
here, in one place, so that adding a behaviour is one line in
``CAPABILITIES`` (and a minor step of ``PROTOCOL_VERSION``), or, for one a
daemon may have or not, a name and a flag of ``capabilities``.
"""

from __future__ import annotations

__all__ = ["ADMISSION", "CAPABILITIES", "MODEL_REGISTRY", "PROTOCOL_VERSION", "capabilities"]

# Semantic version of the wire contract of docs/protocol.md: 1.0 is what the DOTS SO and models of today speak
# plus the additions before versioning (health, early end); 1.1 added MSOInfo and the pong's protocol_version.
# A minor step for every addition an old peer may ignore; a major one only for a break, under a new topic root.
PROTOCOL_VERSION = "1.1.0"

# The optional behaviours an SO may rely on, by the names docs/protocol.md section 7 lists: extend here.
# Those every daemon of this version has:
CAPABILITIES: tuple[str, ...] = (
    "health-check",  # section 3: PingHealthSOToMSO is answered; models may be pinged; UnhealthyModel
    "early-end",  # section 4: an empty SimulationDone on /lifecycle/<so>/mso/<sim>/SimulationDone ends it all
)
# Section 6: `modelservice:<name>` images resolved; only when the API serves ModelServices to the daemon.
MODEL_REGISTRY = "model-registry"
# Whole simulations admitted (docs/operations.md "Admission"): by the namespace's ResourceQuota, or by Kueue's pod
# groups; only when one of them is on (a queued simulation's models are neither ready nor failed while it waits).
ADMISSION = "admission"


def capabilities(*, model_registry: bool, admission: bool = False) -> tuple[str, ...]:
    """What this daemon announces, given what it found at start-up."""
    return CAPABILITIES + ((MODEL_REGISTRY,) if model_registry else ()) + ((ADMISSION,) if admission else ())
