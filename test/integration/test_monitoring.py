"""The dashboard and the alerts against a real Prometheus scraping a daemon that runs a simulation.

A query that names a metric the daemon does not export, or a label it does not carry, returns nothing,
without an error, and a panel or an alert then stays silent for ever. Here Debian's ``prometheus``
scrapes the daemon every second while it runs a simulation on the real control plane (pods created
through 429s of the API server, one model failing), with the alert rules loaded, and then:

- every target of every dashboard panel returns at least one series, and so does every metric selector
  in it (``$job`` and ``$instance`` are the test's scrape; ``$__rate_interval`` is 1m);
- every alert's expression evaluates without error, and every metric selector in it, exactly as written
  (its label matchers included), returns at least one series: an alert's expression itself is empty
  while all is well, so its selectors are what shows that it watches real series. The labels the
  matchers test are therefore ones the daemon's series carry: a matcher on a label the metric does not
  have, or a value it never takes, fails here (the daemon exports the closed sets of values at 0 from the
  start: failure codes -1 to -4, results, types);
- the alerts about what happened fire on it: the 429s make MSOKubernetesAPIThrottled's and MSOSyncErrors'
  expressions return series, the others stay empty while all is well, and MSOMQTTDisconnected's returns
  a series once the broker is gone;
- Prometheus itself reports every loaded rule healthy.

What fires after each alert's ``for``, and what does not, is tested by ``promtool test rules``
(test/deployment/test_monitoring_manifests.py).
"""

from __future__ import annotations

from simulation_components.control_plane import ControlPlane
from simulation_components.kit import (
    DaemonFactory,
    SimulatorRecorder,
    core_api,
    ready,
    running_pods,
    set_terminated,
    wait_for,
)
from simulation_components.local_mosquitto import LocalMosquitto
from simulation_components.local_prometheus import (
    RULES,
    LocalPrometheus,
    PromQLError,
    alert_rules,
    dashboard_queries,
    selectors,
)

IMAGE = "fake_model:0.0.1"
JOB = "model-services-orchestrator"
# Whose expressions hold series in this test, once the 429s have happened (their expressions, not the
# alerts: those wait for their ``for``).
TRIGGERED = {"MSOKubernetesAPIThrottled", "MSOSyncErrors"}


def _returns_series(prometheus: LocalPrometheus, expr: str) -> bool:
    return bool(prometheus.query(expr))


def test_every_panel_and_alert_query_returns_series_from_a_real_scrape(
        status_kube: ControlPlane, broker: LocalMosquitto, so: SimulatorRecorder, make_daemon: DaemonFactory,
        unused_tcp_port: int) -> None:
    make_daemon(status_kube, http_port=unused_tcp_port)
    target = f"127.0.0.1:{unused_tcp_port}"
    with LocalPrometheus([target], job=JOB, rule_files=(RULES,)) as prometheus:
        wait_for(prometheus.targets_up, timeout=60, what="the daemon scraped", retry=(OSError,))
        # The API server throttles the daemon's creates for a while: real 429s, counted and retried.
        status_kube.inject_fault(429, seconds=5, methods=["POST"], path_contains="/pods")
        sim = "sim-monitoring"
        so.deploy(sim, [(f"m{i}", IMAGE, [("A", "1")]) for i in range(3)], keep_logs_hours=1)
        api = core_api(status_kube)
        names = running_pods(api, 3, timeout=60)
        ready(so, sim, "m0", "m1", "m2")
        wait_for(lambda: so.of(sim, "ModelsReady"), timeout=60, what="ModelsReady")
        for name, code in zip(names, (0, 1, 0), strict=True):
            set_terminated(api, name, code)
        so.wait_all_terminated(sim)
        wait_for(lambda: _returns_series(
            prometheus, 'mso_lifecycle_messages_total{type="AllModelsHaveTerminated", result="success"} > 0'),
            timeout=60, what="the end of the simulation scraped")

        # The dashboard: every target, and every selector in it, returns series. rate() over a minute needs
        # two scrapes after a change, so a query may be empty at first: polled until all hold.
        queries = dashboard_queries({"job": JOB, "instance": target})
        assert len(queries) >= 30

        def empty_panels() -> list[str]:
            return [f"{query.panel} [{query.ref}]: {expr}" for query in queries
                    for expr in (query.expr, *(s.text for s in selectors(query.expr)))
                    if not prometheus.query(expr)]

        try:
            wait_for(lambda: not empty_panels(), timeout=90, interval=1.0, what="every dashboard query's series")
        except TimeoutError:
            raise AssertionError("dashboard queries that return nothing:\n" + "\n".join(empty_panels())) from None

        # The alerts: every expression evaluates, every selector in it returns series as written.
        rules = alert_rules()
        assert {rule.name for rule in rules} >= TRIGGERED
        for rule in rules:
            found = selectors(rule.expr)
            assert found, rule.name
            for selector in found:
                assert prometheus.query(selector.text), f"{rule.name}: {selector.text} selects nothing"
        wait_for(lambda: all(_returns_series(prometheus, rule.expr) for rule in rules if rule.name in TRIGGERED),
             timeout=60, what="the 429s and failed syncs seen by MSOKubernetesAPIThrottled and MSOSyncErrors")
        for rule in rules:
            if rule.name not in TRIGGERED:
                assert prometheus.query(rule.expr) == [], f"{rule.name} holds while all is well"

        # Prometheus evaluates the loaded rules itself: none has an error.
        wait_for(lambda: len(prometheus.rules()) == len(rules), timeout=30, what="the rules loaded")
        wait_for(lambda: all(rule.get("health") == "ok" for rule in prometheus.rules()), timeout=30,
             what="every rule evaluated healthy")

        # The broker goes: the leader's sessions are down, and MSOMQTTDisconnected's expression says so.
        broker.stop()
        disconnected = next(rule for rule in rules if rule.name == "MSOMQTTDisconnected")
        wait_for(lambda: _returns_series(prometheus, disconnected.expr), timeout=60, what="MQTT disconnected seen")


def test_a_query_prometheus_refuses_is_an_error() -> None:
    # Guards the test above: a broken expression raises instead of reading as "no series".
    with LocalPrometheus([], job=JOB) as prometheus:
        try:
            prometheus.query("sum by (le (rate(x[1m]))")
        except PromQLError as error:
            assert "parse" in str(error)
        else:
            raise AssertionError("a malformed query was accepted")
        assert prometheus.query("vector(1)") != []
