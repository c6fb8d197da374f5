"""The monitoring kit (k8s_cluster_configuration/monitoring), checked offline.

- The metrics Service against the Kubernetes schemas; the ServiceMonitor and PodMonitor (Prometheus
  Operator objects, which those schemas do not know) by their known fields, and all three by what they
  select: the daemon's pods, its named port.
- The alerts: the PrometheusRule holds exactly the rules file's groups; ``promtool check rules`` accepts
  them; ``promtool test rules`` passes its unit tests, which expect each alert to fire and not to fire;
  and those tests can fail: an alert made never to fire, or always, breaks them.
- The Grafana dashboard (Grafana itself is AGPL and not a package here, so it is not rendered): its JSON
  against a schema of the dashboard model's parts Grafana needs to render it (panels with a type, a
  grid position inside the 24 columns, no two overlapping, unique ids; targets with a refId, an
  expression and the Prometheus data source variable), every variable an expression uses defined, and
  every expression valid PromQL (``promtool check rules`` on them as recording rules).

Whether the queries select what the daemon exports is test/integration/test_monitoring.py's part.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema among the dev pins
import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed

from simulation_components.local_prometheus import (
    DASHBOARD,
    MONITORING,
    RULE_TESTS,
    RULES,
    alert_rules,
    dashboard_queries,
    find_tool,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "k8s_cluster_configuration" / "orchestrator-deployment.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
KUBERNETES_VERSION = "1.33.0"
# The issue's list: daemon down, no leader, sync errors, queue stuck, MQTT disconnected, models failing,
# API throttled; and a replica down, which leaves no standby.
ALERTS = {"MSODown", "MSOReplicaDown", "MSONoLeader", "MSOSyncErrors", "MSOWorkQueueStuck", "MSOMQTTDisconnected",
          "MSOModelsFailing", "MSOKubernetesAPIThrottled"}


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MONITORING / name).read_text(encoding="utf-8"))
    return document


def _pod_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]
    return template


def _promtool(*arguments: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_tool("promtool"), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


# ---------------------------------------------------------------- the manifests


def test_the_kustomization_applies_the_service_one_monitor_the_rules_and_the_dashboard() -> None:
    kustomization = _load("kustomization.yaml")
    resources = set(kustomization["resources"])
    assert resources == {"metrics-service.yaml", "service-monitor.yaml", "prometheus-rule.yaml"}
    assert all((MONITORING / name).is_file() for name in resources)
    assert (MONITORING / "pod-monitor.yaml").is_file(), "the alternative to the ServiceMonitor"
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == [DASHBOARD.name]
    assert generated["options"]["labels"]["grafana_dashboard"] == "1"


def test_the_main_kustomization_needs_no_prometheus_operator() -> None:
    main = yaml.safe_load((ROOT / "k8s_cluster_configuration" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert not any("monitoring" in resource for resource in main["resources"])


def test_the_metrics_service_matches_the_kubernetes_schema_and_selects_the_daemon() -> None:
    service = _load("metrics-service.yaml")
    kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
    template = _pod_template()
    pod_labels = template["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {port["name"] for port in template["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


# The fields of the Operator's CRDs (monitoring.coreos.com/v1) the manifests may use: a typo is not a field.
_MONITOR_SPEC = {"namespaceSelector", "selector", "endpoints", "podMetricsEndpoints", "jobLabel"}
_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings"}


@pytest.mark.parametrize(("name", "kind", "endpoints"), [
    ("service-monitor.yaml", "ServiceMonitor", "endpoints"),
    ("pod-monitor.yaml", "PodMonitor", "podMetricsEndpoints"),
])
def test_a_monitor_scrapes_the_daemons_metrics(name: str, kind: str, endpoints: str) -> None:
    monitor = _load(name)
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", kind)
    assert monitor["metadata"]["namespace"] == "dots"
    assert set(monitor["spec"]) <= _MONITOR_SPEC
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["dots"]}
    (endpoint,) = monitor["spec"][endpoints]
    assert set(endpoint) <= _ENDPOINT
    assert endpoint["path"] == "/metrics"
    selected = monitor["spec"]["selector"]["matchLabels"]
    if kind == "ServiceMonitor":
        service = _load("metrics-service.yaml")
        assert selected.items() <= service["metadata"]["labels"].items()
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    else:
        template = _pod_template()
        assert selected.items() <= template["metadata"]["labels"].items()
        assert endpoint["port"] in {port["name"] for port in template["spec"]["containers"][0]["ports"]}


# ---------------------------------------------------------------- the alerts


def test_the_prometheus_rule_holds_exactly_the_rules_file() -> None:
    rule = _load("prometheus-rule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["namespace"] == "dots"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def test_the_alerts_are_the_issues_each_with_a_severity_and_a_runbook_in_the_docs() -> None:
    rules = alert_rules()
    assert {rule.name for rule in rules} == ALERTS
    headings = {_anchor(line.lstrip("#").strip()) for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")}
    for rule in rules:
        assert rule.labels.get("severity") in {"critical", "warning"}, rule.name
        assert {"summary", "description", "runbook"} <= set(rule.annotations), rule.name
        page, _, anchor = rule.annotations["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in headings, f"{rule.name}: no heading for {anchor}"


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_promtool_checks_the_rules() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_passes_the_unit_tests_of_every_alert() -> None:
    tested = _promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_expect_each_alert_to_fire_and_not_to_fire() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for expectation in case.get("alert_rule_test") or []:
            (firing if expectation.get("exp_alerts") else silent).add(expectation["alertname"])
    assert firing == ALERTS
    assert silent == ALERTS


@pytest.mark.parametrize("mutation", ["never", "always"])
@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_the_unit_tests_fail_when_an_alert_is_broken(alert: str, mutation: str, tmp_path: Path) -> None:
    # An alert that never fires breaks its "fires" expectations; one that always does, its "silent" ones.
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 2" if mutation == "never" else "vector(1)"
                rule.pop("for", None)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text(encoding="utf-8"), encoding="utf-8")
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0, f"{alert} made to fire {mutation}, and the unit tests still pass"
    assert alert in tested.stdout + tested.stderr


# ---------------------------------------------------------------- the dashboard

_DATASOURCE = {"type": "object", "required": ["type", "uid"],
               "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
_GRID = {"type": "object", "required": ["h", "w", "x", "y"], "additionalProperties": False,
         "properties": {"h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
                        "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}}
_TARGET = {"type": "object", "required": ["refId", "expr", "datasource"],
           "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                          "expr": {"type": "string", "minLength": 1},
                          "legendFormat": {"type": "string"}, "datasource": _DATASOURCE}}
_PANEL = {
    "type": "object", "required": ["id", "type", "title", "gridPos"],
    "properties": {"id": {"type": "integer", "minimum": 1}, "title": {"type": "string", "minLength": 1},
                   "gridPos": _GRID, "description": {"type": "string"}},
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"properties": {"panels": {"type": "array"}}, "not": {"required": ["targets"]}},
    "else": {"required": ["datasource", "targets", "description", "fieldConfig"],
             "properties": {"type": {"enum": ["timeseries", "stat", "bargauge", "table", "gauge"]},
                            "datasource": _DATASOURCE,
                            "targets": {"type": "array", "minItems": 1, "items": _TARGET},
                            "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]}}},
}
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {"type": "array", "minItems": 1, "items": _PANEL},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"type": {"enum": ["datasource", "query", "custom", "interval", "constant"]}}}}}},
    },
}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def test_the_dashboard_matches_the_schema() -> None:
    jsonschema.validate(_dashboard(), DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_schema_rejects_what_would_not_render() -> None:
    # Guards the test above: a panel without a grid position, or a target without an expression, fails it.
    def no_grid(panel: dict[str, Any]) -> None:
        del panel["gridPos"]

    def no_expression(panel: dict[str, Any]) -> None:
        del panel["targets"][0]["expr"]

    def fixed_datasource(panel: dict[str, Any]) -> None:
        panel["datasource"] = {"type": "prometheus", "uid": "prom"}

    for break_it in (no_grid, no_expression, fixed_datasource):
        dashboard = _dashboard()
        break_it(next(panel for panel in dashboard["panels"] if panel["type"] != "row"))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(dashboard, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_dashboards_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]
        refs = [target["refId"] for target in panel.get("targets") or []]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_has_the_issues_panels() -> None:
    titles = {panel["title"] for panel in _dashboard()["panels"]}
    # controller-runtime's (kubebuilder's dashboard) and the DOTS ones the issue names.
    assert {"Reconciliation total count per controller", "Reconciliation error count per controller",
            "Work queue depth", "Work queue add rate", "Work queue latency", "Work duration",
            "Seconds of unfinished work", "CPU", "Memory",
            "Simulations by phase", "Models by state", "ModelsReady latency", "Failures by code",
            "API requests by code", "API errors by code", "MQTT connected"} <= titles


def test_every_dashboard_variable_is_defined() -> None:
    defined = {variable["name"] for variable in _dashboard()["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= defined
    # dashboard_queries raises on a variable that is neither defined nor a Grafana built-in.
    assert dashboard_queries({name: "x" for name in defined})


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries({"job": "model-services-orchestrator", "instance": "127.0.0.1:8080"})
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{index}", "expr": query.expr} for index, query in enumerate(queries)]}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(recording), encoding="utf-8")
    checked = _promtool("check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_refuses_invalid_promql(tmp_path: Path) -> None:
    # Guards the test above.
    (tmp_path / "bad.rules.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "g", "rules": [{"record": "r:x", "expr": "sum by (le (rate(x[1m]))"}]}]}),
        encoding="utf-8")
    assert _promtool("check", "rules", "bad.rules.yaml", cwd=tmp_path).returncode != 0
