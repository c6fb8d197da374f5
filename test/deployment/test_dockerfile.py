"""The container image and the local compose stack, checked by reading their files.

No Docker engine runs where the tests run, so the image is not built here
(``ci/build_image.sh`` builds and checks it wherever a builder works). These
tests hold the Dockerfile to what an image of a long-running daemon must be:
two stages from one base pinned by digest, the dependency layer apart from the
source (so a code change does not reinstall everything), nothing of pip,
setuptools or wheel in the final image, the OCI labels, unbuffered logs, a
non-root numeric user that Kubernetes can check, the HTTP port of the probes
and a HEALTHCHECK on it (run here against a local server), and a build context
that leaves out the virtualenv, git and ``.env``. Also: the LICENSE the
package declares, and ``ci/build_image.sh``'s answers with and without a builder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from model_services_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.local.yml"
BUILD_IMAGE = ROOT / "ci" / "build_image.sh"
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

_VERSION_TAG = re.compile(r"\d+\.\d+(\.\d+)?")
_DIGEST = re.compile(r"@(?P<digest>sha256:[0-9a-f]{64})$")
VENV = "/opt/venv"
# The canonical text of https://www.apache.org/licenses/LICENSE-2.0.txt, appendix included.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper-cased) and the rest of its (joined) lines."""

    keyword: str
    arguments: str


@dataclass(slots=True)
class Stage:
    """One build stage: what it starts FROM, its name (if any) and its instructions after FROM."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [instruction.arguments for instruction in self.instructions if instruction.keyword == keyword]


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


def split_stages(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [word for word in instruction.arguments.split() if not word.startswith("--platform")]
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(instructions: list[Instruction]) -> list[Stage]:
    return split_stages(instructions)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    [stage] = [stage for stage in stages if stage.name == "builder"]
    return stage


def _index(instructions: list[Instruction], keyword: str, pattern: str) -> int:
    for position, instruction in enumerate(instructions):
        if instruction.keyword == keyword and re.search(pattern, instruction.arguments):
            return position
    raise AssertionError(f"no {keyword} matching {pattern!r} in the stage")


def _assignments(stage: Stage, keyword: str) -> dict[str, str]:
    """The ``key=value`` pairs of a stage's ENV or LABEL instructions."""
    values: dict[str, str] = {}
    for arguments in stage.all(keyword):
        for item in shlex.split(arguments):
            key, sep, value = item.partition("=")
            assert sep, f"use the {keyword} key=value form: {arguments!r}"
            values[key] = value
    return values


