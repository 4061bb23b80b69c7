"""``rcm-realtime catalog check``: the shipped catalog passes; every flaw is listed."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from hub._catalog_check import (
    ENTRY_POINT_GROUP,
    check_catalog_text,
    entry_point_uses,
    hub_type_uses,
    list_file_uses,
    scenario_type_uses,
)
from hub._config import shipped_catalog_text
from hub.cli import main

GOOD_ROW = """
[[events]]
type = "claim.submitted"
requiredPermission = "claims.read"
defaultUiSeverity = "info"
label = "Claim submitted"
"""
ROLES = """
[roles.BILLING_SPECIALIST]
scopes = ["claims.read"]
"""


def test_shipped_catalog_has_no_findings(capsys: pytest.CaptureFixture[str]) -> None:
    """The catalog the hub ships passes the check CI runs, exit status 0."""
    assert main(["catalog", "check"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("no findings\n")
    assert "11 rows" in out


def test_shipped_catalog_covers_the_scenarios_in_the_repository() -> None:
    """Every event type the repository's scenario files use has a row."""
    scenarios = Path(__file__).resolve().parent.parent / "scenarios"
    report = check_catalog_text(
        shipped_catalog_text(),
        source="hub/catalog.toml",
        sources=[hub_type_uses(), scenario_type_uses(scenarios)],
    )
    assert report.findings == ()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            GOOD_ROW.replace('"info"', '"loud"'),
            "defaultUiSeverity 'loud' is not one of silent, info, success, warning",
        ),
        (GOOD_ROW.replace('"claims.read"', '"claims"'), "'claims' is not a scope"),
        (
            GOOD_ROW.replace('label = "Claim submitted"', 'label = ""'),
            "label must be a non-empty string",
        ),
        (
            GOOD_ROW.replace('label = "Claim submitted"', ""),
            "label is missing",
        ),
        (
            GOOD_ROW.replace('"claim.submitted"', '"Claim Submitted"'),
            "type 'Claim Submitted' is not like 'claim.submitted'",
        ),
        (GOOD_ROW + 'colour = "red"\n', "unknown key 'colour'"),
        (GOOD_ROW + GOOD_ROW, "type 'claim.submitted' appears twice"),
    ],
    ids=[
        "bad-severity",
        "bad-permission",
        "empty-label",
        "missing-label",
        "bad-type",
        "unknown-key",
        "duplicate-type",
    ],
)
def test_bad_row_is_a_finding(row: str, message: str) -> None:
    """Each kind of bad row is reported with the row it is in."""
    report = check_catalog_text(row + ROLES, source="c.toml")
    assert report.exit_status == 1
    assert any(message in str(finding) for finding in report.findings), [
        str(f) for f in report.findings
    ]
    assert all(str(f).startswith("c.toml") for f in report.findings)


def test_every_bad_row_is_listed_not_only_the_first() -> None:
    """Three bad rows give three findings, where the hub's parser stops at one."""
    rows = (
        GOOD_ROW.replace('"info"', '"loud"')
        + GOOD_ROW.replace("claim.submitted", "claim.accepted").replace(
            '"Claim submitted"', '""'
        )
        + GOOD_ROW.replace("claim.submitted", "claim.rejected").replace(
            '"claims.read"', '"nope"'
        )
    )
    report = check_catalog_text(rows + ROLES, source="c.toml")
    assert len(report.findings) == 3
    assert [f.where for f in report.findings] == [
        "c.toml: events[0] (type 'claim.submitted')",
        "c.toml: events[1] (type 'claim.accepted')",
        "c.toml: events[2] (type 'claim.rejected')",
    ]


def test_permission_no_role_seeds_is_a_finding() -> None:
    """A row whose permission no role seeds is named with the types it blocks."""
    new_row = GOOD_ROW.replace("claim.submitted", "eligibility.checked").replace(
        "claims.read", "eligibility.read"
    )
    report = check_catalog_text(GOOD_ROW + new_row + ROLES, source="c.toml")
    [finding] = report.findings
    assert "permission 'eligibility.read' (needed by eligibility.checked)" in str(
        finding
    )
    assert "seeded by no role" in finding.message


def test_bad_role_table_is_a_finding() -> None:
    """A role with a malformed scope list or name is reported."""
    roles = '[roles.billing]\nscopes = ["claims.read"]\n[roles.X]\nscopes = "a"\n'
    report = check_catalog_text(GOOD_ROW + roles, source="c.toml")
    messages = [str(f) for f in report.findings]
    assert any("roles.billing: role names are upper case" in m for m in messages)
    assert any("roles.X: expected scopes" in m for m in messages)


