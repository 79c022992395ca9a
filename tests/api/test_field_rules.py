"""Issue 11: every field checked at the edge by its kind's rule (passcode/domain/fields.py).

Regression tests for defect 4 (a time out of range gave 500 on overrides), defect 5 (a place
with a line break was registered but could never be marked or traced), defect 7 (a compressed
body was inflated past the body limit and parsed) and the duplicate-key item (``{"code": "x",
"code": <valid>}`` was read as the last); plus the window a terminal's ``scanned_at`` must
keep, and what a terminal registered before the rule (a control character in its place) does.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.config import Settings
from passcode.domain.fields import MAX_PLACE
from passcode.keys import DRAIN, POOL
from passcode.store.pg import acquire
from passcode.testing import auth
from tests.helpers import (
    ADMIN,
    TokenFactory,
    assert_exact_problem,
    citizen_pass,
    cli,
    new_terminal,
    stored_rows,
)

Client = TestClient[Any, Any]
OUT_OF_RANGE = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2200-01-01T00:00:00Z"]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def ahead(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def count(client: Client, sql: str, *args: Any) -> int:
    async with acquire(client.app[POOL], "count", 5) as conn:
        found: int = await conn.fetchval(sql, *args, timeout=5)
    return found


# --- defect 4: times out of range are a 400 everywhere, never a 500 ----------------------------


@pytest.mark.parametrize("field", ["valid_from", "valid_until"])
@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_an_override_time_out_of_range_is_a_400_and_records_nothing(
    client: Client, field: str, value: str
) -> None:
    """Defect 4: ``valid_until`` 9999-12-31T23:59:59-23:59 (past what UTC, and so asyncpg,
    holds), year 1 at +23:59, or 2200 (in range for Python and PostgreSQL, past the documented
    range) on ``POST /v1/admin/overrides`` is a 400 problem naming the field; no subject or
    override is stored."""
    before = await stored_rows(client)
    body = {"user_id": f"range-{uuid.uuid4().hex}", "color": "red", "reason": "positive_test"}
    response = await client.post("/v1/admin/overrides", json={**body, field: value}, headers=ADMIN)
    problem = await assert_exact_problem(response, 400)
    assert problem["errors"] == [field]
    assert "2000-01-01 to 2199-12-31" in problem["detail"]
    assert await stored_rows(client) == before


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/admin/trace/place", ("since", "until")),
        ("/v1/admin/audit", ("since", "until")),
        ("/v1/admin/replays", ("since", "until")),
    ],
)
async def test_query_times_follow_the_same_rule(
    client: Client, path: str, fields: tuple[str, ...]
) -> None:
    """The time query parameters of tracing, the audit log and the replay count refuse what the
    body fields refuse, by the same rule and message."""
    for name in fields:
        for value in OUT_OF_RANGE:
            query = {"place": "Anywhere", "since": ago(hours=2), "until": ago(hours=1)}
            response = await client.get(path, params={**query, name: value}, headers=ADMIN)
            problem = await assert_exact_problem(response, 400)
            assert problem["detail"] == f"{name} must be from 2000-01-01 to 2199-12-31 (UTC)"


# --- scanned_at: in range and within the window around the server's clock ---------------------


@pytest.mark.parametrize(
    "scanned_at",
    [
        *[pytest.param(lambda v=v: v, id=v) for v in OUT_OF_RANGE],
        pytest.param(lambda: ago(days=28, minutes=1), id="older-than-the-retention"),
        pytest.param(lambda: ahead(hours=1, seconds=30), id="more-than-an-hour-ahead"),
    ],
)
async def test_verify_refuses_a_scanned_at_outside_the_window(
    client: Client, make_token: TokenFactory, terminal_key: str, scanned_at: Callable[[], str]
) -> None:
    """Defect 1's entry point: ``scanned_at`` 9999-12-31T23:59:59-23:59 on a valid pass was
    admitted and poisoned the drain. It is a 400 problem now, as is one older than the scan
    retention (28 days) or more than an hour ahead of the server; nothing is recorded."""
    code = await citizen_pass(client, make_token)
    before = await stored_rows(client)
    response = await client.post(
        "/v1/verify", json={"code": code, "scanned_at": scanned_at()}, headers=auth(terminal_key)
    )
    problem = await assert_exact_problem(response, 400)
    assert problem["errors"] == ["scanned_at"]
    assert await stored_rows(client) == before


async def test_an_offline_batch_within_the_window_is_verified_and_one_bad_time_refuses_it(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """A terminal back after 27 days offline uploads its scans: all verified, each terminal
    time stored as sent (the instant; +08:00 read as UTC). One item with a time out of range
    refuses the batch before any is verified, naming the item."""
    code = await citizen_pass(client, make_token)
    east = timezone(timedelta(hours=8))
    times = [datetime.now(UTC) - timedelta(days=days) for days in (27, 3, 0)]
    times.append(datetime.now(UTC) + timedelta(minutes=59))
    scans = [
        {"code": code, "scan_id": str(uuid.uuid4()), "scanned_at": t.astimezone(east).isoformat()}
        for t in times
    ]
    bad = [*scans[:2], {"code": code, "scanned_at": "9999-12-31T23:59:59-23:59"}]
    before = await stored_rows(client)
    refused = await client.post("/v1/verify/batch", json={"scans": bad}, headers=auth(terminal_key))
    problem = await assert_exact_problem(refused, 400)
    assert problem["errors"] == ["scans[2].scanned_at"]
    assert await stored_rows(client) == before

    response = await client.post(
        "/v1/verify/batch", json={"scans": scans}, headers=auth(terminal_key)
    )
    assert response.status == 200, await response.text()
    assert [r["decision"] for r in (await response.json())["results"]] == ["admit"] * 4
    await client.app[DRAIN].drain_all()
    async with acquire(client.app[POOL], "read", 5) as conn:
        rows = await conn.fetch(
            "SELECT scan_id, terminal_time FROM scans WHERE scan_id = ANY($1::uuid[])",
            [s["scan_id"] for s in scans],
        )
    stored = {str(r["scan_id"]): r["terminal_time"] for r in rows}
    assert [stored[s["scan_id"]] for s in scans] == times


# --- defect 5: one place rule for terminals, risk places and tracing --------------------------


HOSTILE_PLACES = [
    pytest.param("Gate\r\nA", id="crlf"),
    pytest.param("Gate\x00A", id="nul"),
    pytest.param("Gate\tA", id="tab"),
    pytest.param("Gate A\n", id="trailing-lf"),
    pytest.param("Gate\u0085A", id="c1-next-line"),
    pytest.param("Gate\u2028A", id="line-separator"),
    pytest.param("Gate \u202eA etaG", id="bidi-override"),
    pytest.param("\u2066Gate A\u2069", id="bidi-isolate"),
    pytest.param("Gate\u200bA", id="zero-width-space"),
    pytest.param("   ", id="blank"),
    pytest.param("\u3000", id="ideographic-space-only"),
    pytest.param("p" * 201, id="201-characters"),
]


@pytest.mark.parametrize("place", HOSTILE_PLACES)
async def test_a_place_is_refused_alike_by_terminals_risk_places_and_tracing(
    client: Client, place: str
) -> None:
    """Defect 5: ``{"place": "Gate\\r\\nA"}`` was registered (201) though a marking of it was
    refused. Now registering a terminal, marking a risk place and tracing by place give the
    same 400 problem, naming place, with the same detail; nothing is stored."""
    before = await stored_rows(client)
    markings = await count(client, "SELECT count(*) FROM risk_places")
    terminal = await client.post("/v1/admin/terminals", json={"place": place}, headers=ADMIN)
    marking = await client.post(
        "/v1/admin/risk-places",
        json={"place": place, "since": ago(hours=2), "until": ago(hours=1), "note": "field rules"},
        headers=ADMIN,
    )
    traced = await client.get(
        "/v1/admin/trace/place",
        params={"place": place, "since": ago(hours=2), "until": ago(hours=1)},
        headers=ADMIN,
    )
    details = set()
    for response in (terminal, marking, traced):
        problem = await assert_exact_problem(response, 400)
        details.add(problem["detail"])
        if len(place) <= MAX_PLACE:
            assert problem["errors"] == ["place"]
        else:  # the body's schema states the length too, and says so first, in its words
            assert "place" in problem["errors"][0]
    assert len(details) == 1 or len(place) > MAX_PLACE, details
    assert await stored_rows(client) == before
    assert await count(client, "SELECT count(*) FROM risk_places") == markings


async def test_a_place_is_trimmed_alike_so_its_terminal_can_be_marked_and_traced(
    client: Client, make_token: TokenFactory
) -> None:
    """A place sent with surrounding space (and inner CJK spaces and joiners, which are text)
    is registered trimmed; marked and traced with the same surrounding space, it names the
    same place: the scan there is found and the marking sees its citizen."""
    place = f"  北京站\u3000东口 👩\u200d🔧 {uuid.uuid4().hex[:6]} "
    terminal_id, key = await new_terminal(client, place)
    stored = await count(client, "SELECT count(*) FROM terminals WHERE place = $1", place.strip())
    assert stored == 1
    code = await citizen_pass(client, make_token)
    since = ago(minutes=5)
    verified = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert verified.status == 200, await verified.text()
    await client.app[DRAIN].drain_all()
    traced = await client.get(
        "/v1/admin/trace/place",
        params={"place": place, "since": since, "until": ahead(seconds=1)},
        headers=ADMIN,
    )
    assert traced.status == 200, await traced.text()
    assert [e["terminal_id"] for e in (await traced.json())["entries"]] == [terminal_id]
    marking = await client.post(
        "/v1/admin/risk-places",
        json={"place": place, "since": since, "until": ago(seconds=0), "note": " field rules "},
        headers=ADMIN,
    )
    assert marking.status == 202, await marking.text()
    assert ((await marking.json())["place"], (await marking.json())["note"]) == (
        place.strip(),
        "field rules",
    )


async def test_cli_terminal_add_applies_the_place_rule(client: Client, settings: Settings) -> None:
    """``passcode terminal add --place`` refuses what the API refuses (exit 2, the rule's
    message, nothing stored) and stores the place trimmed, as the API does."""
    before = await count(client, "SELECT count(*) FROM terminals")
    refused = await cli(settings, "terminal", "add", "--place", "Gate\r\nA")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "--place must not contain control characters" in refused.stderr
    assert await count(client, "SELECT count(*) FROM terminals") == before
    name = f"CLI Gate {uuid.uuid4().hex[:6]}"
    added = await cli(settings, "terminal", "add", "--place", f" {name} ")
    assert added.returncode == 0, (added.stdout, added.stderr)
    assert await count(client, "SELECT count(*) FROM terminals WHERE place = $1", name) == 1


async def test_cli_override_and_admin_key_apply_the_api_rules(
    client: Client, settings: Settings
) -> None:
    """``passcode override`` refuses a user id or an ``--until`` the API refuses, and
    ``passcode admin-key add`` a ``--name`` the actor rule refuses (exit 2, the rule's message,
    nothing stored): on main as filed ``--until 9999-12-31T23:59:59-23:59`` was a traceback."""
    overrides = await count(client, "SELECT count(*) FROM overrides")
    admins = await count(client, "SELECT count(*) FROM admin_credentials")
    for args, message in [
        (("override", "alice", "red", "--reason", "positive_test",
          "--until", "9999-12-31T23:59:59-23:59"), "--until must be from 2000-01-01"),
        (("override", "alice\nbob", "red", "--reason", "positive_test"), "user_id holds"),
        (("admin-key", "add", "--name", "Dr Li\u202e", "--role", "auditor"), "--name must not"),
    ]:  # fmt: skip
        refused = await cli(settings, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert message in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    assert await count(client, "SELECT count(*) FROM overrides") == overrides
    assert await count(client, "SELECT count(*) FROM admin_credentials") == admins


async def test_a_terminal_stored_before_the_rule_keeps_working_and_crashes_nothing(
    client: Client, make_token: TokenFactory
) -> None:
    """Old data: a terminal whose place holds CR/LF and a bidi control (registered before the
    rule, here written straight to the table) still verifies; its scans reach PostgreSQL under
    that place and tracing a citizen lists them with it (JSON-escaped). Tracing or marking by
    that exact name is a 400 problem (the place rule), never a 500: the operator registers the
    terminal again under a clean name."""
    old_place = f"Old\r\nGate \u202e{uuid.uuid4().hex[:6]}"
    terminal_id, key = await new_terminal(client, "placeholder")
    async with acquire(client.app[POOL], "old data", 5) as conn:
        await conn.execute(
            "UPDATE terminals SET place = $1 WHERE id = $2",
            old_place,
            uuid.UUID(terminal_id),
            timeout=5,
        )
    user_id = f"old-data-{uuid.uuid4().hex}"
    code = await citizen_pass(client, lambda **kw: make_token(user_id=user_id, **kw))
    verified = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert verified.status == 200, await verified.text()
    assert (await verified.json())["decision"] == "admit"
    await client.app[DRAIN].drain_all()
    assert await count(client, "SELECT count(*) FROM scans WHERE place = $1", old_place) == 1
    traced = await client.post(
        "/v1/admin/trace/citizen",
        json={"user_id": user_id, "since": ago(minutes=5), "until": ahead(seconds=1)},
        headers=ADMIN,
    )
    assert traced.status == 200, await traced.text()
    assert [e["place"] for e in (await traced.json())["entries"]] == [old_place]
    by_place = await client.get(
        "/v1/admin/trace/place",
        params={"place": old_place, "since": ago(minutes=5), "until": ahead(seconds=1)},
        headers=ADMIN,
    )
    await assert_exact_problem(by_place, 400)
    marking = await client.post(
        "/v1/admin/risk-places",
        json={
            "place": old_place,
            "since": ago(minutes=5),
            "until": ago(seconds=0),
            "note": "field rules",
        },
        headers=ADMIN,
    )
    await assert_exact_problem(marking, 400)


# --- defect 7: compressed bodies are refused before they are read ------------------------------


def _bomb() -> bytes:
    """A valid verify body of 500 KB of JSON white space, gzipped to well under 1 KB."""
    return gzip.compress(b'{"code": "PC1:X"' + b" " * 500_000 + b"}", compresslevel=9)


@pytest.mark.parametrize(
    ("coding", "payload"),
    [
        ("gzip", _bomb),
        ("deflate", lambda: zlib.compress(b'{"code": "PC1:X"}')),
        ("br", lambda: b'{"code": "PC1:X"}'),
        ("GZIP", lambda: gzip.compress(b'{"code": "PC1:X"}')),
        ("identity, gzip", lambda: gzip.compress(b'{"code": "PC1:X"}')),
    ],
)
async def test_a_compressed_json_body_is_refused_with_415(
    client: Client, terminal_key: str, coding: str, payload: Any
) -> None:
    """Defect 7: ``Content-Encoding: gzip`` with 559 bytes inflating to 500 KB was inflated and
    parsed. Any coding but identity is now a 415 problem saying to send it uncompressed, with
    ``Accept-Encoding: identity`` (RFC 7694); no scan is recorded."""
    raw = payload()
    assert len(raw) < 1024
    before = await stored_rows(client)
    response = await client.post(
        "/v1/verify",
        data=raw,
        headers={
            **auth(terminal_key),
            "Content-Type": "application/json",
            "Content-Encoding": coding,
        },
    )
    problem = await assert_exact_problem(response, 415)
    assert "Content-Encoding" in problem["detail"]
    assert response.headers["Accept-Encoding"] == "identity"
    assert await stored_rows(client) == before


async def test_compressed_csv_and_admin_bodies_are_refused_and_identity_is_accepted(
    client: Client, terminal_key: str
) -> None:
    """The CSV upload and the JSON admin endpoints refuse a gzip body the same way; an explicit
    ``Content-Encoding: identity`` is an uncompressed body and is read."""
    csv = b"user_id,result,tested_at\n"
    upload = await client.post(
        "/v1/admin/test-results",
        data=gzip.compress(csv),
        headers={**ADMIN, "Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    await assert_exact_problem(upload, 415)
    terminal = await client.post(
        "/v1/admin/terminals",
        data=gzip.compress(b'{"place": "Gzip Gate"}'),
        headers={**ADMIN, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    await assert_exact_problem(terminal, 415)
    plain = await client.post(
        "/v1/verify",
        data=b'{"code": "PC1:X"}',
        headers={
            **auth(terminal_key),
            "Content-Type": "application/json",
            "Content-Encoding": "identity",
        },
    )
    assert plain.status == 200, await plain.text()


# --- duplicate keys ---------------------------------------------------------------------------


async def test_a_body_with_a_key_twice_is_a_400_on_every_json_endpoint(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """The duplicate-key item: ``{"code": "x", "code": <valid pass>}`` was verified as the last
    code (admit), so a proxy reading the first saw another code. Now it is a 400 problem, and
    so is a key repeated in a batch's item, in a declaration, an override or a terminal body,
    also when one spelling escapes it (``\\u0063ode``); nothing is stored."""
    code = await citizen_pass(client, make_token)
    citizen = auth(make_token())
    terminal = auth(terminal_key)
    cases = [
        ("/v1/verify", terminal, f'{{"code": "x", "code": "{code}"}}'),
        ("/v1/verify", terminal, f'{{"code":"x","code":"{code}"}}'),
        ("/v1/verify", terminal, f'{{"code": "x", "\\u0063ode": "{code}"}}'),
        ("/v1/verify/batch", terminal, f'{{"scans": [{{"code": "x", "code": "{code}"}}]}}'),
        ("/v1/verify/batch", terminal, f'{{"scans": [{{"code": "{code}"}}], "scans": []}}'),
        (
            "/v1/declarations",
            citizen,
            '{"temperature_c": 39.5, "temperature_c": 36.6, "symptoms": [],'
            ' "regions_visited": [], "close_contact": false}',
        ),
        (
            "/v1/admin/overrides",
            ADMIN,
            '{"user_id": "dup-a", "user_id": "dup-b", "color": "red", "reason": "positive_test"}',
        ),
        ("/v1/admin/terminals", ADMIN, '{"place": "Gate A", "place": "Gate B"}'),
    ]
    before = await stored_rows(client)
    for path, credential, text in cases:
        json.loads(text)  # valid JSON all the same: Python's json, too, keeps the last
        response = await client.post(
            path,
            data=text.encode(),
            headers={**credential, "Content-Type": "application/json"},
        )
        problem = await assert_exact_problem(response, 400)
        assert "same key twice" in problem["detail"], (path, text)
    assert await stored_rows(client) == before


async def test_escapes_and_colons_without_a_repeated_key_are_accepted(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Control for the duplicate check: a body with ``\\u`` escapes (the exact check), colons
    inside strings and keys that differ only once unescaped are no duplicates and are read."""
    code = await citizen_pass(client, make_token)
    escaped = code.replace(":", "\\u003a", 1)
    for text in (
        f'{{"code": "{escaped}"}}',
        f'{{"\\u0063ode": "{code}", "scan_id": "{uuid.uuid4()}"}}',
        f'{{ "code" : "{code}" ,\n "scanned_at" : "{ago(seconds=1)}" }}',
    ):
        response = await client.post(
            "/v1/verify",
            data=text.encode(),
            headers={**auth(terminal_key), "Content-Type": "application/json"},
        )
        assert response.status == 200, (text, await response.text())
        assert (await response.json())["decision"] == "admit"
    place = f"Gate: A\\u003a {uuid.uuid4().hex[:6]}"
    created = await client.post(
        "/v1/admin/terminals",
        data=f'{{"place": "{place}"}}'.encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert created.status == 201, await created.text()
