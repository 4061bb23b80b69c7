"""Write ``quiet_window_log.csv``: a known log of batch arrivals for the tuner's tests.

Run from the repository root: ``.venv/bin/python tests/data/make_quiet_window_log.py``.
Seeded, so the same Faker version writes the same file; the tests read the committed
file, and name its partners, so rewrite their expectations if you regenerate it with
another Faker.

What the log holds, and so what the tuner must recommend on it:

- 3 tenants and 5 trading partners (names from Faker), 100 interchanges each, of 2 to
  12 events, with ordinary gaps of 50 ms to 1.5 s inside an interchange;
- for partners 1 to 4, six interchanges hold one pause of 3.0 to 5.5 s and two hold
  one pause of exactly 5.8 s, the longest gap of that partner;
- for the fifth partner, the slow one, eight interchanges hold a pause of 6 to 11 s
  and two a pause of exactly 11.8 s, the longest gap of the whole log;
- 20 s to 15 min between one interchange and the next of the same partner.

At the default target of 0.1 %, one premature interchange is already 1 % of a
partner's 100 and 0.2 % of the 500 in all, so the target tolerates none: the
recommendation is the smallest window longer than the longest pause. On the default
grid that is 6000 ms for partners 1 to 4 and 12000 ms for the slow partner, for every
partner at once and overall.
"""

from __future__ import annotations

import csv
import random
import re
from datetime import UTC, datetime
from pathlib import Path

from faker import Faker

SEED = 20260302
PARTNERS = 5
TENANT_OF_PARTNER = (0, 0, 1, 2, 2)
INTERCHANGES = 100
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
OUTPUT = Path(__file__).with_name("quiet_window_log.csv")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


def pauses(rng: random.Random, slow: bool) -> dict[int, int]:
    """Interchange index -> length in ms of its one pause."""
    chosen = rng.sample(range(INTERCHANGES), 10)
    plan: dict[int, int] = {}
    for order, interchange in enumerate(chosen):
        if order < 2:
            plan[interchange] = 11_800 if slow else 5_800
        elif slow:
            plan[interchange] = rng.randint(6_000, 11_000)
        elif order < 8:
            plan[interchange] = rng.randint(3_000, 5_500)
    return plan


def main() -> None:
    Faker.seed(SEED)
    fake = Faker("en_US")
    rng = random.Random(SEED)
    tenants = [slug(fake.unique.company()) for _ in range(3)]
    partners = [slug(fake.unique.company()) + "-edi" for _ in range(PARTNERS)]

    rows: list[tuple[int, int, str, str, str]] = []
    for index, partner in enumerate(partners):
        tenant = tenants[TENANT_OF_PARTNER[index]]
        plan = pauses(rng, slow=index == PARTNERS - 1)
        control = rng.randint(1, 900_000_000)
        now_ms = rng.randint(0, 600_000)
        for interchange in range(INTERCHANGES):
            size = rng.randint(2, 12)
            gaps = [rng.randint(50, 1_500) for _ in range(size - 1)]
            if interchange in plan:
                gaps[rng.randrange(len(gaps))] = plan[interchange]
            isa13 = f"{control + interchange:09d}"
            for gap in [0, *gaps]:
                now_ms += gap
                rows.append((now_ms, index, tenant, partner, isa13))
            now_ms += rng.randint(20_000, 900_000)

    rows.sort()
    start_ms = int(START.timestamp() * 1000)
    with OUTPUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["tenant_id", "trading_partner_id", "isa13", "occurred_at"])
        for at_ms, _, tenant, partner, isa13 in rows:
            moment = datetime.fromtimestamp((start_ms + at_ms) / 1000, UTC)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"
            writer.writerow([tenant, partner, isa13, stamp])
    print(f"wrote {len(rows)} arrivals to {OUTPUT}")


if __name__ == "__main__":
    main()
