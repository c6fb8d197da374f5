"""What Linux says about a process: CPU seconds and memory, from ``/proc/<pid>``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessSample", "sample"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    cpu_seconds: float  # utime + stime, all threads
    rss_mb: float  # VmRSS now
    peak_rss_mb: float  # VmHWM: the high-water mark since start


def sample(pid: int) -> ProcessSample:
    """CPU and memory of ``pid`` now; raises ``FileNotFoundError`` when it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    memory: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024  # kB -> MB
    return ProcessSample(cpu_seconds=(utime + stime) / _CLOCK_TICKS, rss_mb=memory.get("VmRSS", 0.0),
                         peak_rss_mb=memory.get("VmHWM", 0.0))
