"""Venue check-in (场所码) on real PostgreSQL and Redis: posters issued by operators (audited, a
new one revoking the old), check-ins recorded once per checkin_id in the one scan log (tracing
and risk places see them), and forged, revoked and unknown codes refused with nothing stored."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import zxingcpp
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from passcode.api.schemas import CHECKIN_RESPONSE, VENUE_POSTER
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Color, Role
from passcode.domain.passfmt import b45decode, b45encode, kid_of
from passcode.domain.venuecode import DAY, VenueClaims, authenticate_venue, sign_venue
from passcode.keys import CHECKINS, DRAIN, KEYRING, POOL
from passcode.testing import auth
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ADMIN,
    PNG_SIGNATURE,
    TokenFactory,
    assert_exact_problem,
    cli,
    colors_agree,
    finished,
    mark,
    needs_tcp,
    new_citizen,
    ok,
    role_headers,
    scans_at,
)

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


def a_place() -> str:
    return f"Corner Shop {uuid.uuid4().hex[:8]}"


async def new_place(client: Client, name: str = "街角小店 Corner Shop") -> str:
    place = a_place()
    response = await client.put(
        f"/v1/admin/places/{place}", json={"type": "shop", "name": name}, headers=ADMIN
    )
    assert response.status == 201, await response.text()
    return place


async def issue_poster(client: Client, place: str, headers: dict[str, str] = ADMIN) -> Any:
    response = await client.post(f"/v1/admin/places/{place}/poster", headers=headers)
    body = await response.json()
    assert response.status == 201, body
    assert response.headers["Cache-Control"] == "no-store"
    jsonschema.validate(body, VENUE_POSTER)
    return body


async def check_in(client: Client, token: str, code: str, **extra: Any) -> Any:
    response = await client.post(
        "/v1/checkins", json={"place_code": code, **extra}, headers=auth(token)
    )
    return response, await response.json(content_type=None)


async def scans_of(client: Client, scan_id: str) -> list[Any]:
    async with client.app[POOL].acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT place, subject_id, decision, reason, color, terminal_id, kind"
                " FROM scans WHERE scan_id = $1",
                uuid.UUID(scan_id),
            )
        )


async def audit_of(client: Client, action: str, place: str) -> list[Any]:
    async with client.app[POOL].acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT actor, outcome, target FROM audit_log WHERE action = $1"
                " AND target->>'place' = $2 ORDER BY id",
                action,
                place,
            )
        )


async def test_a_check_in_is_recorded_once_per_checkin_id_and_tracing_finds_it(
    client: Client, make_token: TokenFactory
) -> None:
    """A green citizen checking in gets the staff's card (green, ok, masked name, the place's
    id and name); a retry with the same checkin_id answers the same and is marked replayed;
    after the drain the scans table holds exactly one row for it, at the place, of the
    citizen, with the venue terminal; tracing by place lists it."""
    place = await new_place(client)
    poster = await issue_poster(client, place)
    citizen = await new_citizen(client, make_token)
    checkin_id = str(uuid.uuid4())
    first, body = await check_in(client, citizen.token, poster["code"], checkin_id=checkin_id)
    assert first.status == 200, body
    assert first.headers["Cache-Control"] == "no-store"
    assert "Idempotent-Replayed" not in first.headers
    jsonschema.validate(body, CHECKIN_RESPONSE)
    assert body["color"] == "green"
    assert body["reason"] == "ok"
    assert body["holder"] == {"name": "张*三"}
    assert body["place"] == {"id": place, "name": "街角小店 Corner Shop"}
    assert body["checkin_id"] == checkin_id
    server_time = datetime.fromisoformat(body["server_time"])
    assert abs(server_time - datetime.now(UTC)) < timedelta(seconds=30)

    again, replay = await check_in(client, citizen.token, poster["code"], checkin_id=checkin_id)
    assert again.status == 200, replay
    assert again.headers["Idempotent-Replayed"] == "true"
    assert {k: v for k, v in replay.items() if k != "server_time"} == {
        k: v for k, v in body.items() if k != "server_time"
    }

    await client.app[DRAIN].drain_all()
    rows = await scans_of(client, checkin_id)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["place"], row["subject_id"], row["decision"], row["reason"], row["color"]) == (
        place,
        citizen.subject,
        "admit",
        "ok",
        "green",
    )
    async with client.app[POOL].acquire() as conn:
        venue_terminal = await conn.fetchval(
            "SELECT terminal_id FROM venues WHERE place = $1", place
        )
    assert row["terminal_id"] == venue_terminal

    window = {
        "place": place,
        "since": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "until": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    }
    traced = await client.get("/v1/admin/trace/place", params=window, headers=ADMIN)
    found = await traced.json()
    assert traced.status == 200, found
    assert [e["scan_id"] for e in found["entries"]] == [checkin_id], found
    entry = found["entries"][0]
    assert (entry["terminal_id"], entry["decision"]) == (str(venue_terminal), "admit")
    assert entry["subject"]["user_id"] == citizen.user_id


async def test_check_ins_without_an_id_get_time_ordered_ids_and_each_is_recorded(
    client: Client, make_token: TokenFactory
) -> None:
    """Without a checkin_id the service makes one (a version-7 UUID); two check-ins are two
    scans at the place."""
    place = await new_place(client)
    poster = await issue_poster(client, place)
    citizen = await new_citizen(client, make_token)
    ids = []
    for _ in range(2):
        response, body = await check_in(client, citizen.token, poster["code"])
        assert response.status == 200, body
        assert uuid.UUID(body["checkin_id"]).version == 7
        ids.append(body["checkin_id"])
    assert ids[0] != ids[1]
    await client.app[DRAIN].drain_all()
    assert await scans_at(client, place) == 2


async def test_a_check_in_while_redis_is_down_goes_straight_to_postgres_once(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """Redis cut (DESIGN §5): the check-in is decided from PostgreSQL and stored there directly
    (with the place; the drain is off), and a retry of the same checkin_id is stored once."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), drain_enabled=False
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        place = await new_place(client)
        poster = await issue_poster(client, place)
        citizen = await new_citizen(client, make_token)
        await redis_proxy.cut()
        checkin_id = str(uuid.uuid4())
        for _ in range(2):
            response, body = await check_in(
                client, citizen.token, poster["code"], checkin_id=checkin_id
            )
            assert response.status == 200, body
            assert (body["color"], body["checkin_id"]) == ("green", checkin_id)
        rows = await scans_of(client, checkin_id)
        assert [(r["place"], r["subject_id"]) for r in rows] == [(place, citizen.subject)]
    finally:
        await redis_proxy.cut()
        await client.close()