def test_toml_syntax_error_is_one_finding() -> None:
    """A file that is not TOML gives one finding naming the file."""
    report = check_catalog_text("[[events]\n", source="c.toml")
    [finding] = report.findings
    assert finding.where == "c.toml"
    assert "not valid TOML" in finding.message


def test_used_type_without_row_is_a_finding(tmp_path: Path) -> None:
    """A type listed in a --uses file with no catalog row is named with its line."""
    uses = tmp_path / "uses.txt"
    uses.write_text("# emitted by the claims service\nclaim.submitted\nclaim.voided\n")
    report = check_catalog_text(
        GOOD_ROW + ROLES, source="c.toml", sources=[list_file_uses(uses)]
    )
    [finding] = report.findings
    assert finding.where == f"{uses}:3"
    assert "type 'claim.voided' is used but has no row" in finding.message


def test_hub_emitted_types_need_rows() -> None:
    """The hub's own batch.completed and batch.failed must have rows."""
    report = check_catalog_text(
        GOOD_ROW + ROLES, source="c.toml", sources=[hub_type_uses()]
    )
    assert {f.message.split("'")[1] for f in report.findings} == {
        "batch.completed",
        "batch.failed",
    }


def test_scenario_files_are_scanned_for_event_types(tmp_path: Path) -> None:
    """Event types in scenario files are found by their documented keys; a fault's
    ``type`` is not mistaken for one, and a type the file deploys itself is not a
    use that needs a row."""
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "new-type.toml").write_text(
        """
name = "new type"
[[workload.events]]
tenant = "acme"
types = ["claim.submitted", "eligibility.checked"]
[[workload.interchanges]]
event_type = "remittance.batch.received"
[[workload.emitters]]
type = "denial.created"
[workload.emitters.mix]
"claim.accepted" = 0.5
[[faults]]
type = "bus.pause"
[[timeline]]
at_s = 5
action = "deploy_event_type"
event_type = "eligibility.checked"
permission = "eligibility.read"
[[timeline]]
action = "record_batch_failure"
event_types = ["batch.failed"]
"""
    )
    source = scenario_type_uses(tmp_path)
    assert sorted(use.event_type for use in source.uses) == [
        "batch.failed",
        "claim.accepted",
        "claim.submitted",
        "denial.created",
        "remittance.batch.received",
    ]
    assert source.name.startswith("1 scenario file(s)")
    [where] = [u.where for u in source.uses if u.event_type == "claim.submitted"]
    assert where.endswith("new-type.toml (workload.events[0].types)")


def test_unreadable_scenario_file_is_a_finding(tmp_path: Path) -> None:
    """A scenario file that is not TOML is a finding, not a crash."""
    (tmp_path / "broken.toml").write_text("name = \n")
    source = scenario_type_uses(tmp_path)
    [problem] = source.problems
    assert "cannot read as TOML" in problem.message


def test_entry_points_plug_in_types_in_use() -> None:
    """Packages declare their types through the entry point group; a broken one is
    a finding."""
    good = importlib.metadata.EntryPoint(
        name="emitters",
        value="tests.test_catalog_check:_types",
        group=ENTRY_POINT_GROUP,
    )
    broken = importlib.metadata.EntryPoint(
        name="broken",
        value="tests.test_catalog_check:_missing",
        group=ENTRY_POINT_GROUP,
    )
    source = entry_point_uses(lambda: [good, broken])
    assert [(u.event_type, u.where) for u in source.uses] == [
        ("claim.voided", "entry point emitters (tests.test_catalog_check:_types)"),
        ("denial.appealed", "sim/emitters.py"),
    ]
    [problem] = source.problems
    assert problem.where.startswith("entry point broken")


def _types() -> list[object]:
    return ["claim.voided", ("denial.appealed", "sim/emitters.py")]


def test_command_exits_1_and_lists_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``catalog check --catalog F --uses L --json`` prints the findings, exit 1."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(GOOD_ROW.replace('"info"', '"loud"') + ROLES)
    uses = tmp_path / "uses.txt"
    uses.write_text("claim.voided\n")
    status = main(
        [
            "catalog",
            "check",
            "--catalog",
            str(catalog),
            "--uses",
            str(uses),
            "--scenarios",
            str(tmp_path),
            "--json",
        ]
    )
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert len(document["findings"]) == 4  # severity, claim.voided, two batch types


def test_missing_catalog_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A catalog path that does not exist is one line on stderr and exit status 2."""
    status = main(["catalog", "check", "--catalog", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot read the catalog" in err
    assert "Traceback" not in err
