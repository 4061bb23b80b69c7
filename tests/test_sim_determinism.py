"""Same world, same seed: the same results, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim import World

from .test_sim_ledger import busy_world

WORLD_FILE = """\
seed = 5
duration_s = 40
sample_interval_s = 2

[topology]
replicas = 2
tenants = 3
subscribers = 40

[clients.mix]
steady = 0.6
slow = 0.1
flapping = 0.2
half_open = 0.1

[clients]
flap_every = "exp(5)"
flap_dark = "uniform(1, 10)"
half_open_after = "exp(10)"

[hub]
queue_size = 8
evict_after_s = 3

[workload.interchanges]
per_partner_per_hour = 900
pause_probability = 0.2

[[operations]]
kind = "rolling_deploy"
at_s = 15
interval_s = 5

[[faults]]
kind = "drop"
replica = "r2"
at_s = 5
duration_s = 10
fraction = 0.3
"""

OUTPUTS = ("series.csv", "clients.jsonl", "batches.jsonl")


def test_one_world_run_twice_gives_identical_files() -> None:
    """Two runs of one configuration give the same series and truth, byte for
    byte."""
    first = World(busy_world()).run()
    second = World(busy_world()).run()

    assert first.series_csv() == second.series_csv()
    assert first.clients_jsonl() == second.clients_jsonl()
    assert first.batches_jsonl() == second.batches_jsonl()


def test_another_seed_gives_another_run() -> None:
    """The seed matters: another one changes the series."""
    first = World(busy_world()).run()
    other = World(busy_world(seed=8)).run()

    assert first.series_csv() != other.series_csv()


def run_command(world: Path, out: Path, hash_seed: str) -> None:
    environment = dict(os.environ, PYTHONHASHSEED=hash_seed)
    completed = subprocess.run(
        [sys.executable, "-m", "hub.cli", "sim", str(world), "--out", str(out)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_command_writes_identical_files_across_processes(tmp_path: Path) -> None:
    """Two processes with different string hashing write the same files from the
    same world file."""
    world = tmp_path / "world.toml"
    world.write_text(WORLD_FILE, "utf-8")
    run_command(world, tmp_path / "a", hash_seed="1")
    run_command(world, tmp_path / "b", hash_seed="2")

    for name in OUTPUTS:
        first = (tmp_path / "a" / name).read_bytes()
        assert first, name
        assert first == (tmp_path / "b" / name).read_bytes(), name
