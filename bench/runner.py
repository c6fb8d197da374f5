"""One benchmark run: the ceiling, then the daemon through a whole lifecycle, measured from the outside.

Phases, each stamped by the driver with ``time.monotonic()``:

1. ceiling: the same pods created by a plain client on a fresh API server;
2. deploy: DeployModels sent -> every pod seen by the driver's watch (created), then Running;
3. ready: every model's ReadyForProcessing published -> ModelsReady heard by the SO;
4. idle: API requests counted by the server while nothing changes;
5. terminate: each pod's status PATCHed to terminated, concurrently -> ModelHasTerminated per model,
   AllModelsHaveTerminated per simulation;
6. cleanup: -> every pod deleted and the simulation records gone.

The daemon's CPU (utime+stime) and the API server's are sampled at each phase boundary; the
daemon's peak RSS (VmHWM) at the end.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api_server import BenchApiServer, api_server
from bench.ceiling import measure_ceiling
from bench.kube import PodWatch, terminated_status_patch
from bench.mqtt_driver import ModelsPublisher, SimulatorDriver
from bench.proc import sample
from bench.profiles import summarize
from bench.scenarios import IMAGE, SIMULATOR_ID, SO, Scenario, model_env
from bench.server_breakdown import CreationProbe
from bench.stack import NAMESPACE, Profiler, daemon_env
from model_services_orchestrator.pod_specs import owned_pods_selector, pod_name
from model_services_orchestrator.simulation_records import records_selector
from simulation_components.control_plane.api import HttpClient
from simulation_components.kit import deploy_models
from simulation_components.local_daemon import LocalDaemon
from simulation_components.local_mosquitto import LocalMosquitto
from simulation_components.processes import free_port
from simulation_components.waiting import wait_for

__all__ = ["RunOptions", "code_version", "machine_info", "percentile", "run_scenario"]

Log = Callable[[str], None]
Models = list[tuple[str, list[tuple[str, str]]]]


@dataclass(frozen=True)
class RunOptions:
    results_dir: Path
    tag: str = ""  # in the names of the files written
    profile: bool = False
    server_profile_seconds: int = 0  # > 0: where kube-apiserver's time goes during creation (server_breakdown)
    ceiling: bool = True
    ceiling_threads: int = 64
    ceiling_runs: int = 2  # the best of these is the ceiling (the machine is shared, and noisy)
    patch_threads: int = 32
    ready_rate: float = 0.0  # ReadyForProcessing per second; 0 is a burst
    idle_seconds: float | None = None
    so_qos: int = 1
    quiet_seconds: float = 15.0  # nothing heard that long after the last PATCH: what is missing is lost
    broker_config: tuple[str, ...] = ()  # extra lines for Mosquitto, after the deployment's config
    daemon_env: dict[str, str] = field(default_factory=dict)
    quota: bool = False  # a ResourceQuota that holds every pod: each simulation goes through admission


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the daemon's code differed from it (others edit it concurrently)."""
    binary = shutil.which("git")

    def git(*arguments: str) -> str:
        if binary is None:
            return ""
        try:
            done = subprocess.run([binary, *arguments], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:  # an export of a commit (git archive), which says which one in BENCH_GIT_COMMIT
        return {"commit": os.environ.get("BENCH_GIT_COMMIT", ""), "daemon_modified": False, "exported": True}
    modified = bool(git("status", "--porcelain", "--", "model_services_orchestrator"))
    return {"commit": commit, "daemon_modified": modified}


def machine_info() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def _wait_until(condition: Callable[[], bool], deadline: float, what: str, check: Callable[[], None]) -> None:
    wait_for(condition, timeout=deadline - time.monotonic(), interval=0.01, what=what, check=check)


class _Phases:
    """CPU seconds of the daemon, the API server and the driver at each boundary; the daemon's RSS sampled 10x/s."""

    def __init__(self, daemon_pid: int, server_pids: list[int]) -> None:
        self._pids = {"daemon": [daemon_pid], "api_server": server_pids, "driver": [os.getpid()]}
        self.marks: list[tuple[str, float, dict[str, float]]] = []
        self._rss: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, name="bench-rss", daemon=True)
        self._sampler.start()

    def _sample_rss(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._rss.append((time.monotonic(), sample(self._pids["daemon"][0]).rss_mb))
            except (FileNotFoundError, ProcessLookupError):
                return

    def mark(self, name: str) -> None:
        samples = {key: [sample(pid) for pid in pids] for key, pids in self._pids.items()}
        now = time.monotonic()
        self._rss.append((now, samples["daemon"][0].rss_mb))  # a phase shorter than the sampling period has one too
        self.marks.append((name, now, {key: sum(value.cpu_seconds for value in values)
                                       for key, values in samples.items()}))

    def table(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._sampler.join(2)
        phases: dict[str, dict[str, float]] = {}
        for (_, start, cpu_start), (name, end, cpu_end) in zip(self.marks, self.marks[1:], strict=False):
            rss = [value for at, value in self._rss if start <= at <= end]
            phases[name] = {"seconds": round(end - start, 3),
                            **{f"{key}_cpu_seconds": round(cpu_end[key] - cpu_start[key], 3) for key in cpu_end},
                            "daemon_max_rss_mib": round(max(rss, default=0.0), 1)}
        return phases


class _PhaseProfiler:
    """One py-spy session per phase (so each phase's hot spots stand apart), when profiling."""

    def __init__(self, enabled: bool, pid: int, prefix: Path) -> None:
        self._enabled = enabled
        self._pid = pid
        self._prefix = prefix
        self._current: Profiler | None = None
        self._phase = ""
        self.files: dict[str, str] = {}

    def start(self, phase: str) -> None:
        self.stop()
        if self._enabled:
            self._current = Profiler(self._pid, self._prefix.with_name(f"{self._prefix.name}-{phase}.txt"))
            self._phase = phase

    def stop(self) -> None:
        if self._current is not None:
            written = self._current.stop()
            if written is not None:
                self.files[self._phase] = str(written)
            self._current = None


def _results_path(options: RunOptions, scenario: Scenario, suffix: str) -> Path:
    tag = f"-{options.tag}" if options.tag else ""
    return options.results_dir / f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}-{scenario.name}{tag}-{suffix}"


def _ceiling(scenario: Scenario, options: RunOptions, log: Log, result: dict[str, Any],
             models: dict[str, Models]) -> None:
    """The same pods from a plain client on a fresh API server, best of ``options.ceiling_runs``."""
    runs = []
    for attempt in range(options.ceiling_runs):
        log(f"[{scenario.name}] ceiling {attempt + 1}/{options.ceiling_runs}: {scenario.models:,} pods from "
            f"{options.ceiling_threads} plain threads ...")
        profile = (options.server_profile_seconds,
                   _results_path(options, scenario, f"ceiling-{attempt + 1}-apiserver.pprof"))
        runs.append(measure_ceiling(namespace=NAMESPACE, so=SO, simulator_id=SIMULATOR_ID,
                                    simulations=dict(models.items()), image=IMAGE, threads=options.ceiling_threads,
                                    timeout=scenario.timeout_seconds, server_profile=profile))
        log(f"[{scenario.name}] ceiling {attempt + 1}/{options.ceiling_runs}: {runs[-1].pods_per_second:,.0f} pods/s")
    ceiling = max(runs, key=lambda run: run.pods_per_second)  # the ceiling is the best the server did
    result["ceiling"] = {"pods": ceiling.pods, "threads": ceiling.threads, "runs": len(runs),
                         "pods_per_second_each_run": [round(run.pods_per_second, 1) for run in runs],
                         "seconds_to_last_pod_seen": round(ceiling.seconds_to_last_seen, 3),
                         "seconds_to_last_response": round(ceiling.seconds_to_last_response, 3),
                         "api_server_cpu_seconds": round(ceiling.server_cpu_seconds, 3)}
    if ceiling.server is not None:
        result["server_breakdown"] = {"ceiling": ceiling.server}
    result["figures"]["ceiling_pods_per_second"] = round(ceiling.pods_per_second, 1)


def run_scenario(scenario: Scenario, options: RunOptions, log: Log = print) -> dict[str, Any]:
    """Run one scenario from nothing to a clean cluster; the figures and the checks, JSON-able."""
    simulations = scenario.simulation_ids()
    models: dict[str, Models] = {sim: [(model_id, model_env(sim, model_id)) for model_id in scenario.model_ids()]
                                 for sim in simulations}
    pods = {sim: [pod_name(SIMULATOR_ID, sim, model_id) for model_id, _ in models[sim]] for sim in simulations}
    all_pods = [name for sim in simulations for name in pods[sim]]
    stamp = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.describe(),
        "models": scenario.models,
        "simulations": scenario.simulations,
        "started_at": stamp.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "code": code_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "broker_config_extra": list(options.broker_config),
        "so_subscription_qos": options.so_qos,
        "patch_threads": options.patch_threads,
        "ready_rate_per_second": options.ready_rate or "burst",
        "tag": options.tag,
    }
    figures: dict[str, Any] = {}
    result["figures"] = figures

    if options.ceiling:
        _ceiling(scenario, options, log, result, models)

    overrides = {"KUBERNETES_WATCH_TIMEOUT_SECONDS": "300", **options.daemon_env}
    deadline = time.monotonic() + scenario.timeout_seconds
    tag = f"-{options.tag}" if options.tag else ""
    profile_prefix = options.results_dir / f"{stamp:%Y-%m-%d}-{scenario.name}{tag}-profile"
    with (tempfile.TemporaryDirectory(prefix="mso-bench-") as scratch,
          LocalMosquitto(password=f"bench-{secrets.token_hex(8)}", extra_config=options.broker_config) as broker,
          api_server(profiling=options.server_profile_seconds > 0) as kube):
        result["api_server"] = {"kind": "real", "version": kube.version}
        client = kube.driver
        if options.quota:
            result["quota"] = _quota(client, scenario)
            overrides["HTTP_PORT"] = str(free_port())  # its /metrics tell the admission's waits
        watch = PodWatch(client, NAMESPACE, owned_pods_selector(SO)).start()
        so = SimulatorDriver(broker, so=SO, subscribe_qos=options.so_qos)
        publisher = ModelsPublisher(broker)
        env = daemon_env(broker, kube, overrides)
        result["daemon_settings"] = {key: value for key, value in env.items()
                                     if not key.endswith(("_PASSWORD", "_TOKEN", "_PORT", "_HOST", "_USERNAME"))}
        daemon = LocalDaemon(env=env, log_path=Path(scratch) / "daemon.log").start()
        profiler = _PhaseProfiler(options.profile, daemon.pid, profile_prefix)
        try:
            _Lifecycle(scenario=scenario, options=options, log=log, result=result, figures=figures,
                       deadline=deadline, kube=kube, client=client, watch=watch, so=so, publisher=publisher,
                       daemon=daemon, profiler=profiler, models=models, pods=pods, all_pods=all_pods).run()
        except Exception:
            options.results_dir.mkdir(parents=True, exist_ok=True)
            kept = options.results_dir / f"{stamp:%Y-%m-%d}-{scenario.name}{tag}-failed-daemon.log"
            kept.write_bytes((Path(scratch) / "daemon.log").read_bytes())
            heard = so.heard
            log(f"[{scenario.name}] FAILED; heard {len(heard.models_ready)} ModelsReady, {len(heard.terminated)} "
                f"ModelHasTerminated, {len(heard.all_terminated)} AllModelsHaveTerminated, other {dict(heard.other)};"
                f" pods seen {len(watch.times.added)}, running {len(watch.times.running)}, finished "
                f"{len(watch.times.finished)}, deleted {len(watch.times.deleted)}; the daemon's log is in {kept}")
            raise
        finally:
            profiler.stop()
            result["daemon_exit_code"] = daemon.stop()
            watch.stop()
            so.close()
            publisher.close()
    if profiler.files:
        result["profiles"] = profiler.files
        summary_path = profile_prefix.with_name(f"{profile_prefix.name}-top.txt")
        summary_path.write_text("\n\n".join(summarize(Path(path)).render(f"{scenario.name} {phase}")
                                            for phase, path in profiler.files.items()) + "\n")
        result["profile_summary"] = str(summary_path)
    result["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    return result


@dataclass
class _Lifecycle:
    """The phases of one run against the started stack; each adds its figures to ``figures``."""

    scenario: Scenario
    options: RunOptions
    log: Log
    result: dict[str, Any]
    figures: dict[str, Any]
    deadline: float
    kube: BenchApiServer
    client: HttpClient
    watch: PodWatch
    so: SimulatorDriver
    publisher: ModelsPublisher
    daemon: LocalDaemon
    profiler: _PhaseProfiler
    models: dict[str, Models]
    pods: dict[str, list[str]]
    all_pods: list[str]
    _last_patch: float = 0.0

    def run(self) -> None:
        self.so.wait_daemon_healthy(timeout=60)
        phases = _Phases(self.daemon.pid, self.kube.server_pids())
        self.figures["daemon_rss_before_deploy_mib"] = round(sample(self.daemon.pid).rss_mb, 1)
        payloads = {sim: deploy_models([(model_id, IMAGE, env) for model_id, env in self.models[sim]],
                                       simulator_id=SIMULATOR_ID).SerializeToString() for sim in self.models}
        self.result["deploy_payload_bytes"] = sum(len(payload) for payload in payloads.values())
        self.profiler.start("deploy")
        phases.mark("start")
        self._deploy(payloads)
        self._settle()
        phases.mark("deploy")
        self.profiler.start("ready")
        self._ready()
        phases.mark("ready")
        self.profiler.start("idle")
        self._idle()
        phases.mark("idle")
        self.profiler.start("terminate")
        self._terminate()
        phases.mark("terminate")
        self.profiler.start("cleanup")
        self._cleanup()
        phases.mark("cleanup")
        self.profiler.stop()
        self._resources(phases.table())
        self._correctness()

    def _say(self, line: str) -> None:
        self.log(f"[{self.scenario.name}] {line}")

    def _deploy(self, payloads: dict[str, bytes]) -> None:
        self._say(f"deploy: {self.scenario.describe()} ...")
        figures = self.figures
        probe = CreationProbe(self.kube, self.options.server_profile_seconds,
                              _results_path(self.options, self.scenario, "daemon-apiserver.pprof"))
        probe.begin()
        sent = time.monotonic()
        for sim, payload in payloads.items():
            self.so.deploy_encoded(sim, payload)
        created = self.watch.wait("added", self.all_pods, self.deadline, self.daemon.check_alive)
        # A simulation's DeployModels to its first pod: what admission (a save, a read of the quotas, a save) adds.
        first_pods = [(min(self.watch.times.added[name] for name in self.pods[sim]) - sent) * 1000 for sim in payloads]
        figures["first_pod_after_deploy_ms"] = round(statistics.median(first_pods), 1)
        figures["first_pod_after_deploy_max_ms"] = round(max(first_pods), 1)
        if (server := probe.end(len(self.all_pods))) is not None:
            self.result.setdefault("server_breakdown", {})["daemon"] = server
        running = self.watch.wait("running", self.all_pods, self.deadline, self.daemon.check_alive)
        figures["creation_seconds"] = round(created - sent, 3)
        figures["daemon_pods_per_second"] = round(len(self.all_pods) / (created - sent), 1)
        figures["all_running_seconds"] = round(running - sent, 3)
        if "ceiling_pods_per_second" in figures:
            figures["creation_fraction_of_ceiling"] = round(
                figures["daemon_pods_per_second"] / figures["ceiling_pods_per_second"], 3)
        self._say(f"deploy: {figures['daemon_pods_per_second']:,.0f} pods/s, all running after "
                  f"{figures['all_running_seconds']:.1f} s; a simulation's first pod after "
                  f"{figures['first_pod_after_deploy_ms']:.0f} ms (median)")
        if self.options.quota and self.daemon.env.get("QUOTA_ADMISSION", "true").lower() not in ("false", "0"):
            self._admission_waits()  # (with admission off, the quota's own cost alone is measured)

    def _admission_waits(self) -> None:
        """How long the simulations waited in the admission queue: the daemon's ``mso_admission_wait_seconds``."""
        port = self.daemon.env["HTTP_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        found = dict(re.findall(r"^mso_admission_wait_seconds_(sum|count) (\S+)$", text, re.MULTILINE))
        if float(found.get("count", 0)) != len(self.pods):
            raise RuntimeError(f"{found.get('count')} simulations admitted of {len(self.pods)}")
        self.figures["admission_wait_mean_ms"] = round(float(found["sum"]) / float(found["count"]) * 1000, 1)
        self._say(f"deploy: a simulation waited {self.figures['admission_wait_mean_ms']:.0f} ms for its admission "
                  "(mean)")

    def _settle(self) -> None:
        """Wait until the daemon has caught up (under 10 % of a core for half a second): what it still had to do
        after the last pod was Running (its watch lagging behind, records being saved) belongs to the deploy."""
        started = time.monotonic()
        previous = sample(self.daemon.pid).cpu_seconds
        while time.monotonic() < self.deadline:
            time.sleep(0.5)
            now = sample(self.daemon.pid).cpu_seconds
            if now - previous < 0.05:
                break
            previous = now
        settled = time.monotonic() - started - 0.5
        self.figures["daemon_busy_after_all_running_seconds"] = round(max(settled, 0.0), 1)
        if settled >= 1.0:
            self._say(f"deploy: the daemon kept busy {settled:.1f} s after the last pod was Running")

    def _ready(self) -> None:
        heard = self.so.heard
        models = self.models
        rate = self.options.ready_rate
        last_ready = {sim: self.publisher.ready(sim, [model_id for model_id, _ in models[sim]], rate=rate)
                      for sim in models}
        _wait_until(lambda: all(sim in heard.models_ready for sim in models), self.deadline, "ModelsReady",
                    self.daemon.check_alive)
        latencies = [(heard.models_ready[sim][0] - last_ready[sim]) * 1000 for sim in models]
        self.figures["models_ready_latency_ms"] = round(max(latencies), 1)
        if len(latencies) > 1:
            self.figures["models_ready_latency_p50_ms"] = round(statistics.median(latencies), 1)
        pace = f"{rate:,.0f}/s" if rate else "a burst"
        self._say(f"ready: ModelsReady {max(latencies):.1f} ms after the last ReadyForProcessing ({pace})")

    def _idle(self) -> None:
        options = self.options
        idle_seconds = options.idle_seconds if options.idle_seconds is not None else self.scenario.idle_seconds
        time.sleep(2.0)  # what the last messages set off (a record save) settles
        self.kube.reset_request_counts()
        window_start = time.monotonic()
        while (elapsed := time.monotonic() - window_start) < idle_seconds:
            self.daemon.check_alive()
            time.sleep(min(1.0, idle_seconds - elapsed))
        counts = self.kube.request_counts()
        window = time.monotonic() - window_start
        verbs = {key: value for key, value in counts.items() if isinstance(value, int) and " " in key}
        watches = sum(value for key, value in verbs.items() if key.startswith("WATCH "))
        total = sum(verbs.values())
        self.result["idle_requests"] = {"window_seconds": round(window, 1), "by_verb": verbs,
                                        "by_status": counts.get("by_status", {}),
                                        "other_clients": counts.get("other_clients", {})}
        self.figures["idle_requests_per_minute"] = round(total * 60 / window, 2)
        self.figures["idle_requests_per_minute_excluding_watch"] = round((total - watches) * 60 / window, 2)
        self._say(f"idle: {total} API requests in {window:.0f} s ({watches} of them watch renewals)")

    def _terminate(self) -> None:
        client, heard, models, pods = self.client, self.so.heard, self.models, self.pods
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{{}}/status"

        def terminate(pod: str) -> float:
            client.request("PATCH", path.format(pod), terminated_status_patch(pod),
                           content_type="application/merge-patch+json")
            return time.monotonic()

        self._say(f"terminate: PATCHing {len(self.all_pods):,} pods from {self.options.patch_threads} threads ...")
        with ThreadPoolExecutor(max_workers=self.options.patch_threads, thread_name_prefix="patch") as pool:
            patched = dict(zip(self.all_pods, pool.map(terminate, self.all_pods), strict=True))
        patched_all = max(patched.values())
        self._last_patch = patched_all

        def answered() -> bool:
            if len(heard.terminated) >= len(self.all_pods) and all(sim in heard.all_terminated for sim in models):
                return True
            # A lost message never comes: after a quiet spell the run goes on, and the checks say what is missing.
            quiet = time.monotonic() - max(heard.last_arrival, patched_all)
            if quiet > self.options.quiet_seconds:
                self._say(f"terminate: nothing heard for {quiet:.0f} s, {len(self.all_pods) - len(heard.terminated)} "
                          f"ModelHasTerminated and {len(models) - len(heard.all_terminated)} AllModelsHaveTerminated "
                          "missing")
                return True
            return False

        _wait_until(answered, self.deadline, "every ModelHasTerminated and AllModelsHaveTerminated",
                    self.daemon.check_alive)
        # (when the PATCH returned, its latency in ms), for every model the SO heard of
        samples = [(patched[pod], (heard.terminated[(sim, model_id)][0] - patched[pod]) * 1000)
                   for sim in models for (model_id, _), pod in zip(models[sim], pods[sim], strict=True)
                   if (sim, model_id) in heard.terminated]
        latencies = [latency for _, latency in samples]
        figures = self.figures
        figures["termination_p50_ms"] = round(percentile(latencies, 0.50), 1)
        figures["termination_p99_ms"] = round(percentile(latencies, 0.99), 1)
        figures["termination_max_ms"] = round(max(latencies), 1)
        figures["patch_seconds"] = round(max(patched.values()) - min(patched.values()), 3)
        self.result["termination_latency_by_tenth_of_patching"] = _by_tenth(samples)
        all_latencies = [(heard.all_terminated[sim][0] - max(patched[pod] for pod in pods[sim])) * 1000
                         for sim in models if sim in heard.all_terminated]
        if all_latencies:
            figures["all_terminated_latency_ms"] = round(max(all_latencies), 1)
        self._say(f"terminate: p50 {figures['termination_p50_ms']:.1f} ms, p99 {figures['termination_p99_ms']:.1f} "
                  f"ms, AllModelsHaveTerminated {figures.get('all_terminated_latency_ms', '(missing)')} ms after the "
                  "last PATCH")

    def _cleanup(self) -> None:
        records = records_selector(SO)

        def records_gone() -> bool:
            return not any(self.client.request(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/{kind}?labelSelector={records}")["items"]
                for kind in ("configmaps", "secrets"))

        gone = self.watch.wait("deleted", self.all_pods, self.deadline, self.daemon.check_alive)
        _wait_until(records_gone, self.deadline, "the simulation records to be deleted", self.daemon.check_alive)
        self.figures["cleanup_seconds"] = round(gone - self._last_patch, 3)
        self._say(f"cleanup: every pod deleted {self.figures['cleanup_seconds']:.1f} s after the last PATCH")

    def _resources(self, phase_table: dict[str, dict[str, float]]) -> None:
        after = sample(self.daemon.pid)
        figures = self.figures
        self.result["phases"] = phase_table
        lifecycle = sum(phase_table[phase]["daemon_cpu_seconds"] for phase in ("deploy", "ready", "terminate",
                                                                                "cleanup"))
        figures["daemon_cpu_seconds"] = round(lifecycle, 2)
        figures["daemon_cpu_seconds_per_1000_models"] = round(lifecycle * 1000 / len(self.all_pods), 3)
        figures["daemon_idle_cpu_seconds_per_minute"] = round(
            phase_table["idle"]["daemon_cpu_seconds"] * 60 / phase_table["idle"]["seconds"], 3)
        figures["daemon_peak_rss_mib"] = round(after.peak_rss_mb, 1)
        figures["daemon_rss_at_end_mib"] = round(after.rss_mb, 1)

    def _correctness(self) -> None:
        """Exactly one answer of each kind, nothing failed."""
        time.sleep(0.5)  # a duplicate would arrive about now
        heard, models = self.so.heard, self.models
        expected = {(sim, model_id) for sim in models for model_id, _ in models[sim]}
        missing = len(expected - heard.terminated.keys())
        duplicated = sum(1 for times in heard.terminated.values() if len(times) > 1)
        ready_counts = sorted({len(heard.models_ready.get(sim, [])) for sim in models})
        all_counts = sorted({len(heard.all_terminated.get(sim, [])) for sim in models})
        self.result["correct"] = not missing and not duplicated and ready_counts == [1] and all_counts == [1]
        self.result["correctness"] = {
            "models": len(expected),
            "model_has_terminated_missing": missing,
            "model_has_terminated_duplicated": duplicated,
            "model_has_terminated_not_successful": sum(1 for key in expected
                                                       if heard.exit_codes.get(key) != (0, 0)),
            "models_ready_per_simulation": ready_counts,
            "all_terminated_per_simulation": all_counts,
            "other_messages": dict(heard.other),
        }


def _quota(client: HttpClient, scenario: Scenario) -> dict[str, str]:
    """A ResourceQuota in the namespace that holds every pod of the scenario (a CPU and a GiB per model, far more
    than they request): admission runs for each simulation and admits it at once."""
    hard = {"pods": str(2 * scenario.models), "requests.cpu": str(scenario.models),
            "requests.memory": f"{scenario.models}Gi"}
    client.request("POST", f"/api/v1/namespaces/{NAMESPACE}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "bench"}, "spec": {"hard": hard}})
    return hard


def _by_tenth(samples: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Latencies (ms) by when their PATCH returned, in ten equal slices of the patching: where the tail is."""
    if not samples:
        return []
    start = min(at for at, _ in samples)
    span = max(at for at, _ in samples) - start or 1.0
    tenths: list[list[float]] = [[] for _ in range(10)]
    for at, latency in samples:
        tenths[min(9, int((at - start) / span * 10))].append(latency)
    return [{"count": len(values), "p50_ms": round(percentile(values, 0.5), 1),
             "p99_ms": round(percentile(values, 0.99), 1), "max_ms": round(max(values), 1)}
            for values in tenths if values]
