"""The targets, the verdicts, the printed table and the JSON file of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "Target", "render_table", "verdicts", "write_result"]


@dataclass(frozen=True)
class Target:
    key: str  # in result["figures"]
    label: str
    limit: float
    unit: str
    at_least: bool  # True: the figure must be >= limit; False: <= limit

    def describe(self) -> str:
        limit = f"{self.limit:.0%}" if self.unit == "%" else f"{self.limit:g} {self.unit}".strip()
        return f"{'>=' if self.at_least else '<='} {limit}"


# The targets, stated for 10,000 models on a 2-core machine.
TARGETS = (
    Target("creation_fraction_of_ceiling", "pod creation rate, fraction of the API ceiling", 0.80, "%", True),
    Target("models_ready_latency_ms", "ModelsReady after the last ReadyForProcessing", 50, "ms", False),
    Target("termination_p99_ms", "termination latency p99", 250, "ms", False),
    Target("idle_requests_per_minute_excluding_watch", "API requests/min when idle, watch renewals apart", 2,
           "/min", False),
    Target("daemon_peak_rss_mib", "daemon peak RSS", 150, "MiB", False),
    Target("daemon_cpu_seconds_per_1000_models", "daemon CPU per 1,000 models", 2, "s", False),
)

# Every figure in the order the table shows it: (key, label, unit).
_ROWS = (
    ("ceiling_pods_per_second", "API ceiling: pods created/s by a plain client", "/s"),
    ("daemon_pods_per_second", "daemon: pods created/s (DeployModels -> last pod seen)", "/s"),
    ("creation_fraction_of_ceiling", "  daemon / ceiling", "%"),
    ("all_running_seconds", "DeployModels -> every pod Running", "s"),
    ("daemon_busy_after_all_running_seconds", "  the daemon still busy after that (catching up)", "s"),
    ("models_ready_latency_ms", "last ReadyForProcessing -> ModelsReady (worst simulation)", "ms"),
    ("models_ready_latency_p50_ms", "  median over simulations", "ms"),
    ("termination_p50_ms", "PATCH terminated -> ModelHasTerminated, p50", "ms"),
    ("termination_p99_ms", "  p99", "ms"),
    ("termination_max_ms", "  max", "ms"),
    ("patch_seconds", "  time the driver took to PATCH every pod", "s"),
    ("all_terminated_latency_ms", "last PATCH -> AllModelsHaveTerminated (worst simulation)", "ms"),
    ("cleanup_seconds", "last PATCH -> every pod deleted", "s"),
    ("idle_requests_per_minute", "idle API requests/min, all", "/min"),
    ("idle_requests_per_minute_excluding_watch", "  watch renewals apart", "/min"),
    ("daemon_idle_cpu_seconds_per_minute", "daemon CPU when idle", "s/min"),
    ("daemon_rss_before_deploy_mib", "daemon RSS before DeployModels", "MiB"),
    ("daemon_peak_rss_mib", "daemon peak RSS (VmHWM)", "MiB"),
    ("daemon_cpu_seconds", "daemon CPU, deploy -> cleanup done (idle window apart)", "s"),
    ("daemon_cpu_seconds_per_1000_models", "  per 1,000 models", "s"),
)


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS or MISS for every target whose figure was measured."""
    figures = result.get("figures", {})
    found = []
    for target in TARGETS:
        value = figures.get(target.key)
        if value is None:
            continue
        passed = value >= target.limit if target.at_least else value <= target.limit
        found.append({"key": target.key, "label": target.label, "value": value, "target": target.describe(),
                      "verdict": "PASS" if passed else "MISS"})
    return found


def _format(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.0%}"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}" if isinstance(value, float) else f"{value} {unit}"


def render_table(results: list[dict[str, Any]]) -> str:
    """One column per scenario; the target and each scenario's verdict beside each figure that has one."""
    targets = {target.key: target for target in TARGETS}
    names = [result["scenario"] for result in results]
    width = max(len(label) for _, label, _ in _ROWS) + 2
    header = f"{'figure':<{width}}" + "".join(f"{name:>16}" for name in names) + f"  {'target':<12}"
    lines = [header, "-" * len(header)]
    for key, label, unit in _ROWS:
        values = [result.get("figures", {}).get(key) for result in results]
        if all(value is None for value in values):
            continue
        line = f"{label:<{width}}" + "".join(f"{_format(value, unit):>16}" for value in values)
        if (target := targets.get(key)) is not None:
            marks = []
            for value in values:
                if value is None:
                    marks.append("-")
                else:
                    passed = value >= target.limit if target.at_least else value <= target.limit
                    marks.append("PASS" if passed else "MISS")
            line += f"  {target.describe():<12} {' '.join(marks)}"
        lines.append(line)
    lines.append("")
    lines.append("Targets are the issue's, stated for 10,000 models on a 2-core machine.")
    return "\n".join(lines)


def write_result(result: dict[str, Any], results_dir: Path, tag: str = "") -> Path:
    """``<results_dir>/<date>-<scenario>[-<tag>].json``, with the verdicts."""
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = (f"-{tag}" if tag else "") + ("-profiled" if "profiles" in result else "")
    path = results_dir / f"{result['started_at'][:10]}-{result['scenario']}{suffix}.json"
    path.write_text(json.dumps({**result, "targets": verdicts(result)}, indent=2, sort_keys=False) + "\n")
    return path
