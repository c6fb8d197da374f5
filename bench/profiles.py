"""Reading py-spy's collapsed stacks: where the samples went, by function, by library, and by daemon function.

A line of ``py-spy record --format raw`` is ``frame;frame;...;frame COUNT``,
outermost first, each frame ``function (path:line)``. Functions are counted
without their line numbers, with paths shortened to the package.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROFILE_RATE", "ProfileSummary", "summarize"]

PROFILE_RATE = 200  # Hz, what bench.stack.Profiler samples at

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
_OURS = "model_services_orchestrator/"


def _short_path(path: str) -> str:
    if _OURS in path:
        return path[path.index(_OURS):]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path[path.index(marker) + len(marker):]
            return re.sub(r"^\.?\d+(\.\d+)?/", "", path)  # python3.11/asyncio/x.py -> asyncio/x.py
    return path


def _frame(raw: str) -> tuple[str, str]:
    """(``function (path)``, the library it belongs to)."""
    match = _FRAME.match(raw.strip())
    if match is None:
        return raw.strip(), "?"
    path = _short_path(match.group("path"))
    library = path.split("/", 1)[0].removesuffix(".py") if "/" in path else path.removesuffix(".py")
    if path.startswith(_OURS):
        library = path.removesuffix(".py")
    return f"{match.group('function')} ({path})", library


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    self_top: list[tuple[str, int]]
    by_library: list[tuple[str, int]]
    ours_inclusive: list[tuple[str, int]]

    def render(self, title: str, rate: int = PROFILE_RATE) -> str:
        lines = [f"{title}: {self.samples} samples = {self.samples / rate:.2f} s holding the GIL ({rate} Hz)"]
        if not self.samples:
            return lines[0]

        def block(heading: str, rows: list[tuple[str, int]]) -> None:
            lines.append(f"  {heading}")
            lines.extend(f"    {count / self.samples:6.1%}  {name}" for name, count in rows)

        block("self time by function:", self.self_top)
        block("self time by library (the daemon's modules by name):", self.by_library)
        block("inclusive time of the daemon's own functions:", self.ours_inclusive)
        return "\n".join(lines)


def summarize(path: Path, top: int = 20) -> ProfileSummary:
    """The top functions and libraries of one collapsed-stacks file."""
    own: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";") if frame]
        # py-spy roots stacks in process/thread pseudo-frames when asked to; skip them if present.
        frames = [frame for frame in frames if not frame[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        libraries[frames[-1][1]] += count
        for name in {name for name, library in frames if library.startswith(_OURS.rstrip("/"))}:
            ours[name] += count
    return ProfileSummary(samples=total, self_top=own.most_common(top), by_library=libraries.most_common(top),
                          ours_inclusive=ours.most_common(top))