async def test_forged_revoked_and_unknown_codes_are_refused_and_nothing_is_recorded(
    client: Client, make_token: TokenFactory
) -> None:
    """A code signed by a foreign key or with a flipped byte is a 400 (venue-code-invalid), a
    pass or garbage too; a poster replaced by a newer one is a 410 (venue-code-revoked,
    reason revoked) while the new one works; a genuine code of a place with no poster, or of
    an issue the service never made, is a 404 (unknown-venue). None of them leaves a scan."""
    place = await new_place(client)
    old = await issue_poster(client, place)
    new = await issue_poster(client, place)
    assert new["issue"] == old["issue"] + 1
    citizen = await new_citizen(client, make_token)

    now = int(datetime.now(UTC).timestamp())
    foreign = Ed25519PrivateKey.generate()
    forged = sign_venue(
        VenueClaims("passcode", place, new["issue"], now, now + DAY),
        foreign,
        kid_of(foreign.public_key()),
    )
    raw = bytearray(b45decode(new["code"][4:]))
    raw[-1] ^= 1
    tampered = "PP1:" + b45encode(bytes(raw))
    signer = client.app[KEYRING].signer(now)
    unknown_place = sign_venue(
        VenueClaims("passcode", a_place(), 1, now, now + DAY), signer.private, signer.kid
    )
    claims, _ = authenticate_venue(new["code"], client.app[KEYRING].card_keys(now))
    future_issue = sign_venue(
        VenueClaims("passcode", place, claims.issue + 5, now, now + DAY),
        signer.private,
        signer.kid,
    )
    refused = [
        (forged, 400, "venue-code-invalid", "unknown_key"),
        (tampered, 400, "venue-code-invalid", "bad_signature"),
        (citizen.code, 400, "venue-code-invalid", "unsupported"),
        ("PP1:%%%", 400, "venue-code-invalid", "malformed"),
        (old["code"], 410, "venue-code-revoked", "revoked"),
        (unknown_place, 404, "unknown-venue", None),
        (future_issue, 404, "unknown-venue", None),
    ]
    ids = []
    for code, status, slug, reason in refused:
        checkin_id = str(uuid.uuid4())
        ids.append(checkin_id)
        response = await client.post(
            "/v1/checkins",
            json={"place_code": code, "checkin_id": checkin_id},
            headers=auth(citizen.token),
        )
        problem = await assert_exact_problem(response, status, (slug,))
        assert problem["type"].endswith(slug), problem
        assert problem.get("reason") == reason, problem

    ok, body = await check_in(client, citizen.token, new["code"])
    assert ok.status == 200, body
    await client.app[DRAIN].drain_all()
    assert await scans_at(client, place) == 1
    for checkin_id in ids:
        assert await scans_of(client, checkin_id) == []


