"""Contact tracing (issue 5): who scanned at a place, where a citizen scanned, on real servers.

Scans are stored through ``passcode.store.scans.insert_scans`` at chosen times (the verify path
stamps the server's clock), except one test that goes through verify and the drain end to end.
Citizens are made through the citizen API, so their subjects carry a sealed user id and a
masked name as in production.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.domain.model import Role
from passcode.errors import ValidationFailed
from passcode.keys import DRAIN, POOL, SEALER, SETTINGS
from passcode.service.tracing import decode_cursor, encode_cursor
from passcode.store.admins import add_credential
from passcode.store.scans import ScanRow, insert_scans
from passcode.store.tracing import SubjectScan
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory, declare, fetch_pass, new_terminal, verify_ok

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
ROOT_ACTOR = "admin (PASSCODE_ADMIN_KEY)"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ms(moment: datetime) -> str:
    """As the API prints times: UTC, milliseconds, Z."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


async def citizen(
    client: Client, make_token: TokenFactory, name: str = "张小三"
) -> tuple[str, str]:
    """A citizen who declared (so a subject exists): (user id, subject id hex)."""
    user_id = f"trace-{uuid.uuid4().hex}"
    await declare(client, make_token(user_id=user_id, name=name), HEALTHY)
    settings = client.app[SETTINGS]
    user_hash = client.app[SEALER].user_hash(settings.idp_issuer, user_id)
    subject: bytes = await client.app[POOL].fetchval(
        "SELECT id FROM subjects WHERE user_hash = $1", user_hash
    )
    return user_id, subject.hex()


async def store(client: Client, *scans: tuple[datetime, str, str | None]) -> list[ScanRow]:
    """Store scans (time, place, subject hex or None for an invalid code) as the drain would."""
    rows = [
        ScanRow(
            scanned_at=at,
            scan_id=uuid.uuid4(),
            terminal_time=None,
            terminal_id=uuid.uuid4(),
            place=place,
            subject_id=bytes.fromhex(subject) if subject else None,
            decision="admit" if subject else "invalid",
            reason="ok" if subject else "malformed",
            color="green" if subject else None,
        )
        for at, place, subject in scans
    ]
    stored = await insert_scans(client.app[POOL], rows, timeout=5, dedupe_window=60)
    assert stored == len(rows)
    return rows


def ordered(rows: list[ScanRow]) -> list[str]:
    return [str(r.scan_id) for r in sorted(rows, key=lambda r: (r.scanned_at, r.scan_id))]


async def audited(client: Client, action: str) -> list[dict[str, Any]]:
    """This action's audit entries, oldest first (target parsed)."""
    rows = await client.app[POOL].fetch(
        "SELECT actor, outcome, target, rows FROM audit_log WHERE action = $1 ORDER BY id", action
    )
    return [{**dict(r), "target": json.loads(r["target"])} for r in rows]


async def place_pages(client: Client, query: dict[str, str], limit: int) -> list[dict[str, Any]]:
    """Every page of a place trace, following next_cursor until it is null."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**query, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/admin/trace/place", params=params, headers=ADMIN)
        assert response.status == 200, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        page = await response.json()
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


async def citizen_pages(client: Client, body: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        request = {**body, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.post("/v1/admin/trace/citizen", json=request, headers=ADMIN)
        assert response.status == 200, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        page = await response.json()
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


async def test_place_trace_returns_the_window_at_that_place_in_order_across_pages(
    client: Client, make_token: TokenFactory
) -> None:
    """Scans at P in [since, until) come back oldest first (ties at one instant by scan id), two
    per page, the cursor chaining the pages with no duplicate and no gap; scans at another place,
    before since or at until are left out. Each subject carries its unsealed user id and masked
    name; an invalid code's scan has subject null. Each page is audited with its row count."""
    place, other = f"Trace Hall {uuid.uuid4().hex[:8]}", f"Trace Other {uuid.uuid4().hex[:8]}"
    alice, alice_subject = await citizen(client, make_token, "张小三")
    bob, bob_subject = await citizen(client, make_token, "John Smith")
    t0 = datetime.now(UTC).replace(microsecond=123456) - timedelta(days=2)
    inside = await store(
        client,
        (t0, place, alice_subject),  # exactly at since: included
        (t0 + timedelta(minutes=1), place, bob_subject),
        (t0 + timedelta(minutes=2), place, alice_subject),
        (t0 + timedelta(minutes=2), place, bob_subject),  # the same instant: ordered by scan id
        (t0 + timedelta(minutes=3), place, None),
        (t0 + timedelta(minutes=4, microseconds=1), place, bob_subject),
    )
    await store(
        client,
        (t0 - timedelta(microseconds=1), place, alice_subject),  # before since
        (t0 + timedelta(minutes=5), place, bob_subject),  # at until: excluded
        (t0 + timedelta(minutes=1), other, alice_subject),  # another place
    )
    query = {"place": place, "since": iso(t0), "until": iso(t0 + timedelta(minutes=5))}
    pages = await place_pages(client, query, limit=2)

    assert [len(p["entries"]) for p in pages] == [2, 2, 2, 0]
    entries = [e for p in pages for e in p["entries"]]
    assert [e["scan_id"] for e in entries] == ordered(inside)
    by_id = {str(r.scan_id): r for r in inside}
    people = {
        alice_subject: {"subject_id": alice_subject, "user_id": alice, "name": "张*三"},
        bob_subject: {"subject_id": bob_subject, "user_id": bob, "name": "J*** S****"},
    }
    for entry in entries:
        row = by_id[entry["scan_id"]]
        assert entry["scanned_at"] == ms(row.scanned_at)
        assert entry["terminal_id"] == str(row.terminal_id)
        assert (entry["decision"], entry["color"]) == (row.decision, row.color)
        subject = row.subject_id.hex() if row.subject_id else None
        assert entry["subject"] == (people[subject] if subject else None)

    logged = [e for e in await audited(client, "trace.place") if e["target"].get("place") == place]
    assert [e["rows"] for e in logged] == [2, 2, 2, 0]
    assert {e["actor"] for e in logged} == {ROOT_ACTOR}
    assert {e["outcome"] for e in logged} == {"ok"}
    assert logged[0]["target"] == {
        "place": place,
        "since": ms(t0),
        "until": ms(t0 + timedelta(minutes=5)),
    }

    whole = await client.get(
        "/v1/admin/trace/place", params={**query, "limit": "1000"}, headers=ADMIN
    )
    assert [e["scan_id"] for e in (await whole.json())["entries"]] == ordered(inside)


