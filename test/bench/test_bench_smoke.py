"""The benchmark suite, scaled down to one simulation of 50 models: it runs end to end and the answers are right.

No timing is asserted (the machine is shared); only what the SO must hear:
one ModelsReady, one ModelHasTerminated per model (SUCCESSFULL, exit 0), one
AllModelsHaveTerminated, and a cluster left clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.report import verdicts, write_result
from bench.runner import RunOptions, run_scenario
from bench.scenarios import custom
from bench.stack import TUNED_BROKER


def _run(tmp_path: Path, broker_config: tuple[str, ...] = (), ready_rate: float = 0.0,
         server_profile_seconds: int = 0) -> dict[str, Any]:
    options = RunOptions(results_dir=tmp_path, ceiling=False, idle_seconds=1.0, quiet_seconds=5.0,
                         patch_threads=16, broker_config=broker_config, ready_rate=ready_rate,
                         server_profile_seconds=server_profile_seconds)
    return run_scenario(custom(1, 50, idle_seconds=1.0), options, log=lambda _line: None)


def _assert_correct(result: dict[str, Any]) -> None:
    correctness = result["correctness"]
    assert correctness["models"] == 50
    assert correctness["model_has_terminated_missing"] == 0, correctness
    assert correctness["model_has_terminated_duplicated"] == 0, correctness
    assert correctness["model_has_terminated_not_successful"] == 0, correctness
    assert correctness["models_ready_per_simulation"] == [1], correctness
    assert correctness["all_terminated_per_simulation"] == [1], correctness
    assert result["correct"] is True
    assert result["daemon_exit_code"] == 0


@pytest.mark.timeout(180)
def test_the_smallest_scenario_scaled_down_gets_every_answer_once(tmp_path: Path) -> None:
    # Against the deployment's broker config as it is: with Mosquitto's default max_inflight_messages (20),
    # a daemon with more unacknowledged QoS 2 publishes than that loses lifecycle messages.
    result = _run(tmp_path, server_profile_seconds=1)
    _assert_correct(result)
    # Where kube-apiserver's time went during the deploy: one POST per pod, etcd's writes, a CPU profile.
    server = result["server_breakdown"]["daemon"]
    creates = next(row for row in server["requests"] if row["request"] == "POST pods")
    assert (creates["count"], creates["per_pod"]) == (50, 1.0) and creates["server_ms_per_pod"] > 0
    assert server["etcd_put_bytes_per_pod"] > 0 and server["etcd_puts_per_pod"] >= 1
    assert (tmp_path / server["cpu_profile"]["file"]).stat().st_size > 0
    # Every figure the report needs was measured, and the JSON file is written.
    for key in ("daemon_pods_per_second", "models_ready_latency_ms", "termination_p99_ms",
                "idle_requests_per_minute_excluding_watch", "daemon_peak_rss_mib",
                "daemon_cpu_seconds_per_1000_models", "cleanup_seconds"):
        assert key in result["figures"], key
    assert {v["verdict"] for v in verdicts(result)} <= {"PASS", "MISS"}
    tenths = result["termination_latency_by_tenth_of_patching"]
    assert sum(tenth["count"] for tenth in tenths) == 50
    assert write_result(result, tmp_path).is_file()


@pytest.mark.timeout(180)
def test_the_same_with_the_tuned_broker_and_paced_readiness(tmp_path: Path) -> None:
    result = _run(tmp_path, TUNED_BROKER, ready_rate=500)
    _assert_correct(result)
    assert result["ready_rate_per_second"] == 500
