"""Load-test seeding at COPY speed: citizens, their declarations and statuses, and terminals.

``passcode seed`` writes straight to the stores, never one request per citizen: subjects,
declarations and statuses go to PostgreSQL with ``COPY`` in chunks (one transaction each), each
committed chunk's statuses go to Redis through :meth:`Cache.put_statuses` (the same key layout and
version-guarded script as every other status write), and only then are the rows marked
``cached_version = version`` (a chunk whose Redis write fails stays behind and the drain's sync
repairs it, as for any status write). Terminals are registered like ``passcode terminal add``
(audited, as ``seed:<run>``).

Every seeded status is what :func:`derive_status` gives for the declaration stored with it
(green: healthy; yellow: fever; red: close contact), so the service, re-deriving later, agrees.
The user ids carry a run id (``load-<run>-<n>``): seeding again with another run adds citizens
and never touches earlier ones; a run id already used is refused before anything is written.

The output file holds what the Locust scenarios need: the identity provider's issuer and
audience, the dev key's path, pass timing, the user ids by colour, a small set of citizens
reserved for authority overrides, the exact declaration bodies per colour, and terminal keys.
It holds terminal keys, so it is written with mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from passcode.config import Settings
from passcode.domain.clock import utc_now
from passcode.domain.masking import mask_name
from passcode.domain.model import Color
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Declaration, Policy, body_hash, derive_status
from passcode.domain.status import LiveStatus, next_status
from passcode.service import status
from passcode.service.terminals import NewTerminal, register_terminal
from passcode.store import pg
from passcode.store.cache import Cache
from passcode.store.keyring import load_or_create_ed25519
from passcode.store.statuses import declaration_columns
from passcode.testing import declaration_bodies, full_name
from passcode.wiring import DEV_IDP_KID, dev_idp_key_path, open_cache, server_secret

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_COLORS = (0.93, 0.05, 0.02)  # shares of green, yellow, red
CHUNK = 25_000  # citizens per PostgreSQL transaction and Redis pass
COPY_TIMEOUT = 300.0  # one chunk's COPY; the pool's per-query deadline is for service queries


class SeedError(ValueError):
    """The seeding request cannot be carried out (bad shares, a run id already used)."""


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What one seeding run created and how long each phase took (seconds)."""

    run_id: str
    citizens: dict[str, int]
    authority: int
    terminals: int
    out: Path
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        total = sum(self.citizens.values())
        by_color = ", ".join(f"{n} {c}" for c, n in self.citizens.items())
        phases = ", ".join(f"{name} {sec:.2f}s" for name, sec in self.phases.items())
        rate = total / self.seconds if self.seconds > 0 else 0.0
        return (
            f"seeded run {self.run_id}: {total} citizens ({by_color}; {self.authority} reserved"
            f" for overrides) and {self.terminals} terminals in {self.seconds:.2f}s"
            f" ({rate:,.0f} citizens/s; {phases}); wrote {self.out}"
        )


def _check_shares(colors: Sequence[float]) -> tuple[float, float, float]:
    if len(colors) != 3 or any(not 0 <= share <= 1 for share in colors):
        raise SeedError("colour shares are three numbers (green, yellow, red) between 0 and 1")
    green, yellow, red = colors
    if abs(green + yellow + red - 1) > 1e-6:
        raise SeedError(f"colour shares must add up to 1, not {green + yellow + red:g}")
    return green, yellow, red


def _plan(citizens: int, shares: tuple[float, float, float], rng: random.Random) -> list[Color]:
    """Each citizen's colour, in random order, with counts matching the shares."""
    _, yellow, red = shares
    n_yellow = round(citizens * yellow)
    n_red = min(round(citizens * red), citizens - n_yellow)
    plan = (
        [Color.YELLOW] * n_yellow
        + [Color.RED] * n_red
        + [Color.GREEN] * (citizens - n_yellow - n_red)
    )
    rng.shuffle(plan)
    return plan


@dataclass(slots=True)
class Chunk:
    """Rows of citizens for one COPY transaction (:func:`copy_chunk`), and their live statuses."""

    subjects: list[tuple[bytes, bytes, bytes, str, datetime]] = field(default_factory=list)
    declarations: list[tuple[bytes, bytes, Decimal, list[str], list[str], bool, datetime]] = field(
        default_factory=list
    )
    statuses: list[tuple[bytes, str, str, datetime, int, int, datetime]] = field(
        default_factory=list
    )
    live: list[tuple[bytes, LiveStatus]] = field(default_factory=list)


