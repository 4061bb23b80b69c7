"""``rcm-realtime capacity``: calibrate, plan and check."""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from hub._flags import port, positive_int

from ._calibrate import calibrate
from ._calibration import (
    Calibration,
    default_path,
    load_calibration,
    save_calibration,
)
from ._check import check_point
from ._errors import CapacityError
from ._model import PointResult
from ._plan import DEFAULT_QUEUE_SIZES, Targets, make_plan, parse_replicas
from ._report import describe_workload, draw_plot, plan_json, render_table
from ._workload import load_workload

DEFAULT_PLOT = "reports/capacity-plan.png"
REFERENCE = "reference-calibration.json"
# What one core simulates per second with the CPU model, on the development machine.
SIMULATED_DELIVERIES_PER_S = 300_000


class Progress:
    """Lines on stderr, stamped with the seconds since the command began."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        if self.enabled:
            print(
                f"[{time.monotonic() - self.started:6.1f}s] {message}",
                file=self.stream,
                flush=True,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcm-realtime capacity",
        description=(
            "Measure what the hub costs on this machine, and plan replicas, queue "
            "size and memory for a workload on the simulator with those costs."
        ),
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    calibrate_parser = commands.add_parser(
        "calibrate",
        help="measure the real hub here: CPU per delivery, event and connection, "
        "memory per stream, saturation",
        description=(
            "Start a hub process and the benchmark's load client on 127.0.0.1, run "
            "a few load points and a saturation ramp, and save the figures with a "
            "description of this machine (about 1.5 minutes; --quick about 25 s)."
        ),
    )
    calibrate_parser.add_argument(
        "--out",
        metavar="FILE",
        help=f"where to save the calibration (default {default_path()})",
    )
    calibrate_parser.add_argument(
        "--quick", action="store_true", help="fewer streams, shorter windows"
    )
    calibrate_parser.add_argument(
        "--port", type=port, help="port for the hub (default: a free one)"
    )
    calibrate_parser.add_argument(
        "--quiet", action="store_true", help="no progress on stderr"
    )
    calibrate_parser.set_defaults(run=_run_calibrate)

    plan_parser = commands.add_parser(
        "plan",
        help="replicas, queue size and memory for a workload, from the simulator",
        description=(
            "Simulate the workload's peak on a range of replica counts and queue "
            "sizes with the calibrated costs (each replica one CPU), and answer the "
            "fewest replicas that meet the targets. Workload format: "
            "capacity/example-workload.toml."
        ),
    )
    plan_parser.add_argument("--workload", metavar="TOML", required=True)
    _calibration_argument(plan_parser)
    plan_parser.add_argument(
        "--p99-ms",
        type=_positive_float("--p99-ms"),
        default=100.0,
        help="largest p99 delivery latency, occurredAt to frame written (100)",
    )
    plan_parser.add_argument(
        "--max-drop-rate",
        type=_drop_rate,
        default=0.001,
        help="largest share of frames dropped: 0.001 or 0.1%% (0.1%%)",
    )
    plan_parser.add_argument(
        "--replicas",
        type=parse_replicas,
        help="replica counts to simulate, like 2,4,8 or 1-10 (default: from costs)",
    )
    plan_parser.add_argument(
        "--queue-sizes",
        type=_queue_sizes,
        default=DEFAULT_QUEUE_SIZES,
        help="subscriber queue sizes to simulate (64,256,1024)",
    )
    _share_argument(plan_parser)
    plan_parser.add_argument(
        "--duration",
        type=_positive_float("--duration"),
        default=40.0,
        help="simulated seconds at the peak per point, 5 of them warm-up (40)",
    )
    plan_parser.add_argument("--seed", type=int, help="default: the workload's")
    plan_parser.add_argument(
        "--workers", type=positive_int, help="processes (default: every core)"
    )
    plan_parser.add_argument("--json", action="store_true", help="JSON on stdout")
    plan_parser.add_argument(
        "--plot", metavar="PNG", default=DEFAULT_PLOT, help=f"({DEFAULT_PLOT})"
    )
    plan_parser.add_argument("--no-plot", action="store_true", help="draw no plot")
    plan_parser.add_argument("--quiet", action="store_true", help="no progress")
    plan_parser.set_defaults(run=_run_plan)

    check_parser = commands.add_parser(
        "check",
        help="one operating point: the plan's model against a real load run",
        description=(
            "Measure one replica with --streams streams at --rate events/s with the "
            "benchmark client, predict the same point on the simulator, and say "
            "whether p99 latency and drop rate agree (exit 1 when they do not)."
        ),
    )
    _calibration_argument(check_parser)
    check_parser.add_argument("--streams", type=positive_int, default=300)
    check_parser.add_argument(
        "--rate", type=_positive_float("--rate"), default=40.0, help="events/s (40)"
    )
    check_parser.add_argument("--queue-size", type=positive_int, default=256)
    check_parser.add_argument(
        "--port", type=port, help="port for the hub (default: a free one)"
    )
    check_parser.add_argument("--json", action="store_true", help="JSON on stdout")
    check_parser.add_argument("--quiet", action="store_true", help="no progress")
    check_parser.set_defaults(run=_run_check)
    return parser


def _calibration_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help=f"calibration file (default {default_path()}, else the reference one "
        "measured on the development machine)",
    )


def _share_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu-share",
        type=_share,
        default=1.0,
        help="the share of a CPU each replica process gets (1: a core of its own)",
    )


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.run(args))


# -- calibrate -----------------------------------------------------------------------


def _run_calibrate(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, enabled=not args.quiet)
    out = Path(args.out) if args.out else default_path()
    document = calibrate(quick=args.quick, say=progress.say, port=args.port)
    save_calibration(document, out)
    costs = document["costs"]
    memory = document["memory"]
    saturation = document.get("saturation") or {}
    machine = document["machine"]
    print(f"calibration of {machine['hostname']} saved to {out}")
    print(
        f"  CPU: {costs['per_delivery_s'] * 1e6:.2f} us per delivery, "
        f"{costs['per_event_s'] * 1e6:.0f} us per event, "
        f"{costs['per_connection_s'] * 1e6:.0f} us per connection"
    )
    print(
        f"  memory: {memory['base_rss_bytes'] / 2**20:.0f} MiB idle hub, "
        f"{memory['per_subscriber_bytes'] / 1024:.1f} KiB per stream"
    )
    if saturation.get("deliveries_per_s") is not None:
        print(
            f"  saturation: {saturation['deliveries_per_s']:,.0f} deliveries/s to "
            f"{saturation['streams']} streams ({saturation['stopped_because']})"
        )
    else:
        print(f"  saturation: not measured ({saturation.get('stopped_because')})")
    print(
        f"  machine: load average {machine['load_average_1m_start']} at the start, "
        f"other processes {machine['other_processes_cores_mean']} cores, the hub "
        f"got {machine['hub_cpu_share_mean']} of a CPU while runnable"
    )
    return 0


# -- plan ----------------------------------------------------------------------------


def resolve_calibration(path: str | None, progress: Progress) -> Calibration:
    if path is not None:
        return load_calibration(path)
    mine = default_path()
    if mine.exists():
        return load_calibration(mine)
    reference = importlib.resources.files("capacity").joinpath(REFERENCE)
    with importlib.resources.as_file(reference) as file:
        calibration = load_calibration(file)
    progress.say(
        f"no calibration of this machine ({mine}); using the reference one, "
        f"{calibration.describe()}. `rcm-realtime capacity calibrate` measures this "
        "machine"
    )
    return calibration


def _run_plan(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, enabled=not args.quiet)
    workload = load_workload(args.workload)
    if args.seed is not None:
        if args.seed < 0:
            raise CapacityError(
                f"expected 0 or more, found {args.seed}", where="--seed"
            )
        workload = replace(workload, seed=args.seed)
    calibration = resolve_calibration(args.calibration, progress)
    if args.duration < 15:
        raise CapacityError(
            "expected at least 15 simulated seconds (5 of them warm-up)",
            where="--duration",
        )
    targets = Targets(p99_ms=args.p99_ms, max_drop_rate=args.max_drop_rate)
    workers = args.workers or os.cpu_count() or 1
    progress.say(f"workload: {describe_workload(workload)}")
    deliveries = workload.peak_deliveries_per_s() * args.duration
    progress.say(
        f"each point simulates about {deliveries:,.0f} deliveries (roughly "
        f"{deliveries / SIMULATED_DELIVERIES_PER_S:,.0f} s of one core); --duration "
        "trades precision for time"
    )
    started = time.monotonic()

    def stage(counts: list[int]) -> None:
        progress.say(
            f"simulating {len(counts)} replica counts ({', '.join(map(str, counts))}) "
            f"x {len(args.queue_sizes)} queue sizes on {workers} workers"
        )

    def done(finished: int, total: int, point: PointResult) -> None:
        p99 = "-" if point.p99_ms is None else f"{point.p99_ms:,.1f} ms"
        progress.say(
            f"  {finished}/{total}: replicas {point.replicas}, queue "
            f"{point.queue_size}: p99 {p99}, drops {point.drop_rate:.3%}, CPU "
            f"{point.utilisation_max:.0%} ({point.wall_s:.1f} s)"
        )

    plan = make_plan(
        workload,
        calibration,
        targets,
        replicas=args.replicas,
        queue_sizes=args.queue_sizes,
        cpu_share=args.cpu_share,
        duration_s=args.duration,
        warmup_s=5.0,
        workers=workers,
        progress=done,
        stage=stage,
    )
    progress.say(f"planned in {time.monotonic() - started:.1f} s")
    if args.json:
        json.dump(plan_json(plan), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(plan))
    if not args.no_plot:
        path = Path(args.plot)
        try:
            draw_plot(plan, path)
        except OSError as error:
            raise CapacityError(
                f"cannot write the plot ({error.strerror or error})",
                where=f"--plot {path}",
            ) from error
        progress.say(f"plot written to {path}")
    return 0


# -- check ---------------------------------------------------------------------------


def _run_check(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, enabled=not args.quiet)
    calibration = resolve_calibration(args.calibration, progress)
    result = asyncio.run(
        check_point(
            calibration,
            streams=args.streams,
            events_per_s=args.rate,
            queue_size=args.queue_size,
            port=args.port,
            say=progress.say,
        )
    )
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(result.lines()))
    return 0 if result.agrees else 1


# -- flag types ----------------------------------------------------------------------


def _positive_float(flag: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be a number above zero")
        return value

    parse.__name__ = flag
    return parse


def _drop_rate(text: str) -> float:
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a share like 0.001 or 0.1%"
        ) from None
    if percent:
        value /= 100
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a drop rate is from 0 to below 1 (or 0% to below 100%)"
        )
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.05 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share from 0.05 to 1")
    return value


def _queue_sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for item in text.split(","):
        if item.strip():
            sizes.append(positive_int(item.strip()))
    if not sizes:
        raise argparse.ArgumentTypeError("expected sizes like 64,256,1024")
    if len(sizes) > 8:
        raise argparse.ArgumentTypeError("at most 8 queue sizes")
    return tuple(sorted(set(sizes)))
