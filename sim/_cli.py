"""``rcm-realtime sim``: run a world for a simulated duration and report.

The world comes from a TOML or JSON file, or from the defaults; flags override the
file. The summary table goes to stdout, progress to stderr, and the files to
``--out``: ``series.csv`` (the contract's metrics per replica over time),
``clients.jsonl`` and ``batches.jsonl`` (the truth). The same world and seed give
the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from pydantic import TypeAdapter

from hub._flags import positive_float

from ._config import WorldConfig, WorldConfigError, check_world, load_world
from ._world import Progress, World

DEFAULT_OUT = "reports/sim"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcm-realtime sim",
        description=(
            "Simulate replicas, a bus, clients, deploys and faults around the hub's "
            "own core; print a summary, write the metrics as CSV and the truth per "
            "client and per batch as JSON lines."
        ),
    )
    parser.add_argument(
        "world", nargs="?", help="world file (.toml or .json); default: built-in"
    )
    parser.add_argument("--duration", type=positive_float, help="simulated seconds")
    parser.add_argument("--seed", type=int, help="world seed")
    parser.add_argument("--replicas", type=_count, help="hub replicas")
    parser.add_argument("--tenants", type=_count, help="tenants")
    parser.add_argument("--subscribers", type=_count, help="open streams in all")
    parser.add_argument(
        "--rate", type=positive_float, help="events/s of the emitters in all (scaled)"
    )
    parser.add_argument(
        "--sample-interval", type=positive_float, help="seconds between metric samples"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output directory ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--print-world",
        action="store_true",
        help="print the effective world as JSON (a valid world file) and exit",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--verbose", action="store_true", help="log deploys, faults and ejections"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world = _world(args)
    if args.print_world:
        document = TypeAdapter(WorldConfig).dump_python(world, mode="json")
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("sim")
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False

    progress = _ProgressLine(sys.stderr, enabled=not args.quiet)
    built = time.perf_counter()
    simulation = World(world, source=args.world or "<built-in world>")
    progress.say(
        f"world built in {time.perf_counter() - built:.1f} s: "
        f"{world.topology.replicas} replicas, {len(simulation.population.tenants)} "
        f"tenants, {len(simulation.clients):,} clients; simulating "
        f"{world.duration_s:g} s + {world.settle:g} s settle"
    )
    result = simulation.run(progress.update)
    progress.done(result.wall_s)

    out = Path(args.out)
    try:
        paths = result.write(out)
    except OSError as error:
        raise WorldConfigError(
            f"cannot write the results ({error.strerror or error})",
            source=f"--out {out}",
        ) from error
    sys.stdout.write(result.summary_table())
    sys.stdout.write("files: " + ", ".join(str(path) for path in paths) + "\n")
    if result.ledger_violations:
        first = result.ledger_violations[0]
        sys.stderr.write(
            f"rcm-realtime sim: the ledger broke {len(result.ledger_violations)} "
            f"times; first at {first.time_s:g} s on {first.replica} for tenant "
            f"{first.tenant_id}: {first.detail}\n"
        )
        return 1
    return 0


def _world(args: argparse.Namespace) -> WorldConfig:
    source = args.world or "<built-in world>"
    world = load_world(args.world) if args.world else WorldConfig()
    top: dict[str, Any] = {}
    topology: dict[str, Any] = {}
    if args.duration is not None:
        top["duration_s"] = args.duration
    if args.seed is not None:
        top["seed"] = args.seed
    if args.sample_interval is not None:
        top["sample_interval_s"] = args.sample_interval
    if args.replicas is not None:
        topology["replicas"] = args.replicas
    if args.tenants is not None:
        topology["tenants"] = args.tenants
    if args.subscribers is not None:
        topology["subscribers"] = args.subscribers
    if topology:
        top["topology"] = replace(world.topology, **topology)
    if args.rate is not None:
        emitters = world.workload.emitters
        total = sum(emitter.rate_per_s for emitter in emitters)
        if not emitters or total <= 0:
            raise WorldConfigError(
                "--rate scales the emitters, and this world has none",
                source=source,
                key="workload.emitters",
            )
        factor = args.rate / total
        scaled = tuple(
            replace(emitter, rate_per_s=emitter.rate_per_s * factor)
            for emitter in emitters
        )
        top["workload"] = replace(world.workload, emitters=scaled)
    if not top:
        return world
    world = replace(world, **top)
    check_world(world, source=f"{source} with the command-line flags")
    return world


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


class _ProgressLine:
    """One line on stderr, rewritten in place on a terminal, else every tenth."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._last_wall = -1.0
        self._last_tenth = -1

    def say(self, text: str) -> None:
        if self._enabled:
            self._stream.write(f"sim: {text}\n")
            self._stream.flush()

    def update(self, progress: Progress) -> None:
        if not self._enabled:
            return
        share = progress.sim_s / progress.end_s if progress.end_s else 1.0
        line = (
            f"sim: {progress.sim_s:,.0f}/{progress.end_s:,.0f} s ({share:5.1%}), "
            f"{progress.published:,} events, {progress.delivered:,} deliveries, "
            f"{progress.clients_connected:,} streams, {progress.wall_s:.1f} s wall"
        )
        if self._tty:
            if progress.wall_s - self._last_wall >= 0.2 or share >= 1.0:
                self._last_wall = progress.wall_s
                self._stream.write("\r" + line + "\x1b[K")
                self._stream.flush()
            return
        tenth = int(share * 10)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            self._stream.write(line + "\n")
            self._stream.flush()

    def done(self, wall_s: float) -> None:
        if not self._enabled:
            return
        if self._tty:
            self._stream.write("\n")
        self._stream.write(f"sim: done in {wall_s:.1f} s wall\n")
        self._stream.flush()
