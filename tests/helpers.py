"""What the tests build and check alike, written once: test modules import these, never each other.

The builders shared with ``passcode seed`` and the load tests (declaration bodies, seeded names,
bearer headers, free ports) live in :mod:`passcode.testing`; this module holds what only the
tests use: the run's admin credential, dev ID tokens, a clock set by hand, client helpers that
register terminals, declare, fetch passes and verify, the problem+json checks, the stores opened
and rows read back, the risk-place helpers, the CLI run as a subprocess, the drain's good and
poison stream entries, in-memory fakes of store calls, and the OpenAPI contract checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from passcode.api.schemas import VERIFY_RESPONSE
from passcode.config import Settings
from passcode.domain.identity import mint_dev_token
from passcode.domain.model import Color, Decision, Reason, Role
from passcode.domain.passfmt import PassClaims, sign_pass, verify_pass
from passcode.domain.status import LiveStatus
from passcode.domain.verdict import Verdict
from passcode.errors import PROBLEM_BASE, StoreUnavailable
from passcode.keys import CACHE, DRAIN, KEYRING, POOL, SEALER, SETTINGS
from passcode.store import pg
from passcode.store import scans as scan_store
from passcode.store.admins import add_credential
from passcode.store.cache import Cache
from passcode.store.keyring import load_or_create_ed25519
from passcode.store.pg import acquire
from passcode.store.scans import count_scans, encode_record
from passcode.store.statuses import find_subject, read_status, subject_for_user
from passcode.testing import HEALTHY, auth
from passcode.wiring import DEV_IDP_KID, dev_idp_key_path, open_cache
from tests.api.proxy import TcpProxy

# Set (to anything), the suite runs on a Redis Cluster of its own (tests/conftest.py).
ON_CLUSTER = bool(os.environ.get("TEST_REDIS_CLUSTER"))


def cluster_nodes() -> tuple[str, ...]:
    """The run's cluster nodes (host:port), once tests/conftest.py started them; else ()."""
    return tuple(n for n in os.environ.get("TEST_REDIS_CLUSTER_NODES", "").split(",") if n)


ADMIN_KEY = "test-admin-key-0123456789"
RUN_ID = secrets.token_hex(4)
ADMIN = auth(ADMIN_KEY)

TokenFactory = Callable[..., str]
Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

PROBLEM = "application/problem+json"


# --- credentials and time ------------------------------------------------------------------------


def dev_token(
    settings: Settings,
    user_id: str | None = None,
    name: str = "张小三",
    *,
    ttl: int = 3600,
    key: Ed25519PrivateKey | None = None,
) -> str:
    """An ID token from the dev identity provider of ``settings`` (dev mode), for ``user_id`` (a
    fresh random user by default); signed with ``key`` instead, it is a forgery."""
    return mint_dev_token(
        key or load_or_create_ed25519(dev_idp_key_path(settings)),
        kid=DEV_IDP_KID,
        issuer=settings.idp_issuer,
        audience=settings.idp_audience,
        user_id=user_id or f"user-{uuid.uuid4().hex}",
        name=name,
        now=int(time.time()),
        ttl=ttl,
    )


class FakeClock:
    """A clock the test sets by hand (whole seconds, near the real time so ID tokens, which
    the identity provider dates by its own clock, stay valid)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


# --- terminals, citizens, passes, verify ---------------------------------------------------------


async def new_terminal(client: Client, place: str = "Metro Line 2, Gate A") -> tuple[str, str]:
    """(terminal id, key) of a freshly registered terminal."""
    response = await client.post("/v1/admin/terminals", json={"place": place}, headers=ADMIN)
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["id"], body["key"]


async def declare(client: Client, token: str, body: dict[str, Any] = HEALTHY) -> dict[str, Any]:
    """The answer to the citizen's declaration of ``body`` (201 with their new status)."""
    response = await client.post("/v1/declarations", json=body, headers=auth(token))
    assert response.status == 201, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def pass_view(client: Client, token: str) -> dict[str, Any]:
    """The citizen's pass as ``GET /v1/pass`` shows it, never cached on the way."""
    response = await client.get("/v1/pass", headers=auth(token))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    view: dict[str, Any] = await response.json()
    return view


async def fetch_pass(client: Client, token: str) -> str:
    """The text of the citizen's fresh pass."""
    code: str = (await pass_view(client, token))["code"]
    return code


