"""``rcm-realtime sim``: summary, progress, files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hub.cli import main
from sim import SERIES_COLUMNS

from .test_sim_determinism import WORLD_FILE


def test_command_prints_summary_and_writes_series_and_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run prints the summary table, shows progress on stderr and writes the
    series as CSV and the truth as JSON lines."""
    world = tmp_path / "world.toml"
    world.write_text(WORLD_FILE, "utf-8")
    out = tmp_path / "out"

    status = main(["sim", str(world), "--out", str(out), "--duration", "20"])

    captured = capsys.readouterr()
    assert status == 0
    assert "replica  procs  streams" in captured.out
    assert "ledger: exact" in captured.out
    assert "sim: done in" in captured.err
    with (out / "series.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == SERIES_COLUMNS
    metrics = {row[3] for row in rows[1:]}
    assert {
        "rcm_realtime_subscribers",
        "rcm_realtime_fanout_total",
        "rcm_realtime_dropped_total",
        "rcm_realtime_delivery_latency_seconds_bucket",
    } <= metrics
    assert max(float(row[0]) for row in rows[1:]) == 20 + 7
    clients = [
        json.loads(line)
        for line in (out / "clients.jsonl").read_text().split("\n")
        if line
    ]
    assert len(clients) == 40
    assert {"should", "got", "missed", "staleness_max_s"} <= set(clients[0])
    for line in (out / "batches.jsonl").read_text().splitlines():
        assert {"premature", "latency_s"} <= set(json.loads(line))


def test_flags_override_the_world_and_quiet_silences_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flags win over the built-in world; --quiet leaves stderr empty."""
    out = tmp_path / "out"

    status = main(
        [
            "sim",
            "--duration",
            "10",
            "--replicas",
            "2",
            "--tenants",
            "2",
            "--subscribers",
            "12",
            "--rate",
            "3",
            "--quiet",
            "--out",
            str(out),
        ]
    )

    captured = capsys.readouterr()
    assert status == 0
    assert captured.err == ""
    assert "2 replicas, 2 tenants, 12 clients" in captured.out
    assert len((out / "clients.jsonl").read_text().splitlines()) == 12


def test_flag_that_breaks_the_world_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fewer replicas than the file's faults name is refused, naming the key."""
    world = tmp_path / "world.toml"
    world.write_text(WORLD_FILE, "utf-8")

    status = main(["sim", str(world), "--replicas", "1", "--out", str(tmp_path)])

    err = capsys.readouterr().err
    assert status == 2
    assert "with the command-line flags: key 'faults.0.replica'" in err
