"""``python -m benchmarks [NAMES...]``: run the benchmark modules, then the report.

Each module in ``MODULES`` that exists is imported and its ``main()`` called in
turn; a module that fails is reported and the others still run. Options reach the
modules through the environment (see ``benchmarks._harness``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TextIO

from ._harness import (
    CLIENTS_ENV,
    PROFILE_ENV,
    QUICK_ENV,
    machine,
    results_dir,
    run_id,
    say,
)

# In running order. Modules written elsewhere join by existing: the harness looks
# each one up and skips those not (yet) in the tree.
MODULES = (
    "hub",
    "hub_uvloop",
    "naive",
    "nchan",
    "sim_baselines",
    "sim_speed",
    "bus_hop",
)
REPORT = "report"
QUICK_SKIPS = ("hub_uvloop",)
ALIASES = {"hub-uvloop": "hub_uvloop", "uvloop": "hub_uvloop", "sim": "sim_baselines"}
UPDATE_DOCS_ENV = "RCM_BENCH_UPDATE_DOCS"


def available(name: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{name}") is not None


def parse(argv: Sequence[str]) -> argparse.Namespace:
    present = [name for name in MODULES if available(name)]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Side-by-side benchmarks: the hub against nchan and a naive hub, the "
            "simulator's baselines. Results go to bench-results/ as JSON, with a "
            "summary and a plot."
        ),
        epilog=f"benchmarks present: {', '.join(present)} (and {REPORT})",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run (default: all present); 'report' only re-summarises",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter windows and no uvloop variant unless named: about two minutes",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record a py-spy profile of the hub at saturation with 1,000 streams",
    )
    parser.add_argument(
        "--clients",
        type=int,
        metavar="N",
        help="client worker processes (default: one per core, at most 4)",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the figures section of docs/benchmarks.md and its plot",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip the summary at the end"
    )
    args = parser.parse_args(argv)
    names: list[str] = []
    for raw in args.names:
        name = ALIASES.get(raw, raw)
        if name != REPORT and name not in MODULES:
            parser.error(f"no benchmark {raw!r}; choose from {', '.join(present)}")
        if name != REPORT and not available(name):
            parser.error(f"benchmark {raw!r} is not in this tree yet")
        names.append(name)
    if not names and args.quick:
        # The quick run keeps to the comparison itself; uvloop only when named.
        present = [name for name in present if name not in QUICK_SKIPS]
    args.selected = names or present
    return args


class _Tee(io.TextIOBase):
    """Prints as usual and keeps a copy: a module that only prints its figures
    still has them in bench-results/<name>.txt for the report."""

    def __init__(self, stream: TextIO, copy: TextIO) -> None:
        self._stream = stream
        self._copy = copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._copy.flush()
        self._stream.flush()


def run_module(name: str) -> None:
    module = importlib.import_module(f"{__package__}.{name}")
    # A module may parse its own command line: it gets none of ours.
    saved_argv = sys.argv
    sys.argv = [f"{__package__}.{name}"]
    try:
        with (
            open(results_dir() / f"{name}.txt", "w", encoding="utf-8") as copy,
            contextlib.redirect_stdout(_Tee(sys.stdout, copy)),
        ):
            module.main()
    finally:
        sys.argv = saved_argv


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    if args.profile:
        os.environ[PROFILE_ENV] = "1"
    if args.clients is not None:
        if args.clients < 1:
            print("python -m benchmarks: --clients must be at least 1", file=sys.stderr)
            return 2
        os.environ[CLIENTS_ENV] = str(args.clients)
    if args.update_docs:
        os.environ[UPDATE_DOCS_ENV] = "1"
    run_id()
    host = machine()
    say(
        f"run {run_id()} ({'quick' if args.quick else 'full'}) on {host['nproc']} "
        f"cores, {host['cpu_model']}, Python {host['python']}; load average "
        f"{host['load_average_1m']}; results in {results_dir()}"
    )
    failed: list[str] = []
    started = time.monotonic()
    for name in args.selected:
        if name == REPORT:
            continue
        say(f"== {name}")
        try:
            run_module(name)
        except KeyboardInterrupt:
            say(f"{name}: interrupted")
            return 130
        except Exception:
            failed.append(name)
            say(f"{name}: FAILED\n{traceback.format_exc()}")
    if not args.no_report:
        from . import report

        ran = [name for name in args.selected if name != REPORT]
        report.main(run_id() if ran else None)
    minutes = (time.monotonic() - started) / 60
    if failed:
        say(f"done in {minutes:.1f} min; FAILED: {', '.join(failed)}")
        return 1
    say(f"done in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
