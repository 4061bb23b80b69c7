"""A sampling profile of a running server, taken with py-spy, summarised by function.

py-spy reads the target's stacks from outside (no instrumentation in the hub), so
the profile costs the measured process nothing but the pauses of its sampling.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ._harness import REPO_ROOT, say


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Sample ``pid`` for ``seconds``; the collapsed stacks go to ``out``."""
    binary = py_spy()
    if binary is None:
        await asyncio.sleep(seconds)
        return {"error": "py-spy is not installed (pip install py-spy)"}
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    if process.returncode != 0 or not out.exists():
        message = errors.decode("utf-8", "replace").strip().splitlines()[-1:]
        say(f"  py-spy failed: {message}")
        return {"error": f"py-spy failed: {message}"}
    summary = summarise(out.read_text("utf-8", "replace"))
    summary["stacks_file"] = str(
        out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
    )
    return summary


def summarise(collapsed: str, top: int = 20) -> dict[str, Any]:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / total, 4)}
            for name, count in counter.most_common(top)
        ]

    return {"samples": total, "self": shares(own), "inclusive": shares(inclusive)}


def _short(frame: str) -> str:
    """``function (path/to/module.py:12)`` without the line and the long path."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = path.replace(str(REPO_ROOT) + "/", "")
    return f"{name} ({path})" if path else name
