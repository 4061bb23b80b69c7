"""The workload a capacity plan is made for, read from a TOML file.

    tenants = 40                  # tenants the fleet serves
    subscribers_per_tenant = 150  # open streams per tenant at the peak
    peak_factor = 2.5             # peak rates are this multiple of the means below

    [events_per_second]           # mean rate per family, all tenants together
    claims = 30
    denials = 4

Optional keys: ``reads`` (the families every stream reads; default: every family in
``[events_per_second]``), ``bus_latency`` (the bus's delay before a replica has an
event, in the bus's spec language: ``exp:2ms``, ``fixed:0``), ``balancer``
(``round_robin``, ``least_connections`` or ``random``) and ``seed``. See
``capacity/example-workload.toml`` for every key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub import load_catalog
from hub.core import Catalog, ConfigError, Latency

from ._errors import CapacityError
from ._model import Balancer

BALANCERS: tuple[Balancer, ...] = ("random", "round_robin", "least_connections")
KEYS = {
    "tenants",
    "subscribers_per_tenant",
    "peak_factor",
    "events_per_second",
    "reads",
    "bus_latency",
    "balancer",
    "seed",
}


@dataclass(frozen=True, slots=True)
class CapacityWorkload:
    tenants: int
    subscribers_per_tenant: int
    peak_factor: float
    # (family, mean events per second for all tenants together), in file order.
    events_per_second: tuple[tuple[str, float], ...]
    reads: tuple[str, ...]
    bus_latency: Latency
    balancer: Balancer
    seed: int
    source: str

    @property
    def subscribers(self) -> int:
        return self.tenants * self.subscribers_per_tenant

    def peak_rates(self) -> tuple[tuple[str, float], ...]:
        return tuple(
            (family, rate * self.peak_factor) for family, rate in self.events_per_second
        )

    def peak_events_per_s(self) -> float:
        return sum(rate for _, rate in self.peak_rates())

    def peak_deliveries_per_s(self) -> float:
        """Frames per second the fleet writes at the peak: each event reaches every
        stream of its tenant that reads its family."""
        read = set(self.reads)
        return sum(
            rate * self.subscribers_per_tenant
            for family, rate in self.peak_rates()
            if family in read
        )

    def scopes(self, catalog: Catalog) -> tuple[str, ...]:
        """The permissions a stream holds to read ``reads``."""
        wanted = set(self.reads)
        return tuple(
            sorted(
                {
                    row.required_permission
                    for row in catalog.rows.values()
                    if row.family in wanted
                }
            )
        )


def load_workload(path: str | Path, catalog: Catalog | None = None) -> CapacityWorkload:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise CapacityError(
            f"cannot read the workload ({error.strerror or error})", where=source
        ) from error
    except UnicodeDecodeError as error:
        raise CapacityError("the file is not UTF-8 text", where=source) from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CapacityError(f"not valid TOML ({error})", where=source) from error
    return parse_workload(document, source=source, catalog=catalog)


def parse_workload(
    document: Mapping[str, Any], *, source: str, catalog: Catalog | None = None
) -> CapacityWorkload:
    catalog = catalog or load_catalog(None)
    families = sorted(
        {row.family for row in catalog.rows.values() if row.type != "batch.completed"}
    )

    def fail(key: str, message: str) -> CapacityError:
        return CapacityError(f"key '{key}': {message}", where=source)

    unknown = sorted(set(document) - KEYS)
    if unknown:
        raise fail(
            unknown[0], f"unknown key; expected one of {', '.join(sorted(KEYS))}"
        )

    def whole(key: str, *, default: int | None = None, low: int = 1) -> int:
        value = document.get(key, default)
        if value is None:
            raise fail(key, "required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(key, f"expected a whole number, found {value!r}")
        if value < low:
            raise fail(key, f"expected at least {low}, found {value}")
        return value

    def rate(key: str, value: Any, *, low: float, strict: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(key, f"expected a number, found {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < low or (strict and number == low):
            bound = f"above {low:g}" if strict else f"at least {low:g}"
            raise fail(key, f"expected a number {bound}, found {value!r}")
        return number

    tenants = whole("tenants")
    per_tenant = whole("subscribers_per_tenant")
    peak = rate("peak_factor", document.get("peak_factor", 1.0), low=1.0, strict=False)
    table = document.get("events_per_second")
    if not isinstance(table, dict) or not table:
        raise fail(
            "events_per_second",
            "expected a table of families with their events per second, like "
            "claims = 30",
        )
    rates: list[tuple[str, float]] = []
    for family, value in table.items():
        key = f"events_per_second.{family}"
        if family not in families:
            raise fail(
                key,
                f"the catalog has no family '{family}'; it has {', '.join(families)}",
            )
        rates.append((family, rate(key, value, low=0.0, strict=True)))
    reads_value = document.get("reads", [family for family, _ in rates])
    if not isinstance(reads_value, list) or not reads_value:
        raise fail("reads", 'expected a list of families, like ["claims", "denials"]')
    reads: list[str] = []
    for index, family in enumerate(reads_value):
        if not isinstance(family, str) or family not in families:
            raise fail(
                f"reads.{index}",
                f"the catalog has no family {family!r}; it has {', '.join(families)}",
            )
        reads.append(family)
    if not set(reads) & {family for family, _ in rates}:
        raise fail("reads", "the streams read none of the families that have events")
    latency_spec = document.get("bus_latency", "exp:2ms")
    try:
        if isinstance(latency_spec, bool) or not isinstance(
            latency_spec, str | int | float
        ):
            raise ConfigError("expected a latency spec")
        latency = (
            Latency.parse(latency_spec)
            if isinstance(latency_spec, str)
            else Latency.fixed(float(latency_spec))
        )
    except ConfigError as error:
        raise fail(
            "bus_latency",
            f"{error}; write it like 'exp:2ms', '5ms' or 'fixed:0'",
        ) from None
    balancer_name = document.get("balancer", "random")
    balancer = next((name for name in BALANCERS if name == balancer_name), None)
    if balancer is None:
        raise fail(
            "balancer",
            f"expected one of {', '.join(BALANCERS)}, found {balancer_name!r}",
        )
    seed = whole("seed", default=1, low=0)
    return CapacityWorkload(
        tenants=tenants,
        subscribers_per_tenant=per_tenant,
        peak_factor=peak,
        events_per_second=tuple(rates),
        reads=tuple(dict.fromkeys(reads)),
        bus_latency=latency,
        balancer=balancer,
        seed=seed,
        source=source,
    )
