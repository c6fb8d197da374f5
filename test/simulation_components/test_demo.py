"""The demo a newcomer runs first (``ci/demo.sh``): it must reach its end and say plainly what happened.

Why this exists: the demo is the project's first impression and its quickest end-to-end check on a new
machine; a demo that hangs, dumps environments or ends without a summary is a bug.
"""

from __future__ import annotations

import subprocess
import sys

from simulation_components.demo import DemoRun, expected_exit_codes, summary
from simulation_components.local_daemon import REPO_ROOT


def test_the_summary_marks_an_answer_that_is_not_as_expected() -> None:
    run = DemoRun(expected=expected_exit_codes(3),
                  answers={"0-model": ("SUCCESSFULL", 0), "1-model": ("FAILED", -2)},
                  times={"begin": 0.0, "deploy": 4.0, "ModelsReady": 5.0, "AllModelsHaveTerminated": 7.5, "end": 8.0})
    lines = summary(run)
    assert not run.as_expected
    assert any(line.split()[:2] == ["1-model", "FAILED"] and "not as expected" in line for line in lines)
    assert any(line.split()[:3] == ["2-model", "none", "-"] and "not as expected" in line for line in lines)
    assert "  DeployModels -> ModelsReady: 1.0 s" in lines
    assert "  ModelsReady -> AllModelsHaveTerminated: 2.5 s" in lines


def test_the_demo_runs_to_its_summary() -> None:
    result = subprocess.run([sys.executable, "-m", "simulation_components.demo", "--models", "3"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    steps = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert steps.index("ModelsReady: every model is ready; the SO may start the simulation") > max(
        steps.index(f"{model} is running and ready (it sent ReadyForProcessing)") for model in ("0-model", "2-model"))
    assert "1-model ended: FAILED, exit code 3 (on purpose)" in steps
    assert "2-model ended: FAILED, exit code 4 (on purpose)" in steps
    assert "0-model ended: SUCCESSFULL, exit code 0" in steps
    assert steps.index("AllModelsHaveTerminated: the simulation is over; the orchestrator cleans up its pods") > max(
        index for index, step in enumerate(steps) if " ended: " in step)
    table = out[out.index("Summary"):]
    assert "models: 3; answers: 1 x exit code 0, 1 x exit code 3, 1 x exit code 4" in table
    assert "not as expected" not in table
    assert "orchestrator's log" not in out  # shown only when something went wrong
