"""Reading a CSV log of real arrivals.

The header is ``tenant_id,trading_partner_id,isa13,occurred_at`` and each row is one
event of a batch, ``occurred_at`` an RFC 3339 timestamp with a zone. Every row with
the same tenant, trading partner and ISA13 belongs to one interchange, exactly as the
hub's synthesizer buckets them; a log whose control numbers repeat for different
interchanges must be split before it is tuned on.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np

from hub.core import ISA13_PATTERN, TENANT_PATTERN, TOKEN_TEXT_PATTERN

from ._arrivals import Arrivals, Partner, arrivals_from_events
from ._errors import TuningInputError

LOG_COLUMNS = ("tenant_id", "trading_partner_id", "isa13", "occurred_at")


def load_arrival_log(path: str | Path) -> Arrivals:
    """Read and check a whole log; the first bad line stops it with its number."""
    source = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = _read_rows(handle, source)
    except UnicodeDecodeError as error:
        raise TuningInputError(
            f"not UTF-8 text ({error.reason} at byte {error.start})", where=source
        ) from error
    except OSError as error:
        raise TuningInputError(
            f"cannot read the log: {error.strerror or error}", where=source
        ) from error
    if not rows:
        raise TuningInputError(
            "the log holds a header but no arrivals", where=f"{source}: line 2"
        )
    return _arrivals_from_rows(rows, source)


_Row = tuple[str, str, str, float]


def _read_rows(handle: Iterable[str], source: str) -> list[_Row]:
    reader = csv.reader(handle, strict=True)
    rows: list[_Row] = []
    try:
        header = next(reader, None)
        if header is None:
            raise TuningInputError(
                f"the log is empty; expected the header {','.join(LOG_COLUMNS)}",
                where=f"{source}: line 1",
            )
        if tuple(cell.strip() for cell in header) != LOG_COLUMNS:
            raise TuningInputError(
                f"expected the header {','.join(LOG_COLUMNS)}, found "
                f"{_shown(','.join(header))}",
                where=f"{source}: line 1",
            )
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            rows.append(_parse_row(cells, f"{source}: line {reader.line_num}"))
    except csv.Error as error:
        raise TuningInputError(
            f"not valid CSV: {error}", where=f"{source}: line {reader.line_num}"
        ) from error
    return rows


def _parse_row(cells: list[str], where: str) -> _Row:
    if len(cells) != len(LOG_COLUMNS):
        raise TuningInputError(
            f"expected {len(LOG_COLUMNS)} columns ({','.join(LOG_COLUMNS)}), "
            f"found {len(cells)}",
            where=where,
        )
    tenant, partner, isa13, occurred = (cell.strip() for cell in cells)
    if not TENANT_PATTERN.match(tenant):
        raise TuningInputError(
            f"{_shown(tenant)} is not a tenant slug (lower case letters, digits and "
            "'-', at most 63)",
            where=f"{where}: column tenant_id",
        )
    if not TOKEN_TEXT_PATTERN.match(partner):
        raise TuningInputError(
            f"{_shown(partner)} is not a trading partner id (1 to 128 printable "
            "ASCII characters without spaces)",
            where=f"{where}: column trading_partner_id",
        )
    if not ISA13_PATTERN.match(isa13):
        raise TuningInputError(
            f"{_shown(isa13)} is not an ISA13 control number (nine digits, like "
            "'000000123')",
            where=f"{where}: column isa13",
        )
    return tenant, partner, isa13, _parse_time(occurred, f"{where}: column occurred_at")


def _parse_time(text: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise TuningInputError(
            f"{_shown(text)} is not an RFC 3339 timestamp with a zone, like "
            "'2026-03-02T08:00:00.250Z'",
            where=where,
        )
    return moment.timestamp()


def _arrivals_from_rows(rows: list[_Row], source: str) -> Arrivals:
    partners = tuple(
        sorted({Partner(tenant, partner) for tenant, partner, _, _ in rows})
    )
    partner_index = {partner: index for index, partner in enumerate(partners)}
    epoch_s = float(math.floor(min(row[3] for row in rows)))

    interchange_index: dict[tuple[str, str, str], int] = {}
    interchange_partner: list[int] = []
    interchange_isa13: list[str] = []
    event_interchange = np.empty(len(rows), dtype=np.int64)
    occurred = np.empty(len(rows), dtype=np.float64)
    for position, (tenant, partner, isa13, at) in enumerate(rows):
        key = (tenant, partner, isa13)
        index = interchange_index.get(key)
        if index is None:
            index = interchange_index[key] = len(interchange_isa13)
            interchange_partner.append(partner_index[Partner(tenant, partner)])
            interchange_isa13.append(isa13)
        event_interchange[position] = index
        occurred[position] = at - epoch_s

    # A log records when events happened; the hub is assumed to see each one then.
    return arrivals_from_events(
        source=source,
        epoch_s=epoch_s,
        partners=partners,
        interchange_partner=np.asarray(interchange_partner, dtype=np.int64),
        interchange_isa13=tuple(interchange_isa13),
        event_interchange=event_interchange,
        event_arrival_s=occurred,
        event_occurred_s=occurred,
    )


def _shown(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)
