"""The container image and the local compose stack, checked by reading their files.

No Docker engine runs where the tests run, so the Dockerfile cannot be built
here. These tests hold it to what an image of a long-running daemon must be:
a base pinned by version, the dependency layer apart from the source (so a
code change does not reinstall everything), unbuffered logs, no pip cache, a
non-root numeric user that Kubernetes can check, the HTTP port of the probes,
and a build context that leaves out the virtualenv, git and ``.env``.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.local.yml"

_VERSION_TAG = re.compile(r"\d+\.\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper-cased) and the rest of its (joined) lines."""

    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions, with comments dropped and backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _index(instructions: list[Instruction], keyword: str, pattern: str) -> int:
    for position, instruction in enumerate(instructions):
        if instruction.keyword == keyword and re.search(pattern, instruction.arguments):
            return position
    raise AssertionError(f"no {keyword} matching {pattern!r} in the Dockerfile")


def _env(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.arguments):
                key, sep, value = item.partition("=")
                assert sep, f"use the ENV key=value form: {instruction.arguments!r}"
                values[key] = value
    return values


def test_base_images_are_pinned_by_version(instructions: list[Instruction]) -> None:
    stages: set[str] = set()
    froms = [instruction for instruction in instructions if instruction.keyword == "FROM"]
    assert froms
    for instruction in froms:
        words = instruction.arguments.split()
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() in stages:
            continue
        name, _, tag = image.split("@", 1)[0].rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag"
        assert tag != "latest", f"{image}: pinned to latest"
        assert _VERSION_TAG.search(tag), f"{image}: the tag names no version"


def test_dependencies_are_installed_before_the_source_is_copied(instructions: list[Instruction]) -> None:
    copy_requirements = _index(instructions, "COPY", r"\brequirements\.txt\b")
    install_requirements = _index(instructions, "RUN", r"pip install .*-r requirements\.txt")
    copy_source = _index(instructions, "COPY", r"\bmodel_services_orchestrator\b")
    install_package = _index(instructions, "RUN", r"pip install .*--no-deps \.(\s|$)")
    assert copy_requirements < install_requirements < copy_source < install_package
    # Nothing but the pins comes in before the dependency layer.
    first_copy = _index(instructions, "COPY", r".")
    assert first_copy == copy_requirements


def test_environment(instructions: list[Instruction]) -> None:
    env = _env(instructions)
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PIP_NO_CACHE_DIR") == "1"


def test_runs_as_a_numeric_non_root_user(instructions: list[Instruction]) -> None:
    users = [(position, instruction.arguments) for position, instruction in enumerate(instructions)
             if instruction.keyword == "USER"]
    assert users, "no USER: the daemon would run as root"
    position, user = users[-1]
    name = user.split(":", 1)[0]
    assert name not in {"root", "0"}
    # Numeric, so that runAsNonRoot can be checked without reading /etc/passwd;
    # the same UID the Deployment names.
    assert name == "10001"
    last_run = max(index for index, instruction in enumerate(instructions) if instruction.keyword == "RUN")
    assert position > last_run, "a RUN after USER would run as that user, or USER is reset"


def test_exposes_the_http_port(instructions: list[Instruction]) -> None:
    exposed = {port.split("/")[0] for instruction in instructions if instruction.keyword == "EXPOSE"
               for port in instruction.arguments.split()}
    assert "8080" in exposed


def test_entrypoint_is_the_console_script(instructions: list[Instruction]) -> None:
    entrypoints = [instruction.arguments for instruction in instructions if instruction.keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    command = yaml.safe_load(entrypoints[-1])  # the exec form is a JSON list, and JSON is YAML
    assert command == ["model-services-orchestrator"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "model-services-orchestrator" in scripts


def _dockerignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, pattern))
    return rules


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    ignored = False
    for negated, pattern in rules:
        for candidate in candidates:
            # `**/x` also matches a top-level `x`.
            if fnmatch.fnmatchcase(candidate, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatchcase(candidate, pattern[3:])):
                ignored = not negated
                break
    return ignored


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    assert DOCKERIGNORE.is_file()
    rules = _dockerignore_rules()
    for path in (".venv", ".venv/bin/python", ".git", ".git/config", ".env", ".pytest_cache",
                 ".mypy_cache", "model_services_orchestrator/__pycache__/app.cpython-311.pyc"):
        assert _ignored(path, rules), f"{path} would be sent to the Docker build"


def test_dockerignore_lets_in_what_the_dockerfile_copies(instructions: list[Instruction]) -> None:
    rules = _dockerignore_rules()
    sources = [source for instruction in instructions if instruction.keyword == "COPY"
               for source in instruction.arguments.split()[:-1] if not source.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source.rstrip("/"), rules), f"COPY {source}: excluded by .dockerignore"
    assert not _ignored("model_services_orchestrator/messages/lifecycle_pb2.py", rules)


def test_compose_stack() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    broker = services["mosquitto"]
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", broker["image"])
    assert "./simulation_components/mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in broker["volumes"]
    daemon = services["model-services-orchestrator"]
    assert daemon["build"]["dockerfile"] == "Dockerfile"
    assert daemon["env_file"] == ".env"
    assert daemon["environment"]["MQTT_HOST"] == "mosquitto"
