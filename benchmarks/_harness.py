"""What every benchmark module shares: the run's options, progress lines, the
machine's description and the results folder.

The options reach each module's ``main()`` through the environment, so that a
module takes no arguments and runs the same under ``python -m benchmarks`` and on
its own (``python -m benchmarks.hub``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

QUICK_ENV = "RCM_BENCH_QUICK"
RUN_ID_ENV = "RCM_BENCH_RUN_ID"
RESULTS_ENV = "RCM_BENCH_RESULTS"
PORTS_ENV = "RCM_BENCH_PORTS"
PROFILE_ENV = "RCM_BENCH_PROFILE"
CLIENTS_ENV = "RCM_BENCH_CLIENTS"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = (22000, 22999)


def quick() -> bool:
    """True in quick mode: fewer, shorter steps (about two minutes in all)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def profile_requested() -> bool:
    """True when the run should record a profile of the hub at saturation."""
    return os.environ.get(PROFILE_ENV, "") not in ("", "0")


def run_id() -> str:
    """One id per ``python -m benchmarks`` run, shared by every module's result, so
    that the report only divides figures taken in the same run."""
    existing = os.environ.get(RUN_ID_ENV)
    if existing:
        return existing
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    os.environ[RUN_ID_ENV] = stamp
    return stamp


def results_dir() -> Path:
    path = Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "bench-results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_result(name: str, document: dict[str, Any]) -> Path:
    """Write one module's figures as ``bench-results/<name>.json``."""
    record = {
        "benchmark": name,
        "run_id": run_id(),
        "quick": quick(),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "machine": machine(),
        **document,
    }
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", "utf-8")
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    say(f"{name}: results in {shown}")
    return path


def read_results() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir().glob("*.json")):
        if path.name == "summary.json":
            continue
        try:
            document = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and "benchmark" in document:
            found[str(document["benchmark"])] = document
    return found


_started = time.monotonic()


def say(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the run began."""
    print(
        f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory.total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(load[0], 2),
    }


def raise_fd_limit(wanted: int = 65536) -> int:
    """Lift the soft limit on open files as far as the hard limit allows; the
    10,000-stream steps need more than the usual 1,024. Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class PortPool:
    """Hands out ports of the benchmark's range, a fresh one per server start, so
    that no step meets the TIME_WAIT sockets of the one before."""

    def __init__(self) -> None:
        low, high = DEFAULT_PORTS
        configured = os.environ.get(PORTS_ENV)
        if configured:
            first, _, last = configured.partition("-")
            low, high = int(first), int(last or first)
        self._low, self._high = low, high
        self._next = low + (os.getpid() % 7) * 13

    def take(self) -> int:
        for _ in range(self._high - self._low + 1):
            port = self._next
            self._next = self._next + 1 if self._next < self._high else self._low
            if port_free(port):
                return port
        raise RuntimeError(f"no free port in {self._low}-{self._high} on 127.0.0.1")


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (sockets left in TIME_WAIT do not count, as the
    servers under test bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


ports = PortPool()