async def test_citizen_trace_returns_their_scans_in_the_window_across_pages(
    client: Client, make_token: TokenFactory
) -> None:
    """POST /v1/admin/trace/citizen: the citizen's scans at any place in [since, until), oldest
    first, paged two at a time without duplicates or gaps; another citizen's scans and scans
    outside the window are left out. The audit log names the subject by its pseudonymous id and
    never holds the user id."""
    alice, alice_subject = await citizen(client, make_token)
    _, bob_subject = await citizen(client, make_token)
    p1, p2 = f"Trace Cafe {uuid.uuid4().hex[:8]}", f"Trace Gym {uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(days=3)
    inside = await store(
        client,
        (t0, p1, alice_subject),
        (t0 + timedelta(hours=1), p2, alice_subject),
        (t0 + timedelta(hours=2), p1, alice_subject),
        (t0 + timedelta(hours=2), p2, alice_subject),
        (t0 + timedelta(hours=5), p2, alice_subject),
    )
    await store(
        client,
        (t0 - timedelta(seconds=1), p1, alice_subject),
        (t0 + timedelta(hours=6), p1, alice_subject),
        (t0 + timedelta(hours=1), p1, bob_subject),
    )
    body = {"user_id": alice, "since": iso(t0), "until": iso(t0 + timedelta(hours=6))}
    pages = await citizen_pages(client, body, limit=2)

    assert [len(p["entries"]) for p in pages] == [2, 2, 1]
    entries = [e for p in pages for e in p["entries"]]
    assert [e["scan_id"] for e in entries] == ordered(inside)
    by_id = {str(r.scan_id): r for r in inside}
    for entry in entries:
        row = by_id[entry["scan_id"]]
        assert entry == {
            "place": row.place,
            "scanned_at": ms(row.scanned_at),
            "scan_id": str(row.scan_id),
            "terminal_id": str(row.terminal_id),
            "decision": "admit",
            "color": "green",
        }

    logged = [
        e
        for e in await audited(client, "trace.citizen")
        if e["target"].get("subject") == alice_subject
    ]
    assert [e["rows"] for e in logged] == [2, 2, 1]
    assert logged[0]["target"] == {
        "subject": alice_subject,
        "since": ms(t0),
        "until": ms(t0 + timedelta(hours=6)),
    }
    everything = await client.app[POOL].fetchval("SELECT string_agg(t::text, ' ') FROM audit_log t")
    assert alice not in everything


