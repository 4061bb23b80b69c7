"""World files: every error names the file and the key, and a world round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli import main
from sim import World, WorldConfig, WorldConfigError, load_world


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[topology]\nreplicas = 0\n", "topology.replicas", "greater than or equal"),
        ('[topology]\nreplicas = "3"\n', "topology.replicas", "valid integer"),
        ("[topology]\nreplicaz = 3\n", "topology.replicaz", "unknown key"),
        ('[bus]\nlatency = "soon"\n', "bus.latency", "not a duration"),
        (
            '[clients]\nflap_dark = "gamma(2)"\n',
            "clients.flap_dark",
            "unknown distribution",
        ),
        (
            '[workload.interchanges]\nsize = "uniform(9, 2)"\n',
            "workload.interchanges.size",
            "low <= high",
        ),
        ('[[operations]]\nkind = "rolling_deploy"\n', "operations.0.at_s", "required"),
        (
            '[[operations]]\nkind = "explode"\nat_s = 1\n',
            "operations.0",
            "unknown kind",
        ),
        (
            '[[operations]]\nkind = "admin_disconnect"\nat_s = 1\ntenant = 9\n',
            "operations.0.tenant",
            "tenant rank 9",
        ),
        (
            '[[faults]]\nkind = "drop"\nreplica = "r1"\nat_s = 1\nduration_s = 2\n',
            "faults.0",
            "needs 'fraction'",
        ),
        (
            '[[faults]]\nkind = "cut"\nreplica = "r9"\nat_s = 1\nduration_s = 2\n',
            "faults.0.replica",
            "no replica 'r9'",
        ),
        ('start = "yesterday"\n', "start", "RFC 3339"),
        (
            '[topology]\ntenant_names = ["Acme Inc"]\n',
            "topology.tenant_names.0",
            "slug",
        ),
    ],
    ids=[
        "zero-replicas",
        "string-number",
        "unknown-key",
        "bad-latency",
        "bad-distribution",
        "inverted-range",
        "missing-time",
        "unknown-operation",
        "tenant-rank",
        "drop-without-fraction",
        "unknown-replica",
        "bad-start",
        "bad-tenant-name",
    ],
)
def test_bad_world_file_names_file_and_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    """A world file with one bad value is refused with its path, the dotted key
    and what is wrong."""
    path = tmp_path / "world.toml"
    path.write_text(text, "utf-8")

    with pytest.raises(WorldConfigError) as caught:
        load_world(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: key '{key}': "), message
    assert words in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[topology.roles]\nCHIEF_WIZARD = 1.0\n", "topology.roles.CHIEF_WIZARD"),
        (
            '[[workload.emitters]]\nfamily = "weather"\nrate_per_s = 1\n',
            "workload.emitters.0.family",
        ),
        (
            '[[operations]]\nkind = "admin_disconnect"\nat_s = 1\ntenant = "nobody"\n',
            "operations.0.tenant",
        ),
    ],
    ids=["unknown-role", "unknown-family", "unknown-tenant"],
)
def test_world_checked_against_catalog_and_population(
    tmp_path: Path, text: str, key: str
) -> None:
    """Roles, families and tenant names are checked when the world is built."""
    path = tmp_path / "world.toml"
    path.write_text(text, "utf-8")

    with pytest.raises(WorldConfigError) as caught:
        World(load_world(path), source=str(path))

    assert f"{path}: key '{key}'" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("world.toml", "seed = [", "not valid TOML"),
        ("world.json", '{"seed": ', "not valid JSON"),
        ("world.yaml", "seed: 1", "expected a .toml or .json file"),
        ("world.json", "[1, 2]", "expected a table"),
    ],
    ids=["toml-syntax", "json-syntax", "other-suffix", "not-a-table"],
)
def test_unreadable_world_file_is_refused_with_its_path(
    tmp_path: Path, name: str, text: str, words: str
) -> None:
    """Syntax errors and unknown formats name the file."""
    path = tmp_path / name
    path.write_text(text, "utf-8")

    with pytest.raises(WorldConfigError) as caught:
        load_world(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)


def test_missing_world_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is named, with the reason."""
    with pytest.raises(WorldConfigError, match="cannot read the file"):
        load_world(tmp_path / "absent.toml")


def test_command_refuses_bad_file_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rcm-realtime sim`` on a bad file exits 2 with one line naming file and
    key."""
    path = tmp_path / "world.toml"
    path.write_text("[hub]\nqueue_size = -4\n", "utf-8")

    status = main(["sim", str(path), "--out", str(tmp_path / "out")])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith(f"rcm-realtime sim: {path}: key 'hub.queue_size'")
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_printed_world_loads_back_as_the_same_world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--print-world`` writes a JSON world file that loads as the world it
    printed, distributions and faults included."""
    source = tmp_path / "world.toml"
    source.write_text(
        'seed = 3\n[bus]\nlatency = "uniform:1ms,4ms"\n'
        '[clients]\nflap_dark = "lognormal(10, 0.5)"\n'
        '[[faults]]\nkind = "latency"\nreplica = "r2"\nat_s = 1\nduration_s = 2\n'
        'latency = "exp:50ms"\n'
        '[[operations]]\nkind = "deploy_new_type"\nat_s = 5\n',
        "utf-8",
    )
    assert main(["sim", str(source), "--print-world", "--replicas", "4"]) == 0
    printed = tmp_path / "printed.json"
    printed.write_text(capsys.readouterr().out, "utf-8")

    again = load_world(printed)
    expected = load_world(source)
    assert again.topology.replicas == 4
    assert again.with_changes(**{"topology.replicas": 3}) == expected
    assert json.loads(printed.read_text())["bus"]["latency"] == "uniform:0.001s,0.004s"


def test_json_and_toml_worlds_are_the_same_world(tmp_path: Path) -> None:
    """The two formats read into equal configurations."""
    toml = tmp_path / "world.toml"
    toml.write_text('seed = 4\n[topology]\ntenant_names = ["acme"]\n', "utf-8")
    document = {"seed": 4, "topology": {"tenant_names": ["acme"]}}
    as_json = tmp_path / "world.json"
    as_json.write_text(json.dumps(document), "utf-8")

    assert load_world(toml) == load_world(as_json)
    assert load_world(toml) != WorldConfig()


def test_shipped_example_world_loads_and_runs() -> None:
    """The documented example world is valid and runs (its first minute)."""
    path = Path(__file__).parent.parent / "sim" / "worlds" / "example.toml"
    world = load_world(path).with_changes(duration_s=60.0)

    result = World(world, source=str(path)).run()

    assert result.ledger_violations == []
    assert result.published > 0
    assert {c.group for c in result.clients} == {"", "night-shift"}
