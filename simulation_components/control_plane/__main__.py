"""Command line: ``python -m simulation_components.control_plane --dir DIR [--kubelet MODE]``.

For running the daemon, a demo or a benchmark by hand against a real control plane, and for anything
that is not Python. It starts ``ControlPlane``, prints one JSON line once everything is ready (the URL,
the port, the version, the paths of ``admin.kubeconfig`` and ``daemon.env``, the component pids), then
runs until SIGTERM or SIGINT and stops everything it started, exiting 0. A component that dies, at
start-up or later, ends it with its log tail on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from .binaries import ControlPlaneBinariesError
from .components import ComponentError
from .kubelet_process import add_node_arguments
from .launcher import KUBELET_MODES, ControlPlane

__all__ = ["main"]


class _Stopped(BaseException):
    """SIGTERM or SIGINT arrived."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulation_components.control_plane",
        description="etcd, kube-apiserver, kube-controller-manager and our kubelet on 127.0.0.1, for tests.")
    parser.add_argument("--dir", help="certificates, logs, etcd data, admin.kubeconfig, daemon.env "
                                      "(default: a temporary directory, deleted at exit)")
    parser.add_argument("--kubelet", choices=KUBELET_MODES, default="process")
    parser.add_argument("--images-file", help="the kubelet's image table (JSON: image -> argv list or null)")
    parser.add_argument("--bin-dir", help="where etcd, kube-apiserver, kube-controller-manager are "
                                          "(default: what ci/build_control_plane.sh prints)")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--log-level", default="WARNING", help="the kubelet's log level")
    add_node_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; the exit status."""
    arguments = _arguments(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    control_plane = ControlPlane(kubelet=arguments.kubelet, images_file=arguments.images_file,
                                 directory=arguments.dir, bin_dir=arguments.bin_dir,
                                 start_timeout=arguments.start_timeout,
                                 log_level=arguments.log_level, scheduler=arguments.scheduler,
                                 nodes=arguments.nodes, node_cpu=arguments.node_cpu,
                                 node_memory=arguments.node_memory, node_pods=arguments.node_pods)
    try:
        control_plane.start()
        print(json.dumps({
            "ready": True, "url": control_plane.url, "port": control_plane.port, "version": control_plane.version(),
            "namespace": control_plane.namespace, "dir": str(control_plane.dir),
            "admin_kubeconfig": str(control_plane.admin_kubeconfig_path),
            "daemon_env": str(control_plane.daemon_env_path), "ca_cert": str(control_plane.ca_cert_path),
            "kubelet_port": control_plane.kubelet_port or None, "etcd_url": control_plane.etcd_url,
            "pids": {name: component.pid for name, component in control_plane.components.items()},
            "startup_seconds": control_plane.timings.get("total"),
        }), flush=True)
        while True:
            time.sleep(0.5)
            control_plane.check()
    except _Stopped:
        return 0
    except (ComponentError, ControlPlaneBinariesError) as error:
        print(f"control plane: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second signal must not cut the shutdown short.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        control_plane.close()


if __name__ == "__main__":
    sys.exit(main())
