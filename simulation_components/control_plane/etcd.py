"""etcd for the control plane: one member on free loopback ports, and the two things tests ask of it.

Every start is a new cluster (the data directory is wiped), without fsync (``--unsafe-no-fsync``: fast, and
a crash loses data, which tests do not mind), without etcd's own automatic compaction (kube-apiserver's
compactor and :meth:`Etcd.compact` are the only ones), with an 8 GiB quota for 10,000-pod benchmarks.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from ..processes import free_port
from .api import call
from .components import Component

__all__ = ["Etcd"]


class Etcd:
    """etcd's process, its client URL (``url``), its health, revision and compaction."""

    name = "etcd"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""
        self.component: Component | None = None

    def start(self, bin_dir: Path) -> Component:
        """Start a new, empty cluster (wiping the data of an earlier one); returns at once."""
        data = self.directory / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        client, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.component = Component(self.name, [
            bin_dir / "etcd", "--name=mso", f"--data-dir={data}",
            f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=mso={peer_url}", "--initial-cluster-state=new",
            "--auto-compaction-retention=0",  # no automatic compaction: compact() and kube-apiserver's own
            "--quota-backend-bytes=8589934592",
            "--unsafe-no-fsync",  # tests only: a crash may lose or corrupt the data
            "--log-level=warn",
        ], self.directory / f"{self.name}.log", cwd=self.directory)
        self.component.start()
        return self.component

    def healthy(self) -> bool | None:
        """``True`` once etcd answers its health check (a probe for ``Component.wait_for``)."""
        answer = call("GET", f"{self.url}/health", timeout=2)
        return True if isinstance(answer, dict) and answer.get("health") == "true" else None

    def revision(self) -> int:
        """etcd's current revision (the newest resourceVersion of any object)."""
        answer = call("POST", f"{self.url}/v3/kv/range", {"key": "AA==", "limit": 1, "count_only": True})
        return int(answer["header"]["revision"])

    def compact(self) -> int:
        """Compact at the current revision, as kube-apiserver's own compactor does; returns the revision.

        Like kube-apiserver, it first records the revision under ``compact_rev_key``, which every
        kube-apiserver watches; then it compacts (physically: done when this returns). What clients see is
        described at ``ControlPlane.compact``.
        """
        revision = self.revision()
        record = {"key": base64.b64encode(b"compact_rev_key").decode(),
                  "value": base64.b64encode(str(revision).encode()).decode()}
        call("POST", f"{self.url}/v3/kv/put", record)
        call("POST", f"{self.url}/v3/kv/compaction", {"revision": str(revision), "physical": True}, timeout=60)
        return revision
