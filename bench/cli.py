"""The command line: which scenarios, how, and where the results go."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.report import render_table, verdicts, write_result
from bench.runner import RunOptions, run_scenario
from bench.scenarios import SCENARIOS, Scenario, custom
from bench.stack import TUNED_BROKER, find_py_spy

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ci/bench.sh",
        description="Benchmark the daemon through whole simulation lifecycles (a real Mosquitto, a real "
                    "kube-apiserver with etcd and a status-only kubelet, the daemon as its own process).")
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"],
                        help="run this scenario (repeatable; default: all, in the order 1000, 50x40, 10000)")
    parser.add_argument("--models", type=int, help="a custom scenario: models per simulation (with --simulations)")
    parser.add_argument("--simulations", type=int, default=1, help="a custom scenario: how many simulations")
    parser.add_argument("--idle-seconds", type=float, help="how long idle API requests are counted")
    parser.add_argument("--profile", action="store_true",
                        help="sample the daemon with py-spy, one profile per phase, into bench/results/")
    parser.add_argument("--server-profile", type=int, default=0, metavar="SECONDS",
                        help="during the ceiling's creation and the daemon's deploy: kube-apiserver's CPU profile of "
                             "SECONDS (into bench/results/) and the server's requests, time and etcd writes per pod")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the plain client's ceiling measurement")
    parser.add_argument("--ceiling-threads", type=int, default=64)
    parser.add_argument("--ceiling-runs", type=int, default=2, help="the ceiling is the best of this many runs")
    parser.add_argument("--patch-threads", type=int, default=32,
                        help="threads that PATCH pod statuses to terminated")
    parser.add_argument("--ready-rate", type=float, default=0.0,
                        help="ReadyForProcessing per second over all models (0: a burst, as fast as the driver can)")
    parser.add_argument("--so-qos", type=int, choices=(0, 1, 2), default=1, help="QoS of the SO's subscriptions")
    parser.add_argument("--broker-config", action="append", default=[], metavar="LINE",
                        help="an extra Mosquitto config line after the deployment's config (repeatable), "
                             "e.g. 'max_inflight_messages 0'")
    parser.add_argument("--tuned-broker", action="store_true",
                        help=f"add {' and '.join(repr(line) for line in TUNED_BROKER)} to the broker's config")
    parser.add_argument("--quiet-seconds", type=float, default=15.0,
                        help="after the last PATCH, give up waiting for lost lifecycle messages after this silence")
    parser.add_argument("--quota", action="store_true",
                        help="give the namespace a ResourceQuota that holds every pod, so that each simulation goes "
                             "through admission; reports how long it waited (admission_wait_ms)")
    parser.add_argument("--daemon-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra setting of the daemon (repeatable)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default="", help="added to the result file names: <date>-<scenario>-<tag>.json")
    parser.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    return parser


def _scenarios(arguments: argparse.Namespace) -> list[Scenario]:
    if arguments.models is not None:
        return [custom(arguments.simulations, arguments.models)]
    chosen = arguments.scenario or ["all"]
    if "all" in chosen:
        chosen = ["1000", "50x40", "10000"]
    return [SCENARIOS[name] for name in dict.fromkeys(chosen)]


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    daemon_env: dict[str, str] = {}
    for item in arguments.daemon_env:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--daemon-env wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        daemon_env[key.upper()] = value
    if arguments.profile and find_py_spy() is None:
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    options = RunOptions(results_dir=arguments.results_dir, tag=arguments.tag, profile=arguments.profile,
                         server_profile_seconds=arguments.server_profile,
                         ceiling=not arguments.no_ceiling, ceiling_threads=arguments.ceiling_threads,
                         ceiling_runs=max(1, arguments.ceiling_runs),
                         patch_threads=arguments.patch_threads, ready_rate=arguments.ready_rate,
                         idle_seconds=arguments.idle_seconds,
                         so_qos=arguments.so_qos, daemon_env=daemon_env,
                         broker_config=(*(TUNED_BROKER if arguments.tuned_broker else ()), *arguments.broker_config),
                         quiet_seconds=arguments.quiet_seconds, quota=arguments.quota)
    if arguments.profile:
        options.results_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    failed = False
    for scenario in _scenarios(arguments):
        try:
            result = run_scenario(scenario, options, log=lambda line: print(line, flush=True))
        except Exception as exc:  # noqa: BLE001 (one scenario failing leaves the others to run)
            print(f"[{scenario.name}] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            failed = True
            continue
        results.append(result)
        if not arguments.no_write:
            path = write_result(result, options.results_dir, arguments.tag)
            print(f"[{scenario.name}] written to {path}", flush=True)
        if "profile_summary" in result:
            print(f"[{scenario.name}] profile summary: {result['profile_summary']}", flush=True)
        if not result["correct"]:
            print(f"[{scenario.name}] WRONG ANSWERS: {result['correctness']}", file=sys.stderr, flush=True)
            failed = True
    if results:
        print()
        print(render_table(results))
        for result in results:
            misses = [v["key"] for v in verdicts(result) if v["verdict"] == "MISS"]
            print(f"{result['scenario']}: {'all targets met' if not misses else 'MISS: ' + ', '.join(misses)}")
    return 1 if failed else 0
