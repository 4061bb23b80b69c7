"""``rcm-realtime tune-quiet-window`` as operators run it: outputs and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import main
from tuning import default_model, parse_model

LOG = Path(__file__).parent / "data" / "quiet_window_log.csv"
HEADER = "tenant_id,trading_partner_id,isa13,occurred_at\n"
SMALL_MODEL = """
[defaults]
interchanges = 150

[[partners]]
id = "alpha"

[[partners]]
id = "beta"
tenant = "globex"
gap = { distribution = "exponential", mean = "2s" }
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["tune-quiet-window", "--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_shows_every_window_and_marks_the_recommendation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table has one row per window, an arrow on the recommended one, and a
    line per trading partner."""
    code, out, _ = run(
        capsys, "--log", str(LOG), "--windows", "5000,6000,12000", "--no-plot"
    )

    assert code == 0
    rows = [line for line in out.splitlines() if line[:8].strip().isdigit()]
    assert [row.split()[0] for row in rows] == ["5000", "6000", "12000"]
    assert rows[-1].endswith("<- recommended")
    assert re.search(r"^  overall +12000 ms", out, re.MULTILINE)
    assert "ferrell-group/thomas-clark-edi" in out
    assert "too few interchanges to confirm" in out


def test_json_output_carries_windows_partners_and_recommendations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json prints one document with the input, every window's figures and the
    recommendations, and nothing else on stdout."""
    code, out, _ = run(capsys, "--log", str(LOG), "--json", "--no-plot")

    document = json.loads(out)
    assert code == 0
    assert document["input"] == {
        "kind": "log",
        "source": str(LOG),
        "seed": None,
        "trading_partners": 5,
        "interchanges": 500,
        "events": 3450,
    }
    assert document["target_premature_share"] == pytest.approx(0.001)
    assert len(document["windows"]) == 20
    assert len(document["windows"][0]["partners"]) == 5
    assert document["recommendation"]["overall"]["window_ms"] == 12000
    assert document["recommendation"]["overall"]["confirmed95"] is False
    by_partner = {
        p["trading_partner_id"]: p["window_ms"]
        for p in document["recommendation"]["partners"]
    }
    assert by_partner["thomas-clark-edi"] == 12000
    assert sorted(by_partner.values()) == [6000, 6000, 6000, 6000, 12000]


def test_plot_is_written_as_a_png(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--plot writes a PNG image, creating its folder."""
    target = tmp_path / "plots" / "sweep.png"

    code, _, _ = run(capsys, "--log", str(LOG), "--plot", str(target))

    assert code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert target.stat().st_size > 20_000


def test_results_do_not_depend_on_the_number_of_workers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One process or two, the same seed gives the same JSON document."""
    model = tmp_path / "model.toml"
    model.write_text(SMALL_MODEL)
    common = ("--model", str(model), "--json", "--no-plot", "--seed", "3")

    _, one, _ = run(capsys, *common, "--workers", "1")
    _, two, _ = run(capsys, *common, "--workers", "2")

    assert json.loads(one) == json.loads(two)


def test_seed_changes_the_generated_arrivals(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Another seed draws other arrivals from the same model; the same seed, the
    same ones."""
    model = tmp_path / "model.toml"
    model.write_text(SMALL_MODEL)
    common = ("--model", str(model), "--json", "--no-plot", "--workers", "1")

    first = json.loads(run(capsys, *common, "--seed", "1")[1])
    again = json.loads(run(capsys, *common, "--seed", "1")[1])
    other = json.loads(run(capsys, *common, "--seed", "2")[1])

    assert first == again
    assert first["windows"] != other["windows"]


def test_progress_goes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --quiet each finished window is reported on stderr, not stdout."""
    arguments = ["--log", str(LOG), "--windows", "1000,2000", "--json", "--no-plot"]
    code = main(["tune-quiet-window", *arguments, "--workers", "1"])
    out, err = capsys.readouterr()

    assert code == 0
    assert "2/2 windows done" in err
    assert "windows done" not in out
    json.loads(out)


def test_printed_default_model_is_the_model_used_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--print-default-model prints a file that parses to the built-in model."""
    code, out, _ = run(capsys, "--print-default-model")

    assert code == 0
    assert parse_model(out, "printed.toml").partners == default_model().partners


def test_hub_cli_does_not_import_the_tuner() -> None:
    """Loading the command line leaves the tuner (and matplotlib) unloaded."""
    probe = (
        "import sys, hub.cli; hub.cli.build_parser(); "
        "print(sorted(m for m in ('tuning', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "[]"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_LOGS = [
    pytest.param("", "line 1: the log is empty", id="empty-file"),
    pytest.param(
        "tenant,partner,isa,when\n", "line 1: expected the header", id="wrong-header"
    ),
    pytest.param(HEADER, "line 2: the log holds a header but no", id="no-rows"),
    pytest.param(
        HEADER + "acme,p1,000000001\n", "line 2: expected 4 columns", id="short-row"
    ),
    pytest.param(
        HEADER + "acme,p1,000000001,2026-03-02T08:00:00Z\nACME,p1,1,x\n",
        "line 3: column tenant_id",
        id="bad-tenant",
    ),
    pytest.param(
        HEADER + "acme,p 1,000000001,2026-03-02T08:00:00Z\n",
        "line 2: column trading_partner_id",
        id="bad-partner",
    ),
    pytest.param(
        HEADER + "acme,p1,12345,2026-03-02T08:00:00Z\n",
        "line 2: column isa13: '12345' is not an ISA13 control number",
        id="bad-isa13",
    ),
    pytest.param(
        HEADER + "acme,p1,000000001,2026-03-02 8am\n",
        "line 2: column occurred_at: '2026-03-02 8am' is not an RFC 3339",
        id="bad-timestamp",
    ),
    pytest.param(
        HEADER + "acme,p1,000000001,2026-03-02T08:00:00\n",
        "line 2: column occurred_at",
        id="timestamp-without-zone",
    ),
    pytest.param(
        HEADER + 'acme,"p1,000000001,2026-03-02T08:00:00Z\n',
        "not valid CSV",
        id="unterminated-quote",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_LOGS)
def test_bad_log_is_refused_naming_file_line_and_expectation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    """A bad log stops the command with exit 2 and one message, no traceback."""
    path = write(tmp_path, "arrivals.csv", text)

    code, out, err = run(capsys, "--log", path, "--no-plot")

    assert code == 2
    assert out == ""
    assert f"rcm-realtime tune-quiet-window: {path}: " in err
    assert expected in err
    assert "Traceback" not in err


BAD_MODELS = [
    pytest.param("[[partners]\nid = 1", "not valid TOML", id="toml-syntax"),
    pytest.param("seed = 1\n", "key partners: expected at least one", id="no-partners"),
    pytest.param(
        '[[partners]]\nid = "p1"\nspeed = 3\n',
        "[[partners]] #1 'p1': key speed: unknown key",
        id="unknown-partner-key",
    ),
    pytest.param(
        '[defaults]\ngap = { distribution = "exponential", mean = "fast" }\n'
        '[[partners]]\nid = "p1"\n',
        "key gap.mean: expected a duration like '250ms'",
        id="bad-duration",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\nevents = { distribution = "poisson", mean = 3 }\n',
        "key events.distribution: expected one of 'fixed'",
        id="unknown-distribution",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\n'
        'gap = { distribution = "uniform", min = "2s", max = "1s" }\n',
        "key gap.min: expected min to be at most max",
        id="uniform-reversed",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\npause = { probability = 2 }\n',
        "key pause.probability: expected a number from 0 to 1",
        id="bad-probability",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\ninterchanges = 0\n',
        "key interchanges: expected a whole number from 1",
        id="no-interchanges",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\n[[partners]]\nid = "p1"\n',
        "trading partner acme/p1 appears twice",
        id="duplicate-partner",
    ),
    pytest.param(
        '[[partners]]\nid = "p1"\ninterchanges = 20000000\n'
        'events = { distribution = "fixed", value = 100 }\n',
        "the model would generate more than 20,000,000 events",
        id="too-many-events",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MODELS)
def test_bad_model_is_refused_naming_file_key_and_expectation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    """A bad model stops the command with exit 2 and one message, no traceback."""
    path = write(tmp_path, "model.toml", text)

    code, out, err = run(capsys, "--model", path, "--no-plot")

    assert code == 2
    assert out == ""
    assert f"rcm-realtime tune-quiet-window: {path}" in err
    assert expected in err
    assert "Traceback" not in err


BAD_FLAGS = [
    pytest.param(("--windows", "1000,soon"), "--windows: 'soon' is not", id="windows"),
    pytest.param(("--windows", "0"), "--windows: '0' is not", id="zero-window"),
    pytest.param(
        ("--window-range", "1000:500:100"),
        "--window-range: STOP (500) must not be below START",
        id="range-reversed",
    ),
    pytest.param(
        ("--window-range", "1000-5000"),
        "--window-range: expected START:STOP:STEP",
        id="range-shape",
    ),
    pytest.param(
        ("--window-range", "1:10000000:1"), "more than 1000 windows", id="range-huge"
    ),
    pytest.param(("--target", "100"), "--target: expected a percentage", id="target"),
    pytest.param(("--target", "-1"), "--target: expected a percentage", id="negative"),
    pytest.param(
        ("--model", "/nonexistent/m.toml"), "cannot read the model", id="no-model"
    ),
    pytest.param(("--log", "/nonexistent/a.csv"), "cannot read the log", id="no-log"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_FLAGS)
def test_bad_flag_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    """A flag the tuner cannot use stops it with exit 2 before any work."""
    code, out, err = run(capsys, *args, "--no-plot")

    assert code == 2
    assert out == ""
    assert expected in err
    assert "Traceback" not in err


def test_unwritable_plot_path_is_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A plot that cannot be written is an error naming --plot, after the table."""
    blocker = tmp_path / "file"
    blocker.write_text("")

    code, _, err = run(
        capsys, "--log", str(LOG), "--windows", "6000", "--plot", f"{blocker}/x.png"
    )

    assert code == 2
    assert f"--plot {blocker}/x.png: cannot write the plot" in err
