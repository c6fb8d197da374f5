"""The first command on a fresh machine: without a usable Go it says so in one line, with its cache it needs none.

Why this exists: ``ci/demo.sh`` and ``ci/prepare_dev_env.sh`` build the control plane with Go the first
time. A newcomer without Go used to get ``go: command not found`` (exit 127) after minutes of installs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from simulation_components.control_plane.binaries import BINARIES
from simulation_components.local_daemon import REPO_ROOT

BUILD = REPO_ROOT / "ci" / "build_control_plane.sh"


def run(script: Path, *args: str, path: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "MSO_CONTROL_PLANE_CACHE": str(cache)}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=REPO_ROOT)


def cache_dir(cache: Path) -> Path:
    """The build script's directory for the pinned versions under ``cache``, made."""
    go_mod = (REPO_ROOT / "simulation_components" / "control_plane" / "go.mod").read_text()
    versions = dict(line.split()[:2] for line in go_mod.splitlines()
                    if line.strip().startswith(("k8s.io/kubernetes ", "go.etcd.io/etcd/server/v3 ")))
    cached = cache / f"kubernetes-{versions['k8s.io/kubernetes']}-etcd-{versions['go.etcd.io/etcd/server/v3']}"
    cached.mkdir(parents=True)
    return cached


def fake_go(directory: Path, version: str, toolchain: str = "auto") -> str:
    """A ``go`` that only tells its version and GOTOOLCHAIN: what the check asks of it."""
    directory.mkdir()
    go = directory / "go"
    go.write_text(f'#!/bin/sh\n[ "$2" = GOVERSION ] && echo go{version}\n[ "$2" = GOTOOLCHAIN ] && echo {toolchain}\n'
                  "exit 0\n")
    go.chmod(0o755)
    return f"{directory}:/usr/bin:/bin"


@pytest.mark.parametrize("script", [BUILD, REPO_ROOT / "ci" / "demo.sh", REPO_ROOT / "ci" / "prepare_dev_env.sh"])
def test_without_go_the_first_command_says_what_to_install_in_one_line(script: Path, tmp_path: Path) -> None:
    result = run(script, path="/usr/bin:/bin", cache=tmp_path / "cache")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "'go' is not on the PATH" in lines[0] and "https://go.dev/dl/" in lines[0]


@pytest.mark.parametrize(("version", "toolchain", "says"), [
    ("1.19.8", "auto", "Go 1.19.8 is too old"),
    ("1.22.1", "local", "GOTOOLCHAIN=local forbids fetching it"),
])
def test_a_go_that_cannot_build_it_is_named(version: str, toolchain: str, says: str, tmp_path: Path) -> None:
    result = run(BUILD, "--check", path=fake_go(tmp_path / "bin", version, toolchain), cache=tmp_path / "cache")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr


@pytest.mark.parametrize("version", ["1.22.1", "1.26.0", "1.30.2"])
def test_a_go_that_can_build_it_passes_the_check(version: str, tmp_path: Path) -> None:
    # From 1.21 on, Go fetches the toolchain go.mod asks for by itself (GOTOOLCHAIN=auto).
    result = run(BUILD, "--check", path=fake_go(tmp_path / "bin", version), cache=tmp_path / "cache")
    assert (result.returncode, result.stderr) == (0, "")


def test_cached_binaries_need_no_go(tmp_path: Path) -> None:
    cached = cache_dir(tmp_path / "cache")
    for name in BINARIES:
        (cached / name).write_text("#!/bin/sh\n")
        (cached / name).chmod(0o755)
    assert run(BUILD, "--check", path="/usr/bin:/bin", cache=tmp_path / "cache").returncode == 0
    result = run(BUILD, path="/usr/bin:/bin", cache=tmp_path / "cache")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, str(cached), "")


def test_a_cache_from_before_a_binary_joined_needs_go_again(tmp_path: Path) -> None:
    # A cache built when the control plane had three binaries lacks kube-scheduler: the check wants Go.
    cached = cache_dir(tmp_path / "cache")
    for name in BINARIES:
        if name != "kube-scheduler":
            (cached / name).write_text("#!/bin/sh\n")
            (cached / name).chmod(0o755)
    result = run(BUILD, "--check", path="/usr/bin:/bin", cache=tmp_path / "cache")
    assert result.returncode == 1 and "'go' is not on the PATH" in result.stderr
