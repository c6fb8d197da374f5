"""Kueue (``sigs.k8s.io/kueue``) on the test control plane, for the daemon's Kueue mode (``KUEUE_QUEUE_NAME``).

Built from its released Go module (``go.mod`` here, ``ci/build_kueue.sh``) as the control plane is, so the
tests meet the real controller and webhook: ``KueueManager`` (in ``manager``) starts it on a running
``ControlPlane``; ``setup`` holds the objects it is given.
"""

from .manager import KueueBuildError, KueueManager, kueue_build

__all__ = ["KueueBuildError", "KueueManager", "kueue_build"]