async def citizen_pass(
    client: Client, make_token: TokenFactory, body: dict[str, Any] = HEALTHY, name: str = "张小三"
) -> str:
    """Declare ``body`` as a new citizen and return their fresh pass."""
    token = make_token(name=name)
    await declare(client, token, body)
    return await fetch_pass(client, token)


async def post_verify(client: Client, key: str, **body: Any) -> tuple[ClientResponse, Any]:
    response = await client.post("/v1/verify", json=body, headers=auth(key))
    return response, await response.json(content_type=None)


async def verify_ok(client: Client, key: str, code: str, **extra: Any) -> dict[str, Any]:
    """A verify that must get a 200 verification outcome, checked against the response schema."""
    response, body = await post_verify(client, key, code=code, **extra)
    assert response.status == 200, body
    assert response.content_type == "application/json"
    jsonschema.validate(body, VERIFY_RESPONSE)
    scan_id = uuid.UUID(body["scan_id"])
    if "scan_id" not in extra:  # the server's own ids are time-ordered (version 7)
        assert scan_id.version == 7, scan_id
    assert datetime.fromisoformat(body["server_time"].replace("Z", "+00:00")).tzinfo is not None
    return body  # type: ignore[no-any-return]


def assert_invalid(body: dict[str, Any], reason: str) -> None:
    assert body["decision"] == "invalid", body
    assert body["reason"] == reason, body
    assert body["color"] is None
    assert body["holder"] is None


def assert_problem(response: ClientResponse, body: Any, status: int) -> None:
    """An RFC 9457 problem body with the given status."""
    assert response.status == status, body
    assert response.content_type == PROBLEM
    assert isinstance(body, dict)
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"]
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)


def claims_of(client: Client, code: str) -> PassClaims:
    """The claims of a pass this service issued, read with the service's own public keys."""
    now = int(time.time())
    settings = client.app[SETTINGS]
    return verify_pass(
        code,
        client.app[KEYRING].verification_keys(now),
        now=now,
        leeway=settings.clock_skew,
        issuer=settings.issuer,
    )


def service_signed(client: Client, claims: PassClaims) -> str:
    """Pass text signed with the service's own current signing key."""
    key = client.app[KEYRING].signer(int(time.time()))
    return sign_pass(claims, key.private, key.kid)


def claims_for(
    client: Client,
    *,
    subject: bytes | None = None,
    issued_at: int,
    expires_at: int,
    version: int = 1,
) -> PassClaims:
    return PassClaims(
        issuer=client.app[SETTINGS].issuer,
        subject=subject if subject is not None else os.urandom(16),
        issued_at=issued_at,
        expires_at=expires_at,
        token_id=os.urandom(8),
        color=Color.GREEN,
        version=version,
    )


async def stored_scans(database_url: str, scan_ids: list[str]) -> list[asyncpg.Record]:
    """Rows of ``scans`` with these ids, read over a connection of the test's own."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        return await conn.fetch(
            "SELECT scan_id, decision, reason, color FROM scans WHERE scan_id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in scan_ids],
            timeout=5,
        )
    finally:
        await conn.close()


def needs_tcp(*urls: str | None) -> None:
    for url in urls:
        assert url is not None
        try:
            TcpProxy.for_url(url)
        except AssertionError:
            pytest.skip(f"the outage tests proxy TCP; {url.split('@')[-1]} has no host:port")


def terminal_clock(**offset: float) -> str:
    """A terminal's clock reading ``offset`` from now, at UTC+8 (offline terminals send ones
    up to the scan retention old)."""
    at = datetime.now(UTC) + timedelta(**offset)
    return at.astimezone(timezone(timedelta(hours=8))).isoformat()


async def role_headers(
    client: TestClient[Any, Any], *roles: str, name: str = "tester"
) -> dict[str, str]:
    """Authorization headers of a new admin credential carrying exactly ``roles``."""
    _, key = await add_credential(
        client.app[POOL], name, frozenset(Role(r) for r in roles), timeout=5
    )
    return auth(key)


# --- problems -----------------------------------------------------------------------------------

DEFAULT_SLUGS = {
    400: ("bad-request", "validation"),
    401: ("unauthorized",),
    403: ("forbidden", "terminal-revoked"),
    404: ("not-found",),
    405: ("method-not-allowed",),
    413: ("payload-too-large",),
    415: ("unsupported-media-type",),
}


async def assert_exact_problem(
    response: ClientResponse, status: int, slugs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The response is exactly ``status`` with a well-formed problem+json body; returns it."""
    text = await response.text()
    assert response.status != 500, text
    assert response.status == status, text
    assert response.content_type == PROBLEM, (response.content_type, text)
    body = json.loads(text)
    assert isinstance(body, dict), text
    for key, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(body.get(key), kind), (key, text)
    assert body["status"] == status, text
    assert body["title"], text
    assert body["detail"], text
    allowed = slugs or DEFAULT_SLUGS.get(status, ())
    assert body["type"] in {PROBLEM_BASE + slug for slug in allowed}, text
    return body