async def test_citizen_trace_of_an_unknown_user_is_an_empty_audited_page(
    client: Client,
) -> None:
    """A user id no subject has: 200 with no entries, and the query is still audited (subject
    null, 0 rows); nothing is created for that user."""
    stranger = f"nobody-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    before = await audited(client, "trace.citizen")
    subjects = await client.app[POOL].fetchval("SELECT count(*) FROM subjects")
    response = await client.post(
        "/v1/admin/trace/citizen",
        json={"user_id": stranger, "since": iso(now - timedelta(days=28)), "until": iso(now)},
        headers=ADMIN,
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {"entries": [], "next_cursor": None}
    after = await audited(client, "trace.citizen")
    assert len(after) == len(before) + 1
    assert (after[-1]["target"]["subject"], after[-1]["rows"]) == (None, 0)
    assert await client.app[POOL].fetchval("SELECT count(*) FROM subjects") == subjects


async def test_tracing_needs_the_health_officer_role_and_refusals_are_audited(
    client: Client, make_token: TokenFactory
) -> None:
    """A credential with only the operator or only the auditor role gets 403 on both tracing
    endpoints, each refusal recorded (outcome denied, under that credential's name); a
    health_officer credential is answered, under its own name."""
    pool = client.app[POOL]
    now = datetime.now(UTC)
    window = {"since": iso(now - timedelta(days=1)), "until": iso(now)}
    user_id, _ = await citizen(client, make_token)
    tag = uuid.uuid4().hex[:8]
    for role in (Role.OPERATOR, Role.AUDITOR):
        made, key = await add_credential(pool, f"{role.value}-{tag}", frozenset({role}), timeout=5)
        place = await client.get(
            "/v1/admin/trace/place", params={"place": "X", **window}, headers=auth(key)
        )
        assert place.status == 403
        assert place.content_type == PROBLEM
        person = await client.post(
            "/v1/admin/trace/citizen", json={"user_id": user_id, **window}, headers=auth(key)
        )
        assert person.status == 403
        for action in ("trace.place", "trace.citizen"):
            denied = [e for e in await audited(client, action) if e["actor"].startswith(made.name)]
            assert [(e["outcome"], e["rows"]) for e in denied] == [("denied", None)]
    officer, key = await add_credential(
        pool, f"officer-{tag}", frozenset({Role.HEALTH_OFFICER}), timeout=5
    )
    allowed = await client.get(
        "/v1/admin/trace/place", params={"place": "X", **window}, headers=auth(key)
    )
    assert allowed.status == 200, await allowed.text()
    logged = await audited(client, "trace.place")
    assert logged[-1]["actor"] == f"{officer.name} ({officer.id})"
    assert logged[-1]["outcome"] == "ok"


NOW = datetime.now(UTC)
GOOD = {"place": "X", "since": iso(NOW - timedelta(days=1)), "until": iso(NOW)}
BAD_CURSOR_BODY = encode_cursor(
    SubjectScan("x", NOW, uuid.uuid4(), uuid.uuid4(), "admit", None)
).swapcase()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"place": None}, "place", id="no-place"),
        pytest.param({"place": ""}, "place", id="empty-place"),
        pytest.param({"place": "x" * 201}, "place", id="long-place"),
        pytest.param({"place": "a\x00b"}, "place", id="nul-in-place"),
        pytest.param({"since": None}, "since", id="no-since"),
        pytest.param({"until": None}, "until", id="no-until"),
        pytest.param({"since": "yesterday"}, "since", id="bad-time"),
        pytest.param({"since": "2026-11-01T00:00:00"}, "since", id="no-offset"),
        pytest.param({"until": "2026-02-30T00:00:00Z"}, "until", id="no-such-day"),
        pytest.param({"since": iso(NOW + timedelta(seconds=1))}, "since", id="since-after-until"),
        pytest.param({"since": iso(NOW - timedelta(days=28, seconds=1))}, "since", id="too-long"),
        pytest.param({"since": "0001-01-01T00:00:00+05:00"}, "since", id="out-of-range"),
        pytest.param({"limit": "0"}, "limit", id="limit-0"),
        pytest.param({"limit": "1001"}, "limit", id="limit-1001"),
        pytest.param({"limit": "ten"}, "limit", id="limit-text"),
        pytest.param({"cursor": "not a cursor"}, "cursor", id="cursor-chars"),
        pytest.param({"cursor": "AAAA"}, "cursor", id="cursor-garbage"),
        pytest.param({"cursor": "A"}, "cursor", id="cursor-bad-base64"),
        pytest.param({"cursor": BAD_CURSOR_BODY}, "cursor", id="cursor-tampered"),
    ],
)
async def test_bad_place_trace_parameters_are_400_problems(
    client: Client, change: dict[str, str | None], field: str
) -> None:
    """Each malformed or out-of-range parameter is a 400 problem naming it; nothing is
    answered and no successful query is audited."""
    params = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    before = len(await audited(client, "trace.place"))
    response = await client.get("/v1/admin/trace/place", params=params, headers=ADMIN)
    assert response.status == 400, await response.text()
    assert response.content_type == PROBLEM
    problem = await response.json()
    assert field in problem["errors"] or field in problem["detail"], problem
    assert len(await audited(client, "trace.place")) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"since": GOOD["since"], "until": GOOD["until"]}, id="no-user"),
        pytest.param({"user_id": "u", "since": GOOD["since"]}, id="no-until"),
        pytest.param({"user_id": "", **GOOD, "place": None}, id="empty-user"),
        pytest.param({"user_id": "u", "since": "2026-11-01", "until": GOOD["until"]}, id="date"),
        pytest.param({"user_id": "u", "since": GOOD["until"], "until": GOOD["since"]}, id="order"),
        pytest.param(
            {"user_id": "u", "since": iso(NOW - timedelta(days=29)), "until": GOOD["until"]},
            id="too-long",
        ),
        pytest.param({"user_id": "u", "since": GOOD["since"], "until": GOOD["until"], "limit": 0}),
        pytest.param(
            {"user_id": "u", "since": GOOD["since"], "until": GOOD["until"], "limit": 1001}
        ),
        pytest.param(
            {"user_id": "u", "since": GOOD["since"], "until": GOOD["until"], "cursor": "AAAA"}
        ),
        pytest.param(
            {"user_id": "u", "since": GOOD["since"], "until": GOOD["until"], "cursor": None}
        ),
        pytest.param(
            {"user_id": "u", "since": GOOD["since"], "until": GOOD["until"], "place": "X"},
            id="unknown-field",
        ),
    ],
)
async def test_bad_citizen_trace_bodies_are_400_problems(
    client: Client, body: dict[str, Any]
) -> None:
    """Bodies that fail the schema, times out of order or too far apart, a limit out of range
    and a cursor this API did not give are each a 400 problem."""
    body = {k: v for k, v in body.items() if k != "place" or v is not None}
    response = await client.post("/v1/admin/trace/citizen", json=body, headers=ADMIN)
    assert response.status == 400, await response.text()
    assert response.content_type == PROBLEM


