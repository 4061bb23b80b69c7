"""Submission models: how each trading partner sends its interchanges.

The format is documented in ``default_model.toml``, which is also the built-in
model and the base layer under every model file: built-in ``[defaults]``, then the
file's ``[defaults]``, then each partner's own tables.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hub.core import TENANT_PATTERN, TOKEN_TEXT_PATTERN

from ._arrivals import Arrivals, FloatArray, IntArray, Partner, arrivals_from_events
from ._errors import TuningInputError

BUILTIN_SOURCE = "built-in default model"
# Above this a model would not fit a laptop's memory during the sweep.
MAX_EVENTS = 20_000_000
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PARAMETERS = {
    "fixed": ("value",),
    "uniform": ("min", "max"),
    "exponential": ("mean",),
    "lognormal": ("median", "sigma"),
}
_PARTNER_TABLES = ("events", "gap", "pause", "between", "transit")
_PARTNER_KEYS = frozenset({"id", "tenant", "interchanges", *_PARTNER_TABLES})


@dataclass(frozen=True, slots=True)
class Distribution:
    """Values drawn by ``kind``; ``cap``, when set, is the largest value drawn."""

    kind: str
    parameters: tuple[float, ...]
    cap: float | None = None

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        p = self.parameters
        if self.kind == "fixed":
            values = np.full(size, p[0])
        elif self.kind == "uniform":
            values = rng.uniform(p[0], p[1], size)
        elif self.kind == "exponential":
            values = rng.exponential(p[0], size)
        else:
            values = rng.lognormal(math.log(p[0]), p[1], size)
        if self.cap is not None:
            np.minimum(values, self.cap, out=values)
        return values


@dataclass(frozen=True, slots=True)
class Pause:
    probability: float
    length: Distribution | None


@dataclass(frozen=True, slots=True)
class PartnerModel:
    partner: Partner
    interchanges: int
    events: Distribution
    gap: Distribution
    pause: Pause
    between: Distribution
    transit: Distribution


@dataclass(frozen=True, slots=True)
class SubmissionModel:
    source: str
    seed: int
    start_s: float
    partners: tuple[PartnerModel, ...]

    def generate(self, seed: int | None = None) -> Arrivals:
        """Every partner's arrivals; each partner has its own stream of draws, so
        adding or removing a partner leaves the others' arrivals unchanged."""
        used_seed = self.seed if seed is None else seed
        parts = []
        events = 0
        for model in self.partners:
            parts.append(
                _generate_partner(model, used_seed, MAX_EVENTS - events, self.source)
            )
            events += int(parts[-1][0].size)

        offsets = np.cumsum([0] + [model.interchanges for model in self.partners])
        isa13: list[str] = []
        for part in parts:
            isa13.extend(part[3])
        return arrivals_from_events(
            source=self.source,
            epoch_s=self.start_s,
            partners=tuple(model.partner for model in self.partners),
            interchange_partner=np.repeat(
                np.arange(len(self.partners)),
                [model.interchanges for model in self.partners],
            ),
            interchange_isa13=tuple(isa13),
            event_interchange=np.concatenate(
                [part[0] + offsets[index] for index, part in enumerate(parts)]
            ),
            event_arrival_s=np.concatenate([part[2] for part in parts]),
            event_occurred_s=np.concatenate([part[1] for part in parts]),
        )


def _generate_partner(
    model: PartnerModel, seed: int, room: int, source: str
) -> tuple[IntArray, FloatArray, FloatArray, list[str]]:
    label_hash = int.from_bytes(
        hashlib.sha256(model.partner.label.encode()).digest()[:8], "big"
    )
    rng = np.random.default_rng([seed, label_hash])
    count = model.interchanges

    sizes = np.maximum(1, np.rint(model.events.sample(rng, count))).astype(np.int64)
    total = int(sizes.sum())
    if total > room:
        raise TuningInputError(
            f"the model would generate more than {MAX_EVENTS:,} events (partner "
            f"{model.partner.label} alone draws {total:,}); lower interchanges or "
            "events",
            where=source,
        )
    steps = model.gap.sample(rng, total)
    pause = model.pause
    if pause.length is not None and pause.probability > 0:
        paused = rng.random(total) < pause.probability
        steps[paused] = pause.length.sample(rng, int(paused.sum()))
    # The first event of an interchange follows the previous interchange's last one
    # after an idle time instead of an in-interchange gap.
    firsts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    steps[firsts] = model.between.sample(rng, count)
    occurred = np.cumsum(steps)
    arrival = occurred + model.transit.sample(rng, total)

    first_isa13 = int(rng.integers(1, 900_000_000))
    isa13 = [f"{(first_isa13 + k) % 1_000_000_000:09d}" for k in range(count)]
    return np.repeat(np.arange(count), sizes), occurred, arrival, isa13