# --- rows read back from the stores ------------------------------------------------------------

STORED_TABLES = ("subjects", "declarations", "overrides", "terminals", "statuses")


async def stored_rows(client: TestClient[Any, Any]) -> dict[str, int]:
    """Row counts of every table a body-taking endpoint writes, plus scans after a full drain."""
    await client.app[DRAIN].drain_all()
    async with acquire(client.app[POOL], "count rows", 5) as conn:
        counts = {}
        for table in STORED_TABLES:  # fixed names, not input
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}", timeout=5)  # noqa: S608
    counts["scans"] = await count_scans(client.app[POOL], timeout=5)
    return counts


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, *, max_size: int = 2
) -> AsyncIterator[tuple[pg.Pool, Cache]]:
    """A pool on the settings' database (migrated) and their cache, both closed at the end."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    pool = await pg.create_pool(settings.database_url, timeout=5, min_size=1, max_size=max_size)
    cache = open_cache(settings)
    try:
        await pg.migrate(pool)
        yield pool, cache
    finally:
        await cache.close()
        await pool.close()


async def stored_scan_ids(pool: pg.Pool, scan_ids: list[str]) -> set[str]:
    """Which of ``scan_ids`` are in the scan log."""
    rows = await pool.fetch(
        "SELECT scan_id::text AS id FROM scans WHERE scan_id = ANY($1::uuid[])", scan_ids
    )
    return {r["id"] for r in rows}


# --- risk places -------------------------------------------------------------------------------

RISK_PLACES = "/v1/admin/risk-places"


@dataclass(frozen=True)
class Citizen:
    user_id: str
    token: str
    subject: bytes
    code: str  # a pass fetched while green


async def new_citizen(
    client: Client, make_token: TokenFactory, subject_id: bytes | None = None
) -> Citizen:
    """A citizen with a healthy declaration (green) and a pass; with ``subject_id``, that is
    their subject's id (made before they first declare)."""
    user_id = f"rp-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id)
    settings = client.app[SETTINGS]
    sealer = client.app[SEALER]
    user_hash = sealer.user_hash(settings.idp_issuer, user_id)
    if subject_id is not None:
        await subject_for_user(
            client.app[POOL],
            subject_id=subject_id,
            user_hash=user_hash,
            sealed=sealer.seal(user_id),
            timeout=5,
        )
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    subject = await find_subject(client.app[POOL], user_hash, timeout=5)
    assert subject is not None
    return Citizen(user_id, token, subject, code)


async def mark(client: Client, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = await client.post(RISK_PLACES, json=body, headers=ADMIN)
    found: dict[str, Any] = await response.json()
    assert response.status == status, found
    if status == 202:
        assert response.headers["Location"] == f"{RISK_PLACES}/{found['id']}"
    return found


async def finished(client: Client, marking_id: str) -> dict[str, Any]:
    """The marking once its job is done (or failed), polled through the API."""
    async with asyncio.timeout(30):
        while True:
            response = await client.get(f"{RISK_PLACES}/{marking_id}", headers=ADMIN)
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            if body["state"] in {"done", "failed"}:
                return body
            await asyncio.sleep(0.05)


async def both(client: Client, subject: bytes) -> tuple[LiveStatus | None, LiveStatus | None]:
    """The subject's status in Postgres and in Redis."""
    pg = await read_status(client.app[POOL], subject, timeout=5)
    redis = await client.app[CACHE].get_status(subject)
    return pg, redis


async def colors_agree(client: Client, subject: bytes) -> Color | None:
    pg, redis = await both(client, subject)
    assert pg is not None
    assert pg == redis, (pg, redis)
    return pg.color


async def scans_at(client: Client, place: str) -> int:
    async with client.app[POOL].acquire() as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM scans WHERE place = $1", place)
    return found


# --- the command line, as an operator runs it --------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT = 60


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an operator running the CLI with the service's own configuration:
    every setting the test changed from its default, as its PASSCODE_ variable (the status key
    layout depends on scan_shards, so the CLI must share it to reach the same Redis keys)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSCODE_")}
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is None or value == getattr(defaults, f.name):
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        env[f"PASSCODE_{f.name.upper()}"] = text
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "DATA_DIR", "SECRET", "DEV_MODE"):
        assert f"PASSCODE_{name}" in env, name
    env.update(extra)
    return env


