"""Our kubelet as a control plane component: its command line, its readiness line, its containers.

The kubelet itself is ``kubelet.py`` (run as ``python -m simulation_components.control_plane.kubelet``);
this starts it as a process beside kube-apiserver, with the admin kubeconfig, the node's serving
certificate and the image table, and tells when it has registered its node (it prints one JSON line
``{"kubelet": "ready", "port": ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..processes import free_port
from .binaries import REPO_ROOT
from .certificates import ControlPlaneCertificates
from .components import Component

__all__ = ["KUBELET_MODES", "KubeletProcess", "add_node_arguments"]

KUBELET_MODES = ("process", "status-only", "none")


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the nodes and of kube-scheduler: the kubelet's, passed on by the control plane's."""
    parser.add_argument("--scheduler", action="store_true",
                        help="a kube-scheduler binds the pods: the kubelet binds none, runs those bound to its nodes")
    parser.add_argument("--nodes", type=int, default=1, help="how many nodes to register (local-node, local-node-2...)")
    parser.add_argument("--node-cpu", help="each node's CPU capacity (a Kubernetes quantity; default 64)")
    parser.add_argument("--node-memory", help="each node's memory capacity (default 256Gi)")
    parser.add_argument("--node-pods", help="how many pods each node takes (default 10000)")


class KubeletProcess:
    """The kubelet's process; ``port`` (its log endpoint) once ready."""

    name = "kubelet"

    def __init__(self, directory: Path, certificates: ControlPlaneCertificates, *, kubeconfig: Path,
                 namespace: str, node_name: str, mode: str, images_file: Path | None, log_level: str,
                 scheduler: bool = False, nodes: int = 1, node_cpu: str | None = None,
                 node_memory: str | None = None, node_pods: str | None = None) -> None:
        self.directory = directory
        self.certificates = certificates
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.node_name = node_name
        self.mode = mode
        self.images_file = images_file
        self.log_level = log_level
        self.scheduler = scheduler  # kube-scheduler binds: the kubelet runs what is bound to its nodes
        self.nodes = nodes
        self.capacity = {"--node-cpu": node_cpu, "--node-memory": node_memory, "--node-pods": node_pods}
        self.port = 0
        self.component: Component | None = None

    def command(self) -> list[str]:
        """The kubelet's whole command line."""
        command = [sys.executable, "-m", "simulation_components.control_plane.kubelet",
                   "--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace,
                   "--node-name", self.node_name, "--mode", self.mode, "--port", str(free_port()),
                   "--tls-cert", str(self.certificates.kubelet_cert), "--tls-key", str(self.certificates.kubelet_key),
                   "--log-level", self.log_level]
        if self.images_file is not None:
            command += ["--images-file", str(self.images_file)]
        if self.scheduler:
            command.append("--scheduler")
        if self.nodes != 1:
            command += ["--nodes", str(self.nodes)]
        for flag, value in self.capacity.items():
            if value:
                command += [flag, value]
        return command

    def start(self) -> Component:
        """Start; returns at once (see :meth:`wait_ready`)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.component = Component(self.name, self.command(), self.directory / f"{self.name}.log", env=env,
                                   cwd=self.directory)
        self.component.start()
        return self.component

    def _announced_port(self) -> int | None:
        assert self.component is not None
        for line in self.component.output_since_start().splitlines():
            if line.startswith("{"):
                try:
                    announcement = json.loads(line)
                except ValueError:
                    continue
                if isinstance(announcement, dict) and announcement.get("kubelet") == "ready":
                    return int(announcement["port"])
        return None

    def wait_ready(self, deadline: float) -> None:
        """Until the kubelet has announced itself ready."""
        assert self.component is not None
        self.port = self.component.wait_for(self._announced_port, deadline, "ready line")

    def children(self) -> list[int]:
        """The process ids of the kubelet's children (its containers); ``[]`` when it does not run."""
        component = self.component
        if component is None or component.pid is None or not component.running:
            return []
        children: list[int] = []
        for task in Path(f"/proc/{component.pid}/task").glob("*"):
            try:
                children += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return children