def _args(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for arguments in stage.all("ARG"):
        key, _, value = arguments.partition("=")
        values[key] = value
    return values


def _expand(value: str, arguments: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: arguments[match[1]], value)


def _external_base(stages: list[Stage]) -> str:
    """The one image from a registry that every stage starts from, directly or through other stages."""
    names = {stage.name for stage in stages if stage.name}
    external = {stage.base for stage in stages if stage.base.lower() not in names}
    assert len(external) == 1, f"every stage should come from one base image: {sorted(external)}"
    return external.pop()


# ---------------------------------------------------------------- the stages and the base


def test_base_is_pinned_by_version_and_digest(stages: list[Stage]) -> None:
    image = _external_base(stages)
    digest = _DIGEST.search(image)
    assert digest, f"{image}: not pinned by digest (name:tag@sha256:<64 hex>)"
    name, _, tag = image[: digest.start()].rpartition(":")
    assert name and "/" not in tag, f"{image}: no tag"
    assert tag != "latest", f"{image}: pinned to latest"
    assert _VERSION_TAG.search(tag), f"{image}: the tag names no version"
    assert re.fullmatch(r"(docker\.io/library/)?python", name), f"{image}: not the official Python image"
    assert tag.startswith("3.11") and "slim" in tag
    # Each stage after the first starts from an earlier one: one base, named once.
    for position, stage in enumerate(stages[1:], start=1):
        assert stage.base.lower() in {earlier.name for earlier in stages[:position]}, (
            f"stage {stage.name or position} starts from {stage.base}, not from an earlier stage")


def test_builds_in_one_stage_and_runs_from_another(stages: list[Stage], builder: Stage, final: Stage) -> None:
    assert len(stages) >= 2 and final is not builder

    def root(stage: Stage) -> str:
        by_name = {candidate.name: candidate for candidate in stages if candidate.name}
        while stage.base.lower() in by_name:
            stage = by_name[stage.base.lower()]
        return stage.base

    assert root(final) == root(builder), "the final stage must run on the base the builder installed for"
    copied = [arguments.split() for arguments in final.all("COPY") if arguments.startswith("--from=")]
    assert [words[1:] for words in copied if words[0] == "--from=builder"] == [[VENV, VENV]], (
        "the final stage takes the virtualenv, and nothing else, from the builder")


def test_dependencies_are_installed_before_the_source_is_copied(builder: Stage) -> None:
    steps = builder.instructions
    copy_requirements = _index(steps, "COPY", r"\brequirements\.txt\b")
    install_requirements = _index(steps, "RUN", rf"pip --python {VENV}/bin/python install .*-r requirements\.txt")
    copy_source = _index(steps, "COPY", r"\bmodel_services_orchestrator\b")
    install_package = _index(steps, "RUN", rf"pip --python {VENV}/bin/python install .*--no-deps \.(\s|$)")
    assert copy_requirements < install_requirements < copy_source < install_package
    # Nothing but the pins comes in before the dependency layer.
    first_copy = _index(steps, "COPY", r".")
    assert first_copy == copy_requirements
    assert re.search(rf"pip --python {VENV}/bin/python check", steps[install_package].arguments)


def test_the_virtualenv_never_holds_pip(builder: Stage) -> None:
    # Made without pip and filled from outside with the base's pip, so that pip, setuptools and
    # wheel (the build backend lives in pip's isolated build environment) never enter /opt/venv.
    runs = builder.all("RUN")
    assert any(re.fullmatch(rf"python -m venv --without-pip {VENV}", run) for run in runs)
    for run in runs:
        for command in re.split(r"&&|;", run):
            words = command.split()
            if "install" in words and words[0] == "pip":
                assert words[1:3] == ["--python", f"{VENV}/bin/python"], f"installs outside the virtualenv: {run}"
                assert not {"pip", "setuptools", "wheel"} & set(words[words.index("install"):]), run
    # Nor do the pins bring them in.
    pinned = {line.split("==")[0].strip().lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.lstrip().startswith("#")}
    assert not pinned & {"pip", "setuptools", "wheel"}


def test_final_stage_removes_pip_and_installs_nothing(final: Stage) -> None:
    runs = " && ".join(final.all("RUN"))
    assert not re.search(r"\bpip\b[^&;]*\binstall\b", runs), "nothing is installed in the final stage"
    assert not re.search(r"\bapt(-get)?\b[^&;]*\binstall\b", runs), "nothing is installed in the final stage"
    uninstall = re.search(r"python -m pip uninstall (?P<options>(--\S+ )*)(?P<names>[\w ]+)", runs)
    assert uninstall, "the base's pip is not removed"
    assert {"pip", "setuptools", "wheel"} <= set(uninstall["names"].split())
    assert "--yes" in uninstall["options"].split()
    removed = re.search(r"rm -rf (?P<paths>[^&;]+)", runs)
    assert removed, "ensurepip (which brings pip back) is not removed"
    assert {"/usr/local/lib/python3.11/ensurepip", "/usr/local/bin/pip*"} <= set(removed["paths"].split())


def test_environment(builder: Stage, final: Stage) -> None:
    assert _assignments(builder, "ENV").get("PIP_NO_CACHE_DIR") == "1"
    env = _assignments(final, "ENV")
    assert env.get("PYTHONUNBUFFERED") == "1"
    # The console script and `python` are the virtualenv's.
    assert env.get("PATH", "").startswith(f"{VENV}/bin:")


def test_oci_labels(stages: list[Stage], final: Stage) -> None:
    labels = {key: _expand(value, _args(final)) for key, value in _assignments(final, "LABEL").items()}
    prefix = "org.opencontainers.image."
    assert labels[prefix + "title"] == PROJECT["name"]
    assert labels[prefix + "description"] == PROJECT["description"]
    assert labels[prefix + "licenses"] == PROJECT["license"]
    assert labels[prefix + "version"] == PROJECT["version"]
    assert labels[prefix + "revision"]  # ci/build_image.sh passes the commit
    assert re.fullmatch(r"https://\S+", labels[prefix + "source"])
    base = _external_base(stages)
    name, _, digest = base.partition("@")
    assert labels[prefix + "base.digest"] == digest
    assert labels[prefix + "base.name"] in {name, "docker.io/library/" + name}


def test_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = [(position, instruction.arguments) for position, instruction in enumerate(final.instructions)
             if instruction.keyword == "USER"]
    assert users, "no USER: the daemon would run as root"
    position, user = users[-1]
    name = user.split(":", 1)[0]
    assert name not in {"root", "0"}
    # Numeric, so that runAsNonRoot can be checked without reading /etc/passwd;
    # the same UID the Deployment names.
    assert name == "10001"
    last_run = max(index for index, instruction in enumerate(final.instructions) if instruction.keyword == "RUN")
    assert position > last_run, "a RUN after USER would run as that user, or USER is reset"


def test_exposes_the_http_port(final: Stage) -> None:
    exposed = {port.split("/")[0] for arguments in final.all("EXPOSE") for port in arguments.split()}
    assert str(Settings.model_fields["http_port"].default) in exposed


def test_entrypoint_is_the_console_script(final: Stage) -> None:
    entrypoints = final.all("ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT"
    command = yaml.safe_load(entrypoints[-1])  # the exec form is a JSON list, and JSON is YAML
    assert command == ["model-services-orchestrator"]
    assert "model-services-orchestrator" in PROJECT["scripts"]


def test_ships_the_license(final: Stage) -> None:
    assert any(re.fullmatch(r"LICENSE /usr/share/doc/\S+/LICENSE", arguments) for arguments in final.all("COPY"))


# ---------------------------------------------------------------- the HEALTHCHECK


def _healthcheck(final: Stage) -> tuple[dict[str, str], list[str]]:
    [healthcheck] = final.all("HEALTHCHECK")
    options_text, _, command_text = healthcheck.partition("CMD ")
    options = dict(option.removeprefix("--").split("=", 1) for option in options_text.split())
    command = json.loads(command_text)  # the exec form: no shell in the way
    assert isinstance(command, list)
    return options, [str(word) for word in command]


def test_healthcheck_is_declared(final: Stage) -> None:
    options, command = _healthcheck(final)
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)
    assert command[:2] == ["python", "-c"], "curl is not in the slim image: python's urllib"
    assert "/healthz" in command[2] and "HTTP_PORT" in command[2]
    # The probe's own timeout ends before docker's.
    timeout = re.search(r"timeout=(\d+)", command[2])
    assert timeout and int(timeout[1]) < int(options["timeout"].rstrip("s"))


class _Probes(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Probes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _run_healthcheck(final: Stage, port: int) -> int:
    _, command = _healthcheck(final)
    environment = {**os.environ, "HTTP_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=environment, capture_output=True,
                          timeout=30, check=False).returncode


def test_healthcheck_passes_on_200_and_fails_otherwise(final: Stage, probe_server: http.server.HTTPServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    port = probe_server.server_address[1]
    assert _run_healthcheck(final, port) == 0
    monkeypatch.setattr(_Probes, "status", 503)
    assert _run_healthcheck(final, port) != 0
    with socket.socket() as closed:  # a port where nothing listens
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    assert _run_healthcheck(final, free) != 0


# ---------------------------------------------------------------- LICENSE


def test_license_is_the_apache_2_0_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256, "LICENSE is not the verbatim Apache-2.0 text"


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
    sources = [source for instruction in instructions
               if instruction.keyword == "COPY" and "--from=" not in instruction.arguments
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
    assert daemon["build"].get("target", "runtime") == "runtime", "compose runs the final stage"
    assert daemon["env_file"] == ".env"
    assert daemon["environment"]["MQTT_HOST"] == "mosquitto"


# ---------------------------------------------------------------- ci/build_image.sh, with stand-in builders

# Answers as docker and podman would, as the FAKE_* variables say; every call is logged.
_FAKE_BUILDER = r"""#!/bin/bash
name="$(basename "$0")"
echo "$name $*" >> "$FAKE_LOG"
case "$1" in
    info)
        if [ "$name" = docker ]; then [ "${FAKE_DOCKER:-ok}" = ok ]; else [ "${FAKE_PODMAN:-no}" = ok ]; fi ;;
    pull) [ "${FAKE_PULL:-ok}" = ok ] ;;
    build) exit 0 ;;
    run)
        while [ "$1" != "--entrypoint" ]; do shift; done
        case "$2" in
            model-services-orchestrator) echo "model-services-orchestrator $FAKE_VERSION" ;;
            id) echo "${FAKE_UID:-10001}" ;;
            */python) [ "${FAKE_PIP:-gone}" = gone ] || { echo "left in the image: ['pip']" >&2; exit 1; } ;;
            *) exit 127 ;;
        esac ;;
    image)
        case "$4" in
            *User*) echo "${FAKE_USER:-10001:10001}" ;;
            *Labels*) echo "$FAKE_VERSION" ;;
            *Size*) echo 312400000 ;;
        esac ;;
    *) exit 2 ;;
esac
"""


@pytest.fixture
def fake_builders(tmp_path: Path) -> Path:
    for name in ("docker", "podman"):
        path = tmp_path / name
        path.write_text(_FAKE_BUILDER, encoding="utf-8")
        path.chmod(0o755)
    return tmp_path


def _build_image(fake_builders: Path, **fake: str) -> tuple[int, list[str], list[str]]:
    """ci/build_image.sh's exit code, output lines and the builder calls, with only the stand-ins on PATH."""
    log = fake_builders / "calls.log"
    log.write_text("", encoding="utf-8")
    environment = {"PATH": f"{fake_builders}:/usr/bin:/bin", "HOME": str(fake_builders), "FAKE_LOG": str(log),
                   "FAKE_VERSION": PROJECT["version"], **{f"FAKE_{key.upper()}": value for key, value in fake.items()}}
    bash = shutil.which("bash")
    assert bash
    result = subprocess.run([bash, str(BUILD_IMAGE)], env=environment, capture_output=True, text=True,
                            timeout=60, check=False)
    return result.returncode, result.stdout.splitlines(), log.read_text(encoding="utf-8").splitlines()


def test_build_image_without_a_builder_says_so_and_passes(fake_builders: Path) -> None:
    code, output, calls = _build_image(fake_builders, docker="down", podman="down")
    assert code == 0
    assert output == ["build_image: no image builder available (no docker or podman engine answers): image not built"]
    assert not [call for call in calls if " build " in f"{call} "]


def test_build_image_without_the_registry_says_so_and_passes(fake_builders: Path, stages: list[Stage]) -> None:
    code, output, calls = _build_image(fake_builders, pull="fails")
    assert code == 0
    [line] = output
    assert "cannot pull the base image" in line and _external_base(stages) in line
    assert f"docker pull -q {_external_base(stages)}" in calls
    assert not [call for call in calls if call.startswith("docker build")]


def test_build_image_builds_checks_and_reports_the_size(fake_builders: Path) -> None:
    code, output, calls = _build_image(fake_builders)
    assert code == 0, output
    version = PROJECT["version"]
    [build] = [call for call in calls if call.startswith("docker build")]
    assert f"--build-arg VERSION={version}" in build and "--build-arg REVISION=" in build
    assert f"-t model-services-orchestrator:{version} ." in build
    assert output[-1].endswith("size 312 MB")
    # Every interpreter of the image is asked about pip; nothing runs with the network.
    runs = [call for call in calls if call.startswith("docker run")]
    assert all("--network none" in call for call in runs)
    assert {"/opt/venv/bin/python", "/usr/local/bin/python"} <= {call.split("--entrypoint ")[1].split()[0]
                                                                 for call in runs}


def test_build_image_uses_podman_when_docker_does_not_answer(fake_builders: Path) -> None:
    code, output, calls = _build_image(fake_builders, docker="down", podman="ok")
    assert code == 0, output
    assert any(call.startswith("podman build") for call in calls)
    assert "with podman" in output[-1]


@pytest.mark.parametrize(("fake", "why"), [
    ({"pip": "left"}, "pip in the image"),
    ({"uid": "0"}, "runs as root"),
    ({"user": "mso"}, "a user by name, which runAsNonRoot cannot check"),
])
def test_build_image_fails_on_a_bad_image(fake_builders: Path, fake: dict[str, str], why: str) -> None:
    code, _, _ = _build_image(fake_builders, **fake)
    assert code != 0, why