def run_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own CLI, fixed arguments
        [sys.executable, "-m", "passcode", *args],
        env=cli_env(settings, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


async def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI off the event loop, so the app under test keeps serving meanwhile."""
    return await asyncio.to_thread(run_cli, settings, *args, **env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


# --- scan stream entries, good and poison ------------------------------------------------------

Fields = dict[bytes, bytes]
NOW = datetime.now(UTC)


def good_record(scan_id: str | None = None, terminal_time: datetime | None = None) -> str:
    """A record as verify writes it (a decided one: invalid code, no subject)."""
    return encode_record(
        scan_id=scan_id or str(uuid.uuid4()),
        at_ms=int(NOW.timestamp() * 1000),
        terminal_time=terminal_time,
        terminal_id=str(uuid.uuid4()),
        subject=None,
        pass_version=0,
        verdict=Verdict(Decision.INVALID, Reason.MALFORMED, None),
    )


def parts(**changes: str) -> str:
    """A good decided record with some of its nine ``|``-separated parts replaced."""
    names = ["scan_id", "at_ms", "tt", "terminal_id", "subject", "pv", "decision", "reason"]
    values = good_record(terminal_time=NOW).split("|")
    for name, value in changes.items():
        values[[*names, "color"].index(name)] = value
    return "|".join(values)


def snapshot(record: str, color: bytes = b"green", version: bytes = b"3") -> Fields:
    """A record with a live-status snapshot, as the verify script appends it."""
    return {b"sc": color, b"sv": version, b"r": record.encode()}


def snapshot_record(pv: str = "1") -> str:
    return encode_record(
        scan_id=str(uuid.uuid4()),
        at_ms=int(NOW.timestamp() * 1000),
        terminal_time=None,
        terminal_id=str(uuid.uuid4()),
        subject=os.urandom(16),
        pass_version=int(pv),
        verdict=None,
    )


def _with_pv(pv: str) -> str:
    fields = snapshot_record().split("|")
    fields[5] = pv
    return "|".join(fields)


far = timezone(-timedelta(hours=23, minutes=59))
east = timezone(timedelta(hours=23, minutes=59))
ms_2200 = str(scan_store.SCAN_TIME_RANGE_MS[1])
ms_1999 = str(scan_store.SCAN_TIME_RANGE_MS[0] - 1)

# Every field of the record, every kind of bad value: (name, entry fields).
POISON: list[tuple[str, Fields]] = [
    ("eight parts", {b"r": "|".join(good_record().split("|")[:8]).encode()}),
    ("ten parts", {b"r": (good_record() + "|x").encode()}),
    ("empty record", {b"r": b""}),
    ("scan id not a uuid", {b"r": parts(scan_id="not-a-uuid").encode()}),
    ("scan id too long", {b"r": parts(scan_id=str(uuid.uuid4()) + "0").encode()}),
    ("terminal id not a uuid", {b"r": parts(terminal_id="{}" * 18).encode()}),
    ("ms not an integer", {b"r": parts(at_ms="12.5").encode()}),
    ("ms text", {b"r": parts(at_ms="soon").encode()}),
    ("ms empty", {b"r": parts(at_ms="").encode()}),
    ("ms negative", {b"r": parts(at_ms="-1").encode()}),
    ("ms from 2200", {b"r": parts(at_ms=ms_2200).encode()}),
    ("ms before 2000", {b"r": parts(at_ms=ms_1999).encode()}),
    ("ms past datetime", {b"r": parts(at_ms="9" * 30).encode()}),
    ("terminal time 9999 -23:59", {b"r": parts(tt="9999-12-31T23:59:59-23:59").encode()}),
    ("terminal time 0001 +23:59", {b"r": parts(tt="0001-01-01T00:00:00+23:59").encode()}),
    ("terminal time text", {b"r": parts(tt="yesterday").encode()}),
    ("terminal time naive", {b"r": parts(tt="2026-01-01T08:00:00").encode()}),
    ("terminal time year 10000", {b"r": parts(tt="10000-01-01T00:00:00+00:00").encode()}),
    ("terminal time 1999", {b"r": parts(tt="1999-12-31T23:59:59+00:00").encode()}),
    ("terminal time 2200", {b"r": parts(tt="2199-12-31T23:59:59-00:01").encode()}),
    ("decision unknown", {b"r": parts(decision="maybe").encode()}),
    ("reason unknown", {b"r": parts(reason="because").encode()}),
    ("colour unknown", {b"r": parts(color="purple").encode()}),
    ("subject not hex", {b"r": parts(subject="zz" * 16).encode()}),
    ("subject odd hex", {b"r": parts(subject="abc").encode()}),
    ("record not utf-8", {b"r": parts().encode()[:-4] + b"\xff\xfe\x80"}),
    ("no record field", {b"x": b"1"}),
    ("record under another name", {b"sc": b"green", b"sv": b"1", b"rec": b"x"}),
    ("snapshot colour unknown", snapshot(snapshot_record(), color=b"purple")),
    ("snapshot colour not utf-8", snapshot(snapshot_record(), color=b"\xff")),
    ("snapshot version text", snapshot(snapshot_record(), version=b"v3")),
    ("snapshot version empty", snapshot(snapshot_record(), version=b"")),
    ("snapshot pass version text", snapshot(_with_pv("one"))),
    ("snapshot without its record", {b"sc": b"green", b"sv": b"1"}),
]


def good_entries(n: int) -> list[tuple[str, Fields]]:
    """Good scans of each layout: decided, with a snapshot, a replay, with a terminal time."""
    made: list[tuple[str, Fields]] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            made.append((f"good {i}", {b"r": good_record().encode()}))
        elif kind == 1:
            made.append((f"good {i}", snapshot(snapshot_record())))
        elif kind == 2:
            made.append((f"good {i}", {**snapshot(snapshot_record()), b"rp": b"1"}))
        else:
            edge = datetime(2000, 1, 2, 0, 0, tzinfo=east)  # 2000-01-01T00:01Z: in range
            made.append((f"good {i}", {b"r": good_record(terminal_time=edge).encode()}))
    return made


def scan_id_of(fields: Fields) -> str:
    return fields[b"r"].decode().split("|", 1)[0]


# --- in-memory fakes of the store ports ---------------------------------------------------------


class FakeRateLimits:
    """The rate-limit part of :class:`passcode.store.cache.Cache` in memory, for the limiter's
    unit tests: GCRA computed as the Redis script does (the key's theoretical arrival time, TAT,
    in ms; refused calls write nothing). A submitted call is answered only when the test calls
    :meth:`answer` (as a batch is, when its one write comes back); ``down`` fails every call as
    an unreachable Redis would. ``calls`` records the cost of each call made."""

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}
        self.calls: list[int] = []
        self.down = False
        self._queued: list[tuple[asyncio.Future[Any], tuple[str, str, str, str, int]]] = []

    def rate_key(self, kind: str, shard_key: bytes, ident: str) -> str:
        return f"rl:{kind}:{ident}"

    def _gcra(
        self, key: str, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> tuple[bool, float]:
        now, interval = float(now_ms), float(interval_ms)
        tat = max(self.tat.get(key, now), now)
        new = tat + interval * cost
        if new - float(tolerance_ms) > now:
            return False, tat
        self.tat[key] = new
        return True, new

    def rate_limit_submit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> asyncio.Future[Any]:
        self.calls.append(cost)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((future, (key, now_ms, interval_ms, tolerance_ms, cost)))
        return future

    async def answer(self) -> None:
        """Answer every queued call, then let the limiter's callbacks run."""
        queued, self._queued = self._queued, []
        for future, args in queued:
            if self.down:
                future.set_exception(ConnectionError("redis is down"))
            else:
                future.set_result(self._gcra(*args))
        await asyncio.sleep(0)

    def rate_limit_result(self, future: asyncio.Future[Any]) -> tuple[bool, float]:
        error = future.exception()
        if error is not None:
            raise StoreUnavailable("cache unavailable (rate limit)") from error
        allowed, tat = future.result()
        return bool(allowed), float(tat)

    async def rate_limit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> tuple[bool, float]:
        self.calls.append(cost)
        if self.down:
            raise StoreUnavailable("cache unavailable (rate limit)")
        return self._gcra(key, now_ms, interval_ms, tolerance_ms, cost)


# --- the OpenAPI contract ----------------------------------------------------------------------

BASE = "urn:passcode:openapi"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _template_regex(template: str) -> re.Pattern[str]:
    pieces = re.split(r"(\{[^/{}]+\})", template)
    return re.compile(
        "^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in pieces) + "$"
    )


_MARKUP = {"image/svg+xml": b"<svg", "text/html": b"<!doctype html>"}
_SOURCES = {"text/javascript", "text/css"}


@dataclass
class Contract:
    """Checks each real response against the operation the document declares for it."""

    document: dict[str, Any]
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        resource = DRAFT202012.create_resource(self.document)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self.templates = {t: _template_regex(t) for t in self.document["paths"]}

    def validator(self, *pointer: str) -> Draft202012Validator:
        """A 2020-12 validator for the schema at ``pointer``; its ``$ref``s resolve in the document."""
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": f"{BASE}#{_pointer(*pointer)}",
        }
        return Draft202012Validator(
            schema, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def template(self, path: str) -> str:
        matches = [t for t, regex in self.templates.items() if regex.match(path)]
        assert len(matches) == 1, f"{path} matches document paths {matches}"
        return matches[0]

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        template = self.template(path)
        operation = self.document["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not in the document"
        return template, operation

    def check_request(self, method: str, path: str, body: Any) -> None:
        """A body the service accepted is valid under the declared request schema."""
        template, operation = self.operation(method, path)
        assert "requestBody" in operation, f"{method} {template} takes a body, undeclared"
        content = operation["requestBody"]["content"]
        assert "application/json" in content
        errors = list(
            self.validator(
                "paths",
                template,
                method.lower(),
                "requestBody",
                "content",
                "application/json",
                "schema",
            ).iter_errors(body)
        )
        assert not errors, [e.message for e in errors]

    async def check(self, response: ClientResponse) -> bytes:
        """The response's status, headers, content type and body are as declared; returns the body."""
        method = response.method.lower()
        template, operation = self.operation(method, response.url.path)
        raw = await response.read()
        status = str(response.status)
        declared = operation["responses"].get(status)
        assert declared is not None, (
            f"{method.upper()} {template} answered {status}, which the document does not declare "
            f"(declared: {sorted(operation['responses'])}): {raw[:300]!r}"
        )
        for name, header in declared.get("headers", {}).items():
            if header.get("required"):
                assert name in response.headers, f"{method} {template} {status}: no {name} header"
            if name in response.headers:
                value: Any = response.headers[name]
                if header["schema"].get("type") == "integer":
                    value = int(value)
                Draft202012Validator(header["schema"]).validate(value)
        content = declared.get("content")
        if not content:
            assert raw == b"", (
                f"{method} {template} {status} declares no content but sent {raw[:80]!r}"
            )
        else:
            media = response.content_type
            assert media in content, (
                f"{method} {template} {status}: {media} not in {sorted(content)}"
            )
            if media == "application/json" or media.endswith("+json"):
                assert response.charset in {None, "utf-8"}
                body = json.loads(raw.decode("utf-8"))
                errors = list(
                    self.validator(
                        "paths", template, method, "responses", status, "content", media, "schema"
                    ).iter_errors(body)
                )
                assert not errors, (template, status, [e.message for e in errors], body)
                if media == "application/problem+json":
                    assert body["status"] == response.status
                    schemas = self.document["components"]["schemas"]
                    known = {
                        *schemas["Problem"]["properties"],
                        *schemas["Unverified"]["properties"],
                    }
                    assert set(body) <= known, f"undocumented problem fields {set(body) - known}"
            elif media == "image/png":
                assert raw.startswith(PNG_SIGNATURE)
            elif media in _MARKUP or media in _SOURCES:  # SVG, HTML; the pages' scripts, styles
                assert _MARKUP.get(media, b"") in raw[:300].lower()
                assert raw.decode("utf-8").strip()
            elif media == "text/plain":  # GET /metrics: Prometheus's text format
                assert list(text_string_to_metric_families(raw.decode("utf-8")))
            else:  # pragma: no cover - a new media type needs a check here
                pytest.fail(f"no body check for {media}")
        self.seen.add((method, template, response.status))
        return raw


def redis_client(settings: Settings) -> Any:
    """A redis-py client of the test's own on the settings' Redis (a cluster client when the
    settings name cluster nodes), for what the service's client hides."""
    import redis.asyncio as aioredis  # noqa: PLC0415  # only the tests that look into Redis

    if settings.redis_cluster_nodes:
        host, _, port = settings.redis_cluster_nodes[0].rpartition(":")
        return aioredis.RedisCluster(host=host, port=int(port), socket_timeout=5)
    return aioredis.Redis.from_url(settings.redis_url or "", socket_timeout=5)
