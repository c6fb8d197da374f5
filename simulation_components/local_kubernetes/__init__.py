"""A local stand-in for the Kubernetes API server (plus one fake node), for tests, the demo and benchmarks.

It serves namespaced core/v1 pods, config maps and secrets the way kube-apiserver does (validation,
resourceVersions, list+watch with 410 Gone, patches, graceful deletion, logs), runs pods as local
processes (or only fakes their status), and has an admin API under ``/_local/`` for fault injection.
Start it with :class:`~simulation_components.local_kubernetes.launcher.LocalKubernetes` or
``python -m simulation_components.local_kubernetes``.
"""

from __future__ import annotations

__all__: list[str] = []