async def test_citizen_trace_body_has_a_size_limit_and_must_be_json(client: Client) -> None:
    """A body over max_body is 413 (with the limit), a non-JSON content type 415."""
    limit = client.app[SETTINGS].max_body
    big = await client.post(
        "/v1/admin/trace/citizen",
        data=b"{" + b" " * limit + b"}",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert big.status == 413
    assert (await big.json())["limit"] == limit
    text = await client.post(
        "/v1/admin/trace/citizen", data=b"{}", headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert text.status == 415


def test_cursors_round_trip_to_the_microsecond() -> None:
    """A cursor holds the scan's time to the microsecond and its id, and reads back exactly;
    any alteration is a validation error, not a crash."""
    at = datetime(2026, 11, 23, 8, 0, 0, 999_999, tzinfo=UTC)
    scan = SubjectScan("x", at, uuid.uuid4(), uuid.uuid4(), "admit", "green")
    text = encode_cursor(scan)
    position = decode_cursor(text)
    assert (position.scanned_at, position.scan_id) == (at, scan.scan_id)
    for bad in ("", text + "A", text[:-2], "=" + text, text.replace(text[0], "%")):
        with pytest.raises(ValidationFailed):
            decode_cursor(bad)


async def test_a_real_scan_is_traced_end_to_end(client: Client, make_token: TokenFactory) -> None:
    """Through verify and the drain: a citizen's admitted scan and an invalid code at the same
    terminal show up in the place trace (the citizen with their user id, the invalid one with
    no subject), and in the citizen's own trace at that place."""
    place = f"Trace Gate {uuid.uuid4().hex[:8]}"
    terminal_id, key = await new_terminal(client, place)
    user_id = f"e2e-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id)
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    admitted = await verify_ok(client, key, code)
    invalid = await verify_ok(client, key, "PC1:NOTAPASS")
    await client.app[DRAIN].drain_all()
    now = datetime.now(UTC)
    window = {"since": iso(now - timedelta(hours=1)), "until": iso(now + timedelta(hours=1))}

    response = await client.get(
        "/v1/admin/trace/place", params={"place": place, **window}, headers=ADMIN
    )
    assert response.status == 200, await response.text()
    entries = (await response.json())["entries"]
    assert [e["scan_id"] for e in entries] == [admitted["scan_id"], invalid["scan_id"]]
    assert {e["terminal_id"] for e in entries} == {terminal_id}
    assert entries[0]["subject"]["user_id"] == user_id
    assert entries[0]["subject"]["name"] == "张*三"
    assert (entries[0]["decision"], entries[0]["color"]) == ("admit", "green")
    assert (entries[1]["decision"], entries[1]["subject"]) == ("invalid", None)

    mine = await client.post(
        "/v1/admin/trace/citizen", json={"user_id": user_id, **window}, headers=ADMIN
    )
    assert [(e["place"], e["scan_id"]) for e in (await mine.json())["entries"]] == [
        (place, admitted["scan_id"])
    ]
