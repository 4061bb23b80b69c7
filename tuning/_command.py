"""``rcm-realtime tune-quiet-window``: read the input, sweep, recommend, report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ._arrivals import Arrivals
from ._errors import TuningInputError
from ._log import load_arrival_log
from ._model import default_model, default_model_text, load_model
from ._recommend import recommend
from ._report import TuningReport, draw_plot, render_table, report_json
from ._sweep import sweep

DEFAULT_WINDOWS_MS = (
    250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000,
    10000, 12000, 15000, 20000, 25000, 30000, 45000, 60000,
)  # fmt: skip
DEFAULT_TARGET_PERCENT = 0.1
DEFAULT_PLOT = "reports/tune-quiet-window.png"
# More windows than this is a typo in a range, not a sweep anyone wants to wait for.
MAX_WINDOWS = 1000


def run(args: argparse.Namespace) -> int:
    if args.print_default_model:
        sys.stdout.write(default_model_text())
        return 0
    windows = _windows(args.windows, args.window_range)
    target_share = parse_target(args.target)
    workers = args.workers or os.cpu_count() or 1
    progress = _Progress(sys.stderr, enabled=not args.quiet)

    started = time.perf_counter()
    arrivals, kind, seed = _arrivals(args, progress)
    progress.say(
        f"{arrivals.event_count:,} events in {arrivals.interchange_count:,} "
        f"interchanges from {len(arrivals.partners)} trading partners "
        f"({time.perf_counter() - started:.1f} s); sweeping {len(windows)} windows "
        f"on {min(workers, len(windows))} workers"
    )
    sweep_started = time.perf_counter()
    results = sweep(arrivals, windows, workers=workers, progress=progress.window_done)
    progress.say(f"swept in {time.perf_counter() - sweep_started:.1f} s")

    report = TuningReport(
        source=arrivals.source,
        kind=kind,
        seed=seed,
        partners=arrivals.partners,
        interchanges=arrivals.interchange_count,
        events=arrivals.event_count,
        target_share=target_share,
        results=tuple(results),
        recommendations=recommend(results, arrivals.partners, target_share),
    )
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(report))
    if not args.no_plot:
        path = Path(args.plot)
        try:
            draw_plot(report, path)
        except OSError as error:
            raise TuningInputError(
                f"cannot write the plot: {error.strerror or error}",
                where=f"--plot {path}",
            ) from error
        progress.say(f"plot written to {path}")
    return 0


def _arrivals(
    args: argparse.Namespace, progress: _Progress
) -> tuple[Arrivals, str, int | None]:
    if args.log is not None:
        if args.seed is not None:
            progress.say("--seed has no effect on a log of real arrivals")
        progress.say(f"reading {args.log}")
        return load_arrival_log(args.log), "log", None
    if args.seed is not None and args.seed < 0:
        raise TuningInputError(
            f"expected a whole number >= 0, found {args.seed}", where="--seed"
        )
    model = default_model() if args.model is None else load_model(args.model)
    seed = model.seed if args.seed is None else args.seed
    progress.say(f"generating arrivals from the {model.source} (seed {seed})")
    return model.generate(seed), "model", seed


def parse_windows(text: str) -> list[int]:
    """``"1000,2500,5000"``: windows in milliseconds."""
    windows = [
        _milliseconds(item, "--windows") for item in text.split(",") if item.strip()
    ]
    if not windows:
        raise TuningInputError(
            "expected windows in milliseconds like 1000,2500,5000", where="--windows"
        )
    return _bounded(sorted(set(windows)), "--windows")


def parse_window_range(text: str) -> list[int]:
    """``"START:STOP:STEP"`` in milliseconds, STOP included when the steps reach it."""
    parts = text.split(":")
    if len(parts) != 3:
        raise TuningInputError(
            f"expected START:STOP:STEP in milliseconds like 500:20000:500, found "
            f"{text!r}",
            where="--window-range",
        )
    start, stop, step = (_milliseconds(part, "--window-range") for part in parts)
    if stop < start:
        raise TuningInputError(
            f"STOP ({stop}) must not be below START ({start})", where="--window-range"
        )
    if (stop - start) // step + 1 > MAX_WINDOWS:
        raise TuningInputError(
            f"the range holds more than {MAX_WINDOWS} windows; use a larger STEP",
            where="--window-range",
        )
    return list(range(start, stop + 1, step))


def parse_target(text: str | float) -> float:
    """A percentage from 0 (no premature completion at all) to below 100."""
    try:
        percent = float(text)
    except ValueError:
        percent = float("nan")
    if not 0 <= percent < 100:
        raise TuningInputError(
            f"expected a percentage from 0 to below 100, like 0.1, found {text!r}",
            where="--target",
        )
    return percent / 100


def _windows(windows: str | None, window_range: str | None) -> list[int]:
    if windows is not None:
        return parse_windows(windows)
    if window_range is not None:
        return parse_window_range(window_range)
    return list(DEFAULT_WINDOWS_MS)


def _milliseconds(text: str, flag: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise TuningInputError(
            f"{text.strip()!r} is not a whole number of milliseconds above zero",
            where=flag,
        )
    return value


def _bounded(windows: list[int], flag: str) -> list[int]:
    if len(windows) > MAX_WINDOWS:
        raise TuningInputError(f"at most {MAX_WINDOWS} windows", where=flag)
    return windows


class _Progress:
    """Progress on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.interactive = enabled and stream.isatty()
        self.started = time.perf_counter()
        self._dangling = False

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        self._end_line()
        self.stream.write(f"tune-quiet-window: {message}\n")
        self.stream.flush()

    def window_done(self, done: int, total: int, window_ms: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        message = (
            f"tune-quiet-window: {done}/{total} windows done (last {window_ms} ms, "
            f"{elapsed:.1f} s)"
        )
        if self.interactive:
            self.stream.write(f"\r{message}\x1b[K")
            self._dangling = True
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._dangling:
            self.stream.write("\n")
            self._dangling = False