async def test_posters_need_the_operator_role_are_audited_and_print_the_current_code(
    client: Client,
) -> None:
    """Only an operator issues or prints a poster (a health officer gets 403, audited as
    denied); each issue is in the audit log naming the issue it revokes; the PNG decodes with
    zxing back to the current venue code and the SVG carries the place's name; a place that
    does not exist, or has no poster, is a 404."""
    place = await new_place(client, name="Café <Ünïcode> 茶馆")
    officer_name = f"officer-{uuid.uuid4().hex[:8]}"
    officer = await role_headers(client, Role.HEALTH_OFFICER.value, name=officer_name)
    denied = await client.post(f"/v1/admin/places/{place}/poster", headers=officer)
    await assert_exact_problem(denied, 403)
    missing = await client.get(f"/v1/admin/places/{place}/poster.png", headers=ADMIN)
    await assert_exact_problem(missing, 404)
    nowhere = await client.post(f"/v1/admin/places/{a_place()}/poster", headers=ADMIN)
    await assert_exact_problem(nowhere, 404)

    operator = await role_headers(client, Role.OPERATOR.value, name="poster-printer")
    first = await issue_poster(client, place, operator)
    second = await issue_poster(client, place, operator)
    async with client.app[POOL].acquire() as conn:
        refusals = await conn.fetch(
            "SELECT action, outcome FROM audit_log WHERE actor LIKE $1 ORDER BY id",
            f"{officer_name} (%",
        )
    assert [tuple(r) for r in refusals] == [("venue.issue", "denied")]
    entries = await audit_of(client, "venue.issue", place)
    assert [(e["outcome"], e["actor"].startswith("poster-printer (")) for e in entries] == [
        ("ok", True),
        ("ok", True),
    ]
    targets = [json.loads(e["target"]) for e in entries]
    assert [(t["issue"], t["revokes_issue"]) for t in targets] == [
        (first["issue"], None),
        (second["issue"], first["issue"]),
    ]

    png = await client.get(second["png_url"], headers=operator)
    assert png.status == 200
    assert png.headers["Cache-Control"] == "no-store"
    data = await png.read()
    assert data.startswith(PNG_SIGNATURE)
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))
    assert [d.text for d in decoded] == [second["code"]]

    svg = await client.get(second["svg_url"], headers=operator)
    assert svg.status == 200
    assert svg.content_type == "image/svg+xml"
    text = await svg.text()
    assert "Café &lt;Ünïcode&gt; 茶馆" in text
    assert "请用手机扫码登记" in text
    assert "Scan with your phone to check in" in text
    denied_print = await client.get(second["svg_url"], headers=officer)
    await assert_exact_problem(denied_print, 403)
    async with client.app[POOL].acquire() as conn:
        printed = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE actor LIKE $1 AND action = 'venue.print'"
            " AND outcome = 'denied'",
            f"{officer_name} (%",
        )
    assert printed == 1


async def test_a_risk_place_marking_after_a_check_in_turns_the_citizen_yellow(
    client: Client, make_token: TokenFactory
) -> None:
    """A citizen who checked in at a place that is then marked risky for a window holding the
    check-in turns yellow (Postgres and Redis agree); their next check-in says yellow; one who
    checked in elsewhere stays green."""
    place, elsewhere = await new_place(client), await new_place(client)
    poster, other = await issue_poster(client, place), await issue_poster(client, elsewhere)
    exposed, spared = await new_citizen(client, make_token), await new_citizen(client, make_token)
    assert (await check_in(client, exposed.token, poster["code"]))[0].status == 200
    assert (await check_in(client, spared.token, other["code"]))[0].status == 200
    await client.app[DRAIN].drain_all()

    now = datetime.now(UTC)
    marked = await mark(
        client,
        {
            "place": place,
            "since": (now - timedelta(minutes=10)).isoformat(),
            "until": (now + timedelta(seconds=1)).isoformat(),
            "note": "confirmed case checked in",
        },
    )
    done = await finished(client, marked["id"])
    assert (done["state"], done["affected"]) == ("done", 1), done
    assert await colors_agree(client, exposed.subject) is Color.YELLOW
    assert await colors_agree(client, spared.subject) is Color.GREEN
    response, body = await check_in(client, exposed.token, other["code"])
    assert response.status == 200, body
    assert (body["color"], body["reason"]) == ("yellow", "status_yellow")


