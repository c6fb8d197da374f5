"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager, our kubelet.

The stand-in in ``simulation_components.local_kubernetes`` imitates the API server; this package runs the
real one, built from the pinned release (``go.mod`` here, ``ci/build_control_plane.sh``), so that the
daemon is tested against real admission, RBAC, watch and garbage collection behaviour. ``ControlPlane``
(in ``launcher``) starts it from Python; ``python -m simulation_components.control_plane`` from a shell.
"""

from .binaries import ControlPlaneBinariesError, control_plane_binaries
from .launcher import ControlPlane

__all__ = ["ControlPlane", "ControlPlaneBinariesError", "control_plane_binaries"]