# -- reading ------------------------------------------------------------------------


def default_model_text() -> str:
    return resources.files("tuning").joinpath("default_model.toml").read_text("utf-8")


def default_model() -> SubmissionModel:
    return parse_model(default_model_text(), BUILTIN_SOURCE)


def load_model(path: str | Path) -> SubmissionModel:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TuningInputError(
            f"not UTF-8 text ({error.reason} at byte {error.start})", where=source
        ) from error
    except OSError as error:
        raise TuningInputError(
            f"cannot read the model: {error.strerror or error}", where=source
        ) from error
    return parse_model(text, source)


def parse_model(text: str, source: str) -> SubmissionModel:
    document = _toml(text, source)
    if source == BUILTIN_SOURCE:
        builtin: dict[str, Any] = {}
    else:
        builtin = _toml(default_model_text(), BUILTIN_SOURCE)["defaults"]

    _refuse_unknown(
        document, {"seed", "tenant", "start", "defaults", "partners"}, f"{source}: key "
    )
    seed = document.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TuningInputError(
            f"expected a whole number >= 0, found {seed!r}", where=f"{source}: key seed"
        )
    tenant = document.get("tenant", "acme")
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise TuningInputError(
            f"expected a tenant slug (lower case letters, digits and '-'), found "
            f"{tenant!r}",
            where=f"{source}: key tenant",
        )
    start_s = _start(document.get("start", "2026-01-05T08:00:00Z"), source)

    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise TuningInputError("expected a table", where=f"{source}: key defaults")
    _refuse_unknown(
        defaults, _PARTNER_KEYS - {"id", "tenant"}, f"{source}: key defaults."
    )
    layered = {**builtin, **defaults}

    partners_raw = document.get("partners")
    if not isinstance(partners_raw, list) or not partners_raw:
        raise TuningInputError(
            "expected at least one [[partners]] table with an id",
            where=f"{source}: key partners",
        )
    partners: list[PartnerModel] = []
    seen: set[Partner] = set()
    for number, raw in enumerate(partners_raw, start=1):
        model = _partner(raw, number, layered, tenant, source)
        if model.partner in seen:
            raise TuningInputError(
                f"trading partner {model.partner.label} appears twice",
                where=f"{source}: [[partners]] #{number}",
            )
        seen.add(model.partner)
        partners.append(model)
    return SubmissionModel(
        source=source, seed=seed, start_s=start_s, partners=tuple(partners)
    )


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TuningInputError(f"not valid TOML: {error}", where=source) from error


def _start(value: object, source: str) -> float:
    where = f"{source}: key start"
    moment = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise TuningInputError(
            f"expected an RFC 3339 timestamp with a zone, like "
            f"'2026-01-05T08:00:00Z', found {value!r}",
            where=where,
        )
    return moment.timestamp()


def _partner(
    raw: object, number: int, layered: dict[str, Any], tenant: str, source: str
) -> PartnerModel:
    where = f"{source}: [[partners]] #{number}"
    if not isinstance(raw, dict):
        raise TuningInputError("expected a table", where=where)
    partner_id = raw.get("id")
    if not isinstance(partner_id, str) or not TOKEN_TEXT_PATTERN.match(partner_id):
        raise TuningInputError(
            f"expected a trading partner id (1 to 128 printable ASCII characters "
            f"without spaces), found {partner_id!r}",
            where=f"{where}: key id",
        )
    where = f"{where} '{partner_id}'"
    _refuse_unknown(raw, _PARTNER_KEYS, f"{where}: key ")
    partner_tenant = raw.get("tenant", tenant)
    if not isinstance(partner_tenant, str) or not TENANT_PATTERN.match(partner_tenant):
        raise TuningInputError(
            f"expected a tenant slug (lower case letters, digits and '-'), found "
            f"{partner_tenant!r}",
            where=f"{where}: key tenant",
        )
    merged = {**layered, **raw}
    for key in ("interchanges", *_PARTNER_TABLES):
        if key not in merged:
            raise TuningInputError(
                "missing, and neither [defaults] nor the built-in model gives it",
                where=f"{where}: key {key}",
            )

    interchanges = merged["interchanges"]
    if (
        not isinstance(interchanges, int)
        or isinstance(interchanges, bool)
        or not 1 <= interchanges <= MAX_EVENTS
    ):
        raise TuningInputError(
            f"expected a whole number from 1 to {MAX_EVENTS:,}, found {interchanges!r}",
            where=f"{where}: key interchanges",
        )
    pause_raw = merged["pause"]
    return PartnerModel(
        partner=Partner(partner_tenant, partner_id),
        interchanges=interchanges,
        events=_distribution(merged["events"], f"{where}: key events", counts=True),
        gap=_distribution(merged["gap"], f"{where}: key gap", counts=False),
        pause=_pause(pause_raw, f"{where}: key pause"),
        between=_distribution(merged["between"], f"{where}: key between", counts=False),
        transit=_distribution(merged["transit"], f"{where}: key transit", counts=False),
    )


