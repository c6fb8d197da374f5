"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager, our kubelet
(and, asked for, kube-scheduler placing pods on nodes of a stated capacity).

It runs the real API server, built from the pinned release (``go.mod`` here, ``ci/build_control_plane.sh``), so that the
daemon is tested against real admission, RBAC, watch and garbage collection behaviour. ``ControlPlane``
(in ``launcher``) starts it from Python; ``python -m simulation_components.control_plane`` from a shell.
``FaultProxy`` (in ``fault_proxy``, started by ``ControlPlane(fault_proxy=True)``) gives the tests the
faults a real server cannot be told to produce.
"""

from .binaries import ControlPlaneBinariesError, control_plane_binaries
from .fault_proxy import FaultProxy
from .launcher import ControlPlane

__all__ = ["ControlPlane", "ControlPlaneBinariesError", "FaultProxy", "control_plane_binaries"]