def _build_chunk(
    numbers: range,
    plan: list[Color],
    *,
    run_id: str,
    sealer: Sealer,
    issuer: str,
    policy: Policy,
    bodies: dict[Color, dict[str, Any]],
    now: datetime,
    rng: random.Random,
) -> Chunk:
    """Rows for citizens ``numbers``; each status derived by the rules from its declaration."""
    chunk = Chunk()
    hashes = {color: body_hash(body) for color, body in bodies.items()}
    # Declarations spread over a recent window, short of the policy's lifetime of one.
    spread = int(min(3600.0, policy.declaration_ttl.total_seconds() / 10))
    ids = os.urandom(16 * len(numbers))
    for offset, n in enumerate(numbers):
        color = plan[n]
        user_id = f"load-{run_id}-{n}"
        subject = ids[16 * offset : 16 * offset + 16]
        masked = mask_name(full_name(user_id))
        declared_at = now - timedelta(seconds=rng.randint(0, spread))
        decl = Declaration.from_body(bodies[color], declared_at=declared_at)
        derived = derive_status(decl, (), (), now=now, policy=policy)
        if derived is None or derived.color is not color:
            raise SeedError(f"the rules give {derived} for a seeded {color} declaration")
        first = next_status(None, derived, now=now, policy=policy)
        chunk.subjects.append(
            (subject, sealer.user_hash(issuer, user_id), sealer.seal(user_id), masked, now)
        )
        chunk.declarations.append((subject, hashes[color], *declaration_columns(decl)))
        chunk.statuses.append(
            (
                subject,
                derived.color.value,
                derived.reason.value,
                first.valid_until,
                first.version,
                0,
                now,
            )
        )
        chunk.live.append((subject, first.live(masked)))
    return chunk


async def copy_chunk(pool: pg.Pool, chunk: Chunk) -> None:
    """One transaction: the chunk's subjects, declarations and statuses, by COPY (``live`` is
    not written here: the caller puts it in Redis, then marks the statuses cached)."""
    async with pg.acquire(pool, "seed", COPY_TIMEOUT) as conn, conn.transaction():
        await conn.copy_records_to_table(
            "subjects",
            records=chunk.subjects,
            columns=["id", "user_hash", "user_id_enc", "name_masked", "created_at"],
            timeout=COPY_TIMEOUT,
        )
        await conn.copy_records_to_table(
            "declarations",
            records=chunk.declarations,
            columns=[
                "subject_id",
                "request_hash",
                "temperature_c",
                "symptoms",
                "regions",
                "close_contact",
                "declared_at",
            ],
            timeout=COPY_TIMEOUT,
        )
        await conn.copy_records_to_table(
            "statuses",
            records=chunk.statuses,
            columns=[
                "subject_id",
                "color",
                "reason",
                "valid_until",
                "version",
                "cached_version",
                "updated_at",
            ],
            timeout=COPY_TIMEOUT,
        )


