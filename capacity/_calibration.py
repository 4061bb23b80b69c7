"""A calibration file: what the real hub costs on one machine, and which machine.

The file is JSON (``FORMAT`` names its version). The plan reads ``costs`` and
``memory``; everything else (the machine, how busy it was, every load point measured,
the fit, the saturation ramp) is there so that a person can judge the figures.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import CapacityError

FORMAT = "rcm-realtime-calibration/1"
CALIBRATION_DIR = "calibration"


def default_path() -> Path:
    """``calibration/<hostname>.json`` under the working directory."""
    return Path(CALIBRATION_DIR) / f"{safe_hostname()}.json"


def safe_hostname() -> str:
    name = socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass(frozen=True, slots=True)
class Calibration:
    """The figures a plan needs, and the whole document they came from."""

    per_delivery_s: float
    per_event_s: float
    per_connection_s: float
    base_rss_bytes: int
    per_subscriber_bytes: float
    saturation_deliveries_per_s: float | None
    hostname: str
    cpu_model: str
    cores: int
    measured_at: str
    source: str
    document: dict[str, Any]

    def describe(self) -> str:
        """One line naming the machine and the date."""
        return (
            f"{self.hostname} ({self.cpu_model}, {self.cores} cores), "
            f"measured {self.measured_at}"
        )


def save_calibration(document: dict[str, Any], path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    except OSError as error:
        raise CapacityError(
            f"cannot write the calibration ({error.strerror or error})",
            where=f"--out {path}",
        ) from error
    return path


def load_calibration(path: str | Path) -> Calibration:
    """Read and check a calibration file; errors name the file and the key."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise CapacityError(
            f"cannot read the calibration ({error.strerror or error}); "
            "`rcm-realtime capacity calibrate` writes one",
            where=source,
        ) from error
    except UnicodeDecodeError as error:
        raise CapacityError("the file is not UTF-8 text", where=source) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise CapacityError(
            f"not valid JSON ({error.msg} at line {error.lineno})", where=source
        ) from error
    return calibration_from_document(document, source=source)


def calibration_from_document(document: Any, *, source: str) -> Calibration:
    if not isinstance(document, dict):
        raise CapacityError("expected a JSON object at the top", where=source)
    if document.get("format") != FORMAT:
        raise CapacityError(
            f"key 'format': expected {FORMAT!r}, found {document.get('format')!r}",
            where=source,
        )

    def section(name: str) -> dict[str, Any]:
        value = document.get(name)
        if not isinstance(value, dict):
            raise CapacityError(f"key '{name}': expected an object", where=source)
        return value

    def number(table: str, key: str, *, positive: bool = False) -> float:
        value = section(table).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CapacityError(
                f"key '{table}.{key}': expected a number, found {value!r}",
                where=source,
            )
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            wanted = "above zero" if positive else "zero or more"
            raise CapacityError(
                f"key '{table}.{key}': expected a number {wanted}, found {value!r}",
                where=source,
            )
        return float(value)

    def text(table: str, key: str) -> str:
        value = section(table).get(key)
        if not isinstance(value, str) or not value:
            raise CapacityError(f"key '{table}.{key}': expected a string", where=source)
        return value

    saturation = document.get("saturation")
    saturated: float | None = None
    if isinstance(saturation, dict) and saturation.get("deliveries_per_s") is not None:
        saturated = number("saturation", "deliveries_per_s")
    cores = number("machine", "cores", positive=True)
    return Calibration(
        per_delivery_s=number("costs", "per_delivery_s", positive=True),
        per_event_s=number("costs", "per_event_s"),
        per_connection_s=number("costs", "per_connection_s"),
        base_rss_bytes=int(number("memory", "base_rss_bytes")),
        per_subscriber_bytes=number("memory", "per_subscriber_bytes"),
        saturation_deliveries_per_s=saturated,
        hostname=text("machine", "hostname"),
        cpu_model=text("machine", "cpu_model"),
        cores=int(cores),
        measured_at=text("machine", "measured_at"),
        source=source,
        document=document,
    )
