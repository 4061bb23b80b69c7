"""Who is in the world: tenants, their users and streams, and trading partners.

Names come from Faker, seeded from the world seed; users draw roles from the
catalog's role table, and their tokens carry exactly the scopes those roles seed.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from faker import Faker

from hub.core import Catalog, Principal

from ._config import Topology, WorldConfig
from ._random import Distribution, stream


class ClientKind(enum.StrEnum):
    STEADY = "steady"  # reads every frame as soon as it is written
    SLOW = "slow"  # reads one frame at a time at its drain rate
    FLAPPING = "flapping"  # its network goes dark now and then, then comes back
    HALF_OPEN = "half_open"  # its connection dies silently; the user comes back later


@dataclass(frozen=True, slots=True)
class Tenant:
    slug: str
    name: str
    rank: int  # 0 is the largest
    weight: float


@dataclass(frozen=True, slots=True)
class User:
    subject: str
    name: str
    tenant: str
    roles: tuple[str, ...]
    principal: Principal


@dataclass(frozen=True, slots=True)
class TradingPartner:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One browser tab: a user, a behaviour, and when it first connects.

    Clients of a subscriber group carry its name, its pinned replica and the
    behaviour parameters it sets; the others take ``[clients]``.
    """

    id: str
    user: User
    kind: ClientKind
    connect_at_s: float
    group: str = ""
    replica: str | None = None
    read_rate_per_s: float | None = None
    dark_after: Distribution | None = None
    dark_for: Distribution | None = None
    # Its place in its group (or in its tenant's drawn streams): where a client
    # that walks the replicas itself starts.
    position: int = 0

    @property
    def tenant(self) -> str:
        return self.user.tenant


@dataclass(frozen=True, slots=True)
class Population:
    tenants: tuple[Tenant, ...]
    users: tuple[User, ...]
    partners: tuple[TradingPartner, ...]
    clients: tuple[ClientSpec, ...]

    def tenant(self, reference: str | int) -> Tenant:
        """A tenant by slug or by rank."""
        if isinstance(reference, int):
            return self.tenants[reference]
        for tenant in self.tenants:
            if tenant.slug == reference:
                return tenant
        raise KeyError(reference)


def build_population(world: WorldConfig, catalog: Catalog) -> Population:
    topology = world.topology
    fake = Faker("en_US")
    fake.seed_instance(stream(world.seed, "faker").getrandbits(64))
    rng = stream(world.seed, "population")

    named = list(topology.tenant_names)
    for group in topology.groups:
        if group.tenant not in named:
            named.append(group.tenant)
    tenants = _tenants(fake, max(topology.tenants, len(named)), named, topology)
    partners = _partners(fake, topology.trading_partners)

    weights = [tenant.weight for tenant in tenants]
    streams_per_tenant = apportion(topology.subscribers, weights)
    role_names = list(topology.roles)
    role_weights = [topology.roles[name] for name in role_names]
    mix = world.clients.mix
    kinds = list(ClientKind)
    kind_weights = [mix.steady, mix.slow, mix.flapping, mix.half_open]

    users: list[User] = []
    clients: list[ClientSpec] = []
    for tenant, streams in zip(tenants, streams_per_tenant, strict=True):
        if streams == 0:
            continue
        count = max(1, round(streams / topology.streams_per_user))
        domain = f"{tenant.slug}.example"
        members: list[User] = []
        taken: set[str] = set()
        for _ in range(count):
            roles = _draw_roles(rng, role_names, role_weights, topology)
            handle = fake.user_name()
            while handle in taken:
                handle = f"{handle}{rng.randint(0, 9)}"
            taken.add(handle)
            subject = f"{handle}@{domain}"
            principal = Principal(
                subject=subject,
                tenant_id=tenant.slug,
                scopes=catalog.scopes_for_roles(roles),
                roles=frozenset(roles),
                # A user's tabs share one token, so they share its stream cap.
                token_id=hashlib.sha256(subject.encode()).hexdigest()[:16],
            )
            members.append(User(subject, fake.name(), tenant.slug, roles, principal))
        users.extend(members)
        for index in range(streams):
            # Every user gets a stream before any gets a second one.
            user = members[index] if index < len(members) else rng.choice(members)
            kind = rng.choices(kinds, kind_weights)[0]
            connect_at = rng.uniform(0.0, topology.connect_over_s)
            clients.append(
                ClientSpec(
                    f"c{len(clients) + 1:06d}", user, kind, connect_at, position=index
                )
            )
    for group in topology.groups:
        scopes = catalog.scopes_for_roles(group.roles) | frozenset(group.scopes)
        for index in range(group.count):
            subject = f"{group.name}-{index + 1}@{group.tenant}.example"
            principal = Principal(
                subject=subject,
                tenant_id=group.tenant,
                scopes=scopes,
                roles=frozenset(group.roles),
                token_id=hashlib.sha256(subject.encode()).hexdigest()[:16],
            )
            user = User(subject, subject, group.tenant, tuple(group.roles), principal)
            users.append(user)
            spread = group.connect_over_s * index / group.count
            clients.append(
                ClientSpec(
                    f"c{len(clients) + 1:06d}",
                    user,
                    ClientKind(group.behaviour),
                    group.connect_at_s + spread,
                    group=group.name,
                    replica=group.replica,
                    read_rate_per_s=group.read_rate_per_s,
                    dark_after=group.dark_after,
                    dark_for=group.dark_for,
                    position=index,
                )
            )
    return Population(tuple(tenants), tuple(users), tuple(partners), tuple(clients))


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by largest remainders."""
    weight_sum = sum(weights)
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [total * weight / weight_sum for weight in weights]
    shares = [math.floor(value) for value in exact]
    order = sorted(
        range(len(weights)), key=lambda index: (shares[index] - exact[index], index)
    )
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    return shares


def _draw_roles(
    rng: random.Random, names: list[str], weights: list[float], topology: Topology
) -> tuple[str, ...]:
    """Distinct roles, drawn by weight without replacement."""
    limit = min(topology.max_roles_per_user, len(names))
    wanted = rng.randint(1, limit)
    pool = list(zip(names, weights, strict=True))
    chosen: list[str] = []
    while len(chosen) < wanted:
        name = rng.choices([n for n, _ in pool], [w for _, w in pool])[0]
        chosen.append(name)
        pool = [(n, w) for n, w in pool if n != name]
    return tuple(sorted(chosen))


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str, limit: int = 40) -> str:
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")[:limit].rstrip("-")
    return slug or "tenant"


def _tenants(
    fake: Faker, count: int, names: Sequence[str], topology: Topology
) -> list[Tenant]:
    skew = topology.tenant_skew
    taken = set(names)
    tenants: list[Tenant] = []
    for rank in range(count):
        company = fake.company()
        if rank < len(names):
            slug = names[rank]
        else:
            base = slugify(company)
            slug = base
            suffix = 2
            while slug in taken:
                slug = f"{base}-{suffix}"
                suffix += 1
            taken.add(slug)
        tenants.append(Tenant(slug, company, rank, 1.0 / (rank + 1) ** skew))
    return tenants


def _partners(fake: Faker, count: int) -> list[TradingPartner]:
    partners: list[TradingPartner] = []
    taken: set[str] = set()
    for _ in range(count):
        name = f"{fake.last_name()} Clearinghouse"
        base = slugify(name.removesuffix(" Clearinghouse"), 24)
        ident = base
        suffix = 2
        while ident in taken:
            ident = f"{base}{suffix}"
            suffix += 1
        taken.add(ident)
        partners.append(TradingPartner(ident, name))
    return partners