def _write_out(out: Path, document: dict[str, Any]) -> None:
    """Atomically, readable by its owner only (it holds terminal keys)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, separators=(",", ":"))
    tmp.replace(out)


async def _seed_citizens(
    pool: pg.Pool,
    cache: Cache,
    plan: list[Color],
    *,
    run_id: str,
    settings: Settings,
    now: datetime,
    rng: random.Random,
    phases: dict[str, float],
) -> None:
    """Chunk by chunk: build rows, COPY them (one transaction), push to Redis, mark cached."""
    sealer = Sealer(server_secret(settings))
    policy = settings.policy()
    bodies = declaration_bodies(policy)
    async with pg.acquire(pool, "seed check", settings.pg_timeout) as conn:
        taken = await conn.fetchval(
            "SELECT 1 FROM subjects WHERE user_hash = $1",
            sealer.user_hash(settings.idp_issuer, f"load-{run_id}-0"),
        )
    if taken:
        raise SeedError(f"run id {run_id!r} was seeded before; pick another (or none)")
    for start in range(0, len(plan), CHUNK):
        mark = time.perf_counter()
        chunk = _build_chunk(
            range(start, min(start + CHUNK, len(plan))),
            plan,
            run_id=run_id,
            sealer=sealer,
            issuer=settings.idp_issuer,
            policy=policy,
            bodies=bodies,
            now=now,
            rng=rng,
        )
        phases["build"] += time.perf_counter() - mark
        mark = time.perf_counter()
        await copy_chunk(pool, chunk)
        phases["postgres"] += time.perf_counter() - mark
        mark = time.perf_counter()
        await status.publish_pooled(pool, cache, chunk.live, timeout=COPY_TIMEOUT)
        phases["redis"] += time.perf_counter() - mark  # and the mark of what Redis took
        log.info("seeded %d of %d citizens", min(start + CHUNK, len(plan)), len(plan))


def _document(
    settings: Settings,
    *,
    run_id: str,
    now: datetime,
    plan: list[Color],
    authority: int | None,
    dev_key: Path | None,
    terminals: list[NewTerminal],
) -> dict[str, Any]:
    """What the Locust scenarios read (see loadtest/README.md)."""
    by_color: dict[str, list[str]] = {color.value: [] for color in Color}
    for n, color in enumerate(plan):
        by_color[color.value].append(f"load-{run_id}-{n}")
    reserved = authority if authority is not None else min(1000, max(1, len(plan) // 1000))
    bodies = declaration_bodies(settings.policy())
    return {
        "format": FORMAT,
        "run_id": run_id,
        "created_at": now.isoformat(),
        "settings": {
            "issuer": settings.issuer,
            "idp_issuer": settings.idp_issuer,
            "idp_audience": settings.idp_audience,
            "dev_idp_kid": DEV_IDP_KID,
            "dev_key_path": str(dev_key) if dev_key is not None else None,
            "pass_ttl": settings.pass_ttl,
            "refresh_margin": settings.refresh_margin,
            "clock_skew": settings.clock_skew,
            "terminal_rate": settings.terminal_rate,
        },
        "declarations": {color.value: body for color, body in bodies.items()},
        "citizens": by_color,
        "authority": by_color[Color.GREEN.value][: max(0, reserved)],
        "terminals": [{"id": str(t.id), "place": t.place, "key": t.key} for t in terminals],
    }


async def seed(
    settings: Settings,
    *,
    citizens: int,
    terminals: int,
    colors: Sequence[float] = DEFAULT_COLORS,
    out: Path,
    run_id: str | None = None,
    authority: int | None = None,
) -> SeedReport:
    """Create ``citizens`` citizens and ``terminals`` terminals; write what load tests need.

    ``colors`` are the shares of green, yellow and red citizens. ``authority`` green citizens
    (default: one per thousand, at least one, at most 1000) are listed apart for authority
    overrides, so scenarios can keep them out of the terminal pool.
    """
    if citizens < 0 or terminals < 0:
        raise SeedError("citizens and terminals cannot be negative")
    if settings.database_url is None or settings.redis_url is None:
        raise SeedError("seeding needs database_url and redis_url")
    shares = _check_shares(colors)
    run = run_id or secrets.token_hex(4)
    if not run.replace("-", "").isalnum() or len(run) > 32:
        raise SeedError("a run id is up to 32 letters, digits and dashes")
    started = time.perf_counter()
    phases: dict[str, float] = {"build": 0.0, "postgres": 0.0, "redis": 0.0}
    rng = random.Random(run)  # noqa: S311  # test data, not a secret
    plan = _plan(citizens, shares, rng)
    dev_key: Path | None = None
    if settings.dev_mode:  # the service shares this key: tokens minted with it are accepted
        dev_key = dev_idp_key_path(settings).resolve()
        load_or_create_ed25519(dev_key)
    now = utc_now(settings.clock)

    pool = await pg.create_pool(
        settings.database_url, timeout=settings.pg_timeout, min_size=1, max_size=2
    )
    cache = open_cache(settings)
    try:
        await pg.migrate(pool)
        await cache.check_layout()
        await _seed_citizens(
            pool, cache, plan, run_id=run, settings=settings, now=now, rng=rng, phases=phases
        )
        mark = time.perf_counter()
        created = [
            await register_terminal(
                pool, f"Load {run} gate {i + 1}", actor=f"seed:{run}", timeout=settings.pg_timeout
            )
            for i in range(terminals)
        ]
        phases["terminals"] = time.perf_counter() - mark
    finally:
        await cache.close()
        await pool.close()

    mark = time.perf_counter()
    document = _document(
        settings,
        run_id=run,
        now=now,
        plan=plan,
        authority=authority,
        dev_key=dev_key,
        terminals=created,
    )
    _write_out(out, document)
    phases["write"] = time.perf_counter() - mark
    return SeedReport(
        run_id=run,
        citizens={color: len(ids) for color, ids in document["citizens"].items()},
        authority=len(document["authority"]),
        terminals=len(created),
        out=out,
        seconds=time.perf_counter() - started,
        phases=phases,
    )
