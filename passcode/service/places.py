"""Places and their policies: the in-process catalog verify reads, and the use cases that
change it.

Every replica holds every place and the policy in force per place type and per place
(:class:`PlaceDirectory`), loaded whole by the catalog watcher at start-up and again whenever
the places catalog's version moves, so ``policy_for`` costs verify no query. A change made on
this replica is in force at its next scan (:meth:`CatalogWatcher.changed`); on the others
within about the watcher's poll interval (1 s).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from passcode.domain import fields
from passcode.domain.policy import DEFAULT_POLICY, VALUE_SETS, PlacePolicy, parse_policy
from passcode.errors import NotFound, ValidationFailed
from passcode.service.catalogs import CatalogWatcher
from passcode.store import places
from passcode.store.catalogs import Catalog
from passcode.store.pg import Pool
from passcode.store.places import SCOPE_PLACE, SCOPE_TYPE, Place

log = logging.getLogger(__name__)

MAX_TYPE = 64
MAX_POLICY_BYTES = 64 * 1024  # 64 rules of about 1 kB; the default policy is about 4 kB


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """The policy a place gets, and where it comes from: ``place`` (its own), ``type`` (its
    type's) or ``default`` (:data:`DEFAULT_POLICY`)."""

    policy: PlacePolicy
    source: str


class PlaceDirectory:
    """Every place and the policies in force, swapped whole on each reload."""

    def __init__(
        self,
        pool: Pool,
        watcher: CatalogWatcher,
        *,
        timeout: float,
        value_sets: Mapping[str, Sequence[str]] = VALUE_SETS,
    ) -> None:
        self.pool = pool
        self.watcher = watcher
        self.timeout = timeout
        self.value_sets = value_sets  # what rules read as external.valueSets
        self._places: dict[str, Place] = {}
        self._by_type: dict[str, PlacePolicy] = {}
        self._by_place: dict[str, PlacePolicy] = {}
        watcher.register(Catalog.PLACES, self.reload)

    async def reload(self) -> None:
        """Load the catalog whole (the watcher calls this at start-up and on every change)."""
        catalog = await places.load_catalog(self.pool, timeout=self.timeout)
        by_type = _parsed(catalog.type_policies)
        by_place = _parsed(catalog.place_policies)
        # Three plain assignments, no await between them: a scan sees one catalog or the other.
        self._places, self._by_type, self._by_place = catalog.places, by_type, by_place

    def policy_for(self, place: str) -> PlacePolicy:
        """The policy a scan at ``place`` is judged by (verify's hot path: dictionary reads)."""
        own = self._by_place.get(place)
        if own is not None:
            return own
        known = self._places.get(place)
        if known is not None:
            by_type = self._by_type.get(known.type)
            if by_type is not None:
                return by_type
        return DEFAULT_POLICY

    def resolve(self, place: str) -> ResolvedPolicy:
        """:meth:`policy_for`, saying where the policy comes from (for operators)."""
        policy = self.policy_for(place)
        if place in self._by_place:
            return ResolvedPolicy(policy, SCOPE_PLACE)
        if policy is not DEFAULT_POLICY:
            return ResolvedPolicy(policy, SCOPE_TYPE)
        return ResolvedPolicy(policy, "default")

    def info(self, place: str) -> tuple[str, str] | None:
        """The place's (name, type), or None for a place text no operator has described."""
        known = self._places.get(place)
        return None if known is None else (known.name, known.type)


def _parsed(stored: Mapping[str, places.StoredPolicy]) -> dict[str, PlacePolicy]:
    """Stored policies as domain values; one that no longer parses (a limit lowered since it
    was stored) is left out, so its place falls back to the next policy, loudly."""
    parsed: dict[str, PlacePolicy] = {}
    for target, entry in stored.items():
        try:
            parsed[target] = parse_policy(entry.policy, version=entry.version)
        except ValueError as exc:
            log.error(
                "stored %s policy for %r v%d refused, not in force: %s",
                entry.scope,
                target,
                entry.version,
                exc,
            )
    return parsed


def _field(rule: Any, value: str, name: str) -> str:
    try:
        checked: str = rule(value)
    except fields.FieldError as exc:
        raise ValidationFailed(f"{name} {exc}", errors=[name]) from exc
    return checked


def place_type(value: str) -> str:
    """A place type (metro, hospital, mall, …): a line of at most 64 characters."""
    return _field(lambda v: fields.line(v, max_length=MAX_TYPE), value, "type")


async def set_place(
    directory: PlaceDirectory, place: str, *, type_: str, name: str, actor: str
) -> bool:
    """Create or describe a place (role operator); True when it is new. Audited
    (``place.set``); in force on this replica at once, on the others within about 1 s."""
    place = _field(fields.place, place, "place")
    checked_type = place_type(type_)
    checked_name = _field(fields.place, name, "name")
    created = await places.put_place(
        directory.pool,
        place,
        type_=checked_type,
        name=checked_name,
        actor=actor,
        timeout=directory.timeout,
    )
    await directory.watcher.changed(Catalog.PLACES)
    return created


async def set_policy(
    directory: PlaceDirectory, *, scope: str, target: str, policy: Any, actor: str
) -> PlacePolicy:
    """A new version of a place type's or a place's policy (role health officer), checked
    whole first (a 400 naming what is wrong); audited (``place_policy.set``); in force at the
    next scan on this replica, within about 1 s on the others. A place must exist first."""
    if scope == SCOPE_TYPE:
        target = place_type(target)
    elif scope == SCOPE_PLACE:
        target = _field(fields.place, target, "place")
        if await places.find_place(directory.pool, target, timeout=directory.timeout) is None:
            raise NotFound(f"no place {target!r}: an operator creates it first")
    else:
        raise ValueError(f"unknown policy scope {scope!r}")
    try:
        parsed = parse_policy(policy)
    except ValueError as exc:
        raise ValidationFailed(f"policy: {exc}", errors=[str(exc)]) from exc
    version = await places.add_policy(
        directory.pool,
        scope=scope,
        target=target,
        policy=policy,
        actor=actor,
        timeout=directory.timeout,
    )
    await directory.watcher.changed(Catalog.PLACES)
    return PlacePolicy(parsed.accepts, parsed.rules, version)
