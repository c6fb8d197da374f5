"""``buf breaking`` at the WIRE level (ci/proto_breaking.sh) refuses what would make an old peer misread us.

Why this exists: the check is only worth something if it fails on a break, so it runs here on copies of
``message_definitions/`` broken on purpose (a field renumbered, a field retyped, a field removed) and must
fail on each, while the real files and compatible changes (a field added under a new number, a field
renamed: names are not on the wire) pass. The baseline is the one CI uses (ci/proto_baseline.env).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "ci" / "proto_breaking.sh"
PROTOS = REPO_ROOT / "message_definitions"
BUF = Path(sys.executable).parent / "buf"  # the buf-bin package of requirements-dev.txt


def _check(proto_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    env = {**os.environ, "BUF": str(BUF)}
    if proto_dir is not None:
        env["PROTO_DIR"] = str(proto_dir)
    return subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=120)


def _copy_with(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "message_definitions"
    shutil.copytree(PROTOS, copy)
    text = (copy / file).read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    (copy / file).write_text(text.replace(old, new))
    return copy


def test_the_real_protos_are_wire_compatible_with_the_baseline() -> None:
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wire-compatible" in result.stdout


@pytest.mark.parametrize(("file", "old", "new", "says"), [
    ("lifecycle.proto", "string imageUrl = 2;", "string imageUrl = 4;", '"2" with name "imageUrl"'),
    ("lifecycle.proto", "double keepLogsHours = 3;", "float keepLogsHours = 3;", 'from "double" to "float"'),
    ("healthcheck.proto", "    int32 numberOfAllocations = 4;\n", "", '"4" with name "numberOfAllocations"'),
    ("healthcheck.proto", "repeated string activeSimulations = 3;", "string activeSimulations = 3;",
     "activeSimulations"),
], ids=["renumbered", "retyped", "removed", "made-singular"])
def test_a_broken_copy_fails(tmp_path: Path, file: str, old: str, new: str, says: str) -> None:
    result = _check(_copy_with(tmp_path, file, old, new))
    assert result.returncode != 0, result.stdout
    assert says in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new"), [
    ("repeated string activeSimulations = 3;", "repeated string activeSimulations = 3;\n    string added = 9;"),
    ("int32 numberOfBids = 3;", "int32 bids = 3;"),
], ids=["field-added", "field-renamed"])
def test_a_compatible_change_passes(tmp_path: Path, old: str, new: str) -> None:
    result = _check(_copy_with(tmp_path, "healthcheck.proto", old, new))
    assert result.returncode == 0, result.stdout + result.stderr
