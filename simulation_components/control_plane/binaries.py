"""Where the control plane's executables are: the directory ``ci/build_control_plane.sh`` prints.

The binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) are built from the Go module next to this
file into a cache outside the repository; the script builds them once and afterwards only prints the
directory. Callers that already know the directory (a CI cache, ``--bin-dir``) skip the script.
"""

from __future__ import annotations

import fcntl
import functools
import os
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BINARIES", "BUILD_SCRIPT", "REPO_ROOT", "ControlPlaneBinariesError", "control_plane_binaries"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "ci" / "build_control_plane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: Set to a directory holding the binaries to skip the build script (e.g. a CI cache restored elsewhere).
BIN_DIR_VARIABLE = "MSO_CONTROL_PLANE_BIN_DIR"


class ControlPlaneBinariesError(RuntimeError):
    """The control plane binaries are missing and could not be built."""


def _check(directory: Path) -> Path:
    missing = [name for name in BINARIES if not os.access(directory / name, os.X_OK)]
    if missing:
        raise ControlPlaneBinariesError(f"{directory} lacks the executables {', '.join(missing)}; "
                                        f"run {BUILD_SCRIPT.relative_to(REPO_ROOT)}")
    return directory


@functools.cache
def _built_by_script() -> Path:
    # One build at a time on this machine (parallel test sessions): the others wait, then find the binaries.
    lock_path = Path(tempfile.gettempdir()) / "mso-control-plane-build.lock"
    try:
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = subprocess.run([str(BUILD_SCRIPT)], cwd=REPO_ROOT, capture_output=True, text=True,
                                    check=False, stdin=subprocess.DEVNULL)
    except OSError as error:
        raise ControlPlaneBinariesError(f"could not run {BUILD_SCRIPT}: {error}") from error
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneBinariesError(
            f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed with exit status {result.returncode} (it needs Go, "
            f"and the Go module proxy the first time):\n{result.stderr[-3000:]}")
    return _check(Path(lines[-1]))


def control_plane_binaries(bin_dir: str | Path | None = None) -> Path:
    """The directory holding etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

    ``bin_dir``, else ``$MSO_CONTROL_PLANE_BIN_DIR``, else what ``ci/build_control_plane.sh`` prints (it builds
    the binaries the first time, which takes minutes; the answer is cached for the process).
    Raises ``ControlPlaneBinariesError`` when they are not there and cannot be built.
    """
    if bin_dir is not None:
        return _check(Path(bin_dir))
    from_environment = os.environ.get(BIN_DIR_VARIABLE)
    if from_environment:
        return _check(Path(from_environment))
    return _built_by_script()
