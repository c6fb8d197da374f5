"""A real Prometheus on a free local port, and the PromQL of the monitoring kit, for tests.

Why this exists: a dashboard or an alert whose query names a metric the
daemon does not export (renamed, mislabelled) shows nothing, silently. The
tests run Debian's ``prometheus`` (``ci/prepare_dev_env.sh`` installs it)
against a daemon, with a scrape config of their own, and evaluate every
expression of ``k8s_cluster_configuration/monitoring`` through the HTTP API,
as Grafana and the rule evaluator would. ``promtool`` (same package) checks
and unit-tests the rules offline.

The expressions: ``dashboard_queries`` reads the dashboard's targets with its
variables replaced (``$job`` and ``$instance`` by what the test scrapes,
``$__rate_interval`` and ``$__range`` by fixed windows); ``alert_rules``
reads the rules file; ``selectors`` finds the metric selectors of an
expression (the names and label matchers a query depends on).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from simulation_components.control_plane.api import ApiError, HttpClient
from simulation_components.processes import free_port, stop_process
from simulation_components.waiting import wait_for

__all__ = [
    "DASHBOARD",
    "MONITORING",
    "RULES",
    "RULE_TESTS",
    "AlertRule",
    "LocalPrometheus",
    "PromQLError",
    "Query",
    "Selector",
    "alert_rules",
    "dashboard_queries",
    "find_tool",
    "selectors",
]

MONITORING = Path(__file__).resolve().parents[1] / "k8s_cluster_configuration" / "monitoring"
DASHBOARD = MONITORING / "mso-dashboard.json"
RULES = MONITORING / "mso-alerts.rules.yaml"
RULE_TESTS = MONITORING / "mso-alerts.test.yaml"

# Grafana's built-in variables the dashboard uses, with the windows a test gives them (a scrape every
# second: a minute holds enough samples for rate()).
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__range": "1h", "__interval": "15s"}


class PromQLError(RuntimeError):
    """Prometheus refused a query (a syntax or type error, an unknown function)."""


def find_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; an error that says how to install them."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise FileNotFoundError(f"no '{name}' binary: install Debian's prometheus package "
                                "(apt-get install prometheus; ci/prepare_dev_env.sh does)")
    return found


@dataclass(frozen=True, slots=True)
class Query:
    """One target of a dashboard panel, its variables replaced."""

    panel: str
    ref: str
    expr: str


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric selector of an expression: as written, the metric's name, the label names its matchers test."""

    text: str
    metric: str
    labels: frozenset[str]


def dashboard_queries(variables: dict[str, str], path: Path = DASHBOARD) -> list[Query]:
    """Every target of every panel, with ``$name`` and ``${name}`` replaced from ``variables`` and Grafana's
    built-ins; a variable left over raises (the dashboard uses one nobody defined)."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    values = {**BUILTIN_VARIABLES, **variables}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"the dashboard uses ${name}, which is neither a variable nor a built-in")
        return values[name]

    queries: list[Query] = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, target["expr"])
            queries.append(Query(panel["title"], target["refId"], expr))
    return queries


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels") or []))  # a collapsed row holds its panels
    return found


def alert_rules(path: Path = RULES) -> list[AlertRule]:
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [AlertRule(rule["alert"], rule["expr"], dict(rule.get("labels") or {}), dict(rule.get("annotations") or {}))
            for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


# A metric name, then optional matchers in braces, then an optional range; not a function call, a keyword,
# or a label name inside by (...) / on (...) (those are skipped with their parentheses).
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                       "unless", "offset", "inf", "nan",
                       # aggregations, which may stand before their by (...) clause
                       "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                       "topk", "quantile"})
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)'
                    r"|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\{([^}]*)\})?(\s*\()?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of ``expr``, in order (a simple scan of PromQL: enough for our own queries)."""
    found: list[Selector] = []
    for match in _TOKEN.finditer(expr):
        name, _braces, matchers, call = match.group(1), match.group(2), match.group(3), match.group(4)
        if name is None or call is not None or name.lower() in _KEYWORDS:
            continue
        start = match.start()
        if start > 0 and (expr[start - 1].isdigit() or expr[start - 1] == "."):
            continue  # a number's exponent or unit (1e3, 5m)
        found.append(Selector(match.group(0), name, frozenset(_MATCHER.findall(matchers or ""))))
    return found


class LocalPrometheus:
    """A Prometheus scraping ``targets`` (host:port) every second as job ``job``, in a directory of its own."""

    host = "127.0.0.1"

    def __init__(self, targets: list[str], *, job: str = "model-services-orchestrator",
                 rule_files: tuple[Path, ...] = (), startup_timeout: float = 60.0) -> None:
        self.job = job
        self.port = free_port(self.host)
        self._binary = find_tool("prometheus")
        self._directory = Path(tempfile.mkdtemp(prefix="local-prometheus-"))
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._client = HttpClient(self.url, timeout=10)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        (self._directory / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_text(self) -> str:
        try:
            return (self._directory / "prometheus.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        with (self._directory / "prometheus.log").open("ab") as output:
            self._process = subprocess.Popen(
                [self._binary, f"--config.file={self._directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self._directory / 'data'}", f"--web.listen-address={self.host}:{self.port}",
                 "--web.enable-lifecycle", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=output)

        def alive() -> None:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self._process.returncode}:\n{self.log_text()}")

        # Not listening yet (OSError), or not ready (503): not yet.
        wait_for(lambda: self._client.request_text("GET", "/-/ready"), timeout=self._startup_timeout,
                 what="prometheus ready", check=alive, retry=(OSError, ApiError), interval=0.1)
        return self

    def close(self) -> None:
        self._client.close()
        if self._process is not None:
            stop_process(self._process, 10.0)
            self._process = None
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, _type: type[BaseException] | None, _error: BaseException | None,
                 _traceback: TracebackType | None) -> None:
        self.close()

    # -- the HTTP API

    def _get(self, path: str, **params: str) -> Any:
        """A GET of the HTTP API, decoded; ``PromQLError`` with Prometheus' own reason when it refuses."""
        try:
            return self._client.request("GET", path + (f"?{urllib.parse.urlencode(params)}" if params else ""))
        except ApiError as exc:
            answer = exc.body if isinstance(exc.body, dict) else {}
            raise PromQLError(f"{answer.get('errorType')}: {answer.get('error') or exc.message}") from exc

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one result) ``expr`` evaluates to now; ``PromQLError`` if refused."""
        answer = self._get("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise PromQLError(f"{answer.get('errorType')}: {answer.get('error')}")
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> bool:
        """Every target scraped, and up."""
        targets = self._get("/api/v1/targets")["data"]["activeTargets"]
        return bool(targets) and all(target["health"] == "up" for target in targets)

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rules with their health and last error, as ``/api/v1/rules`` gives them."""
        groups = self._get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]