def _pause(raw: object, where: str) -> Pause:
    if not isinstance(raw, dict):
        raise TuningInputError(
            "expected a table like { probability = 0.002, distribution = "
            '"uniform", min = "2s", max = "9s" }',
            where=where,
        )
    probability = raw.get("probability")
    if (
        not isinstance(probability, int | float)
        or isinstance(probability, bool)
        or not 0 <= probability <= 1
    ):
        raise TuningInputError(
            f"expected a number from 0 to 1, found {probability!r}",
            where=f"{where}.probability",
        )
    rest = {key: value for key, value in raw.items() if key != "probability"}
    if not rest and probability == 0:
        return Pause(0.0, None)
    return Pause(float(probability), _distribution(rest, where, counts=False))


def _distribution(raw: object, where: str, *, counts: bool) -> Distribution:
    if not isinstance(raw, dict):
        raise TuningInputError(
            'expected a distribution table like { distribution = "exponential", '
            'mean = "400ms" }',
            where=where,
        )
    kind = raw.get("distribution")
    if kind not in _PARAMETERS:
        raise TuningInputError(
            f"expected one of {', '.join(repr(k) for k in _PARAMETERS)}, "
            f"found {kind!r}",
            where=f"{where}.distribution",
        )
    names = _PARAMETERS[kind]
    _refuse_unknown(raw, {"distribution", "cap", *names}, f"{where}.")
    values: list[float] = []
    for name in names:
        if name not in raw:
            raise TuningInputError(
                f"missing; a {kind} distribution needs {', '.join(names)}",
                where=f"{where}.{name}",
            )
        if name == "sigma":
            values.append(_number(raw[name], f"{where}.{name}", minimum=0.0))
        else:
            values.append(_value(raw[name], f"{where}.{name}", counts=counts))
    if kind == "uniform" and values[0] > values[1]:
        raise TuningInputError("expected min to be at most max", where=f"{where}.min")
    if kind in ("exponential", "lognormal") and values[0] <= 0:
        raise TuningInputError(
            "expected a value above zero", where=f"{where}.{names[0]}"
        )
    cap = None
    if "cap" in raw:
        cap = _value(raw["cap"], f"{where}.cap", counts=counts)
        if cap <= 0:
            raise TuningInputError("expected a value above zero", where=f"{where}.cap")
    return Distribution(kind, tuple(values), cap)


def _value(raw: object, where: str, *, counts: bool) -> float:
    if counts:
        return _number(raw, where, minimum=0.0)
    if isinstance(raw, str):
        match = _DURATION.match(raw)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    elif (
        isinstance(raw, int | float)
        and not isinstance(raw, bool)
        and raw >= 0
        and math.isfinite(raw)
    ):
        return float(raw)
    raise TuningInputError(
        f"expected a duration like '250ms', '2s', '3m' or a number of seconds "
        f">= 0, found {raw!r}",
        where=where,
    )


def _number(raw: object, where: str, *, minimum: float) -> float:
    if (
        isinstance(raw, int | float)
        and not isinstance(raw, bool)
        and math.isfinite(raw)
        and raw >= minimum
    ):
        return float(raw)
    raise TuningInputError(
        f"expected a number >= {minimum:g}, found {raw!r}", where=where
    )


def _refuse_unknown(
    table: dict[str, Any], allowed: set[str] | frozenset[str], where: str
) -> None:
    """``where`` is the location up to the key, like ``"model.toml: key gap."``."""
    for key in table:
        if key not in allowed:
            raise TuningInputError(
                f"unknown key; expected one of {', '.join(sorted(allowed))}",
                where=f"{where}{key}",
            )