async def test_a_check_in_needs_a_citizen_token_and_a_declaration(
    client: Client, make_token: TokenFactory
) -> None:
    """No token is a 401; a citizen who never declared gets 404 no-declaration and nothing is
    recorded; a body that fails the schema (unknown field, a checkin_id that is not a UUID)
    is a 400."""
    place = await new_place(client)
    poster = await issue_poster(client, place)
    anonymous = await client.post("/v1/checkins", json={"place_code": poster["code"]})
    await assert_exact_problem(anonymous, 401)
    response, body = await check_in(client, make_token(), poster["code"])
    assert response.status == 404, body
    assert body["type"].endswith("no-declaration")
    citizen = await new_citizen(client, make_token)
    for bad in ({"place_code": poster["code"], "extra": 1}, {"place_code": "x", "checkin_id": "1"}):
        refused = await client.post("/v1/checkins", json=bad, headers=auth(citizen.token))
        await assert_exact_problem(refused, 400)
    await client.app[DRAIN].drain_all()
    assert await scans_at(client, place) == 0


async def test_the_cli_issues_a_poster_that_revokes_the_old_one_and_writes_png_and_svg(
    client: Client, settings: Settings, make_token: TokenFactory, tmp_path: Path
) -> None:
    """``passcode place poster <place> --png --svg`` issues the next issue (audited as
    cli:<login>), writes a PNG whose QR reads back to the printed code and an SVG naming the
    place; the running service refuses the API-issued poster from then on (410) and checks in
    with the CLI's."""
    place = await new_place(client)
    before = await issue_poster(client, place)
    png, svg = tmp_path / "poster.png", tmp_path / "poster.svg"
    done = await cli(settings, "place", "poster", place, "--png", str(png), "--svg", str(svg))
    printed = ok(done).strip().splitlines()[-1]
    assert printed.startswith("PP1:")
    assert [d.text for d in zxingcpp.read_barcodes(Image.open(png))] == [printed]
    assert "街角小店 Corner Shop" in svg.read_text(encoding="utf-8")
    entries = await audit_of(client, "venue.issue", place)
    assert [e["actor"].startswith("cli:") for e in entries] == [False, True]
    assert json.loads(entries[1]["target"])["revokes_issue"] == before["issue"]

    citizen = await new_citizen(client, make_token)
    client.app[CHECKINS].forget(place)  # another process issued it: as after the cache's 5 s
    stale, problem = await check_in(client, citizen.token, before["code"])
    assert (stale.status, problem["reason"]) == (410, "revoked")
    fresh, body = await check_in(client, citizen.token, printed)
    assert fresh.status == 200, body


async def test_the_answers_the_citizen_page_reads_keep_their_shape(
    client: Client, make_token: TokenFactory
) -> None:
    """What passcode/web/app/checkin.js reads: a card's colour, holder.name, place.name,
    server_time (RFC 3339) and the checkin_id it sent; and a refusal's problem ``type`` ending in
    the slug it words, with ``reason`` ``expired`` on a 410 for a code past its ``exp`` (worded
    apart from a replaced poster), each as application/problem+json."""
    place = await new_place(client, "图书馆 Library")
    poster = await issue_poster(client, place)
    citizen = await new_citizen(client, make_token)
    checkin_id = str(uuid.uuid4())
    response, body = await check_in(client, citizen.token, poster["code"], checkin_id=checkin_id)
    assert response.status == 200, body
    assert body["color"] in {"green", "yellow", "red"}
    assert body["holder"] == {"name": "张*三"}
    assert body["place"]["name"] == "图书馆 Library"
    assert datetime.fromisoformat(body["server_time"]).tzinfo is not None
    assert body["checkin_id"] == checkin_id

    now = int(datetime.now(UTC).timestamp())
    claims, _ = authenticate_venue(poster["code"], client.app[KEYRING].card_keys(now))
    signer = client.app[KEYRING].signer(now)
    lapsed = sign_venue(
        VenueClaims("passcode", place, claims.issue, now - 2 * DAY, now - DAY),
        signer.private,
        signer.kid,
    )
    response, problem = await check_in(client, citizen.token, lapsed)
    assert response.status == 410, problem
    assert response.content_type == "application/problem+json"
    assert problem["type"].rsplit("/", 1)[-1] == "venue-code-revoked"
    assert problem["reason"] == "expired"
    response, problem = await check_in(client, citizen.token, "PP1:%%%")
    assert (response.status, problem["type"].rsplit("/", 1)[-1]) == (400, "venue-code-invalid")
    assert response.content_type == "application/problem+json"
