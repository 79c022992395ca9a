"""Bulk test results (issue 5): ``POST /v1/admin/test-results`` with a CSV, on real servers.

A positive turns its subject red at the next scan and stays red until an override; a negative
changes nothing; bad rows are reported by line while good rows apply; a re-upload applies
nothing and moves no status version; whole-file problems (header, encoding, media type, size)
apply nothing; a body that stalls gets 408; the role is enforced; each chunk's audit entry
commits with it and holds counts, never user ids; an error never echoes an ID number.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Role
from passcode.domain.testresults import LabResult
from passcode.keys import CACHE, POOL, SEALER, SETTINGS
from passcode.service.status import sync_unsynced
from passcode.service.testresults import CHUNK, _keyed, apply_chunk  # private: rows as uploaded
from passcode.store.admins import add_credential
from passcode.testing import HEALTHY, auth
from tests.helpers import (
    ADMIN,
    TokenFactory,
    declare,
    fetch_pass,
    new_terminal,
    pass_view,
    verify_ok,
)

Client = TestClient[Any, Any]
PATH = "/v1/admin/test-results"
CSV = "text/csv; charset=utf-8"
HEADER = "user_id,result,tested_at\n"


def hours_ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def new_user() -> str:
    return f"lab-{uuid.uuid4().hex}"


async def upload(
    client: Client, body: str | bytes, *, headers: dict[str, str] = ADMIN, content_type: str = CSV
) -> tuple[ClientResponse, Any]:
    data = body.encode() if isinstance(body, str) else body
    response = await client.post(PATH, data=data, headers={**headers, "Content-Type": content_type})
    return response, await response.json(content_type=None)


async def upload_ok(client: Client, body: str | bytes) -> dict[str, Any]:
    response, answer = await upload(client, body)
    assert response.status == 200, answer
    assert response.content_type == "application/json"
    return answer  # type: ignore[no-any-return]


async def status_of(client: Client, user_id: str) -> tuple[str | None, str | None, int] | None:
    """(color, reason, version) of the user's stored status, or None without one."""
    settings = client.app[SETTINGS]
    user_hash = client.app[SEALER].user_hash(settings.idp_issuer, user_id)
    async with client.app[POOL].acquire() as conn:
        row = await conn.fetchrow(
            "SELECT s.color, s.reason, s.version FROM statuses s"
            " JOIN subjects j ON j.id = s.subject_id WHERE j.user_hash = $1",
            user_hash,
        )
    return None if row is None else (row["color"], row["reason"], row["version"])


async def results_of(client: Client, user_id: str) -> list[str]:
    """Every stored result of the user, oldest test first."""
    settings = client.app[SETTINGS]
    user_hash = client.app[SEALER].user_hash(settings.idp_issuer, user_id)
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT r.result FROM test_results r JOIN subjects j ON j.id = r.subject_id"
            " WHERE j.user_hash = $1 ORDER BY tested_at",
            user_hash,
        )
    return [r["result"] for r in rows]


async def green_citizen(client: Client, make_token: TokenFactory) -> tuple[str, str, str]:
    """(user id, token, green pass) of a citizen who declared healthy."""
    user_id = new_user()
    token = make_token(user_id=user_id)
    await declare(client, token, HEALTHY)
    return user_id, token, await fetch_pass(client, token)


async def pass_color(client: Client, token: str) -> str:
    color: str = (await pass_view(client, token))["color"]
    return color


async def test_a_positive_turns_a_green_citizen_red_at_the_next_scan(
    client: Client, make_token: TokenFactory
) -> None:
    """The green pass issued before the upload is denied with status_red at once (verify reads
    the live status), and a fresh pass is red with reason positive_test."""
    _, key = await new_terminal(client)
    user_id, token, green_pass = await green_citizen(client, make_token)
    assert (await verify_ok(client, key, green_pass))["decision"] == "admit"

    answer = await upload_ok(client, f"{HEADER}{user_id},positive,{hours_ago(2)}\n")

    assert answer == {
        "rows": 1,
        "applied": 1,
        "duplicates": 0,
        "rejected": 0,
        "positives": 1,
        "errors": [],
        "errors_truncated": False,
    }
    denied = await verify_ok(client, key, green_pass)
    assert (denied["decision"], denied["reason"], denied["color"]) == ("deny", "status_red", "red")
    assert await pass_color(client, token) == "red"
    status = await status_of(client, user_id)
    assert status is not None
    assert status[:2] == ("red", "positive_test")
    assert await results_of(client, user_id) == ["positive"]


async def test_a_negative_is_recorded_and_changes_nothing(
    client: Client, make_token: TokenFactory
) -> None:
    """A negative result is stored but moves no status: same colour, same version, still
    admitted. (Negatives release nobody either: see the override test below.)"""
    _, key = await new_terminal(client)
    user_id, token, green_pass = await green_citizen(client, make_token)
    before = await status_of(client, user_id)

    answer = await upload_ok(client, f"{HEADER}{user_id},Negative,{hours_ago(1)}\n")

    assert (answer["applied"], answer["positives"]) == (1, 0)
    assert await status_of(client, user_id) == before
    assert (await verify_ok(client, key, green_pass))["decision"] == "admit"
    assert await pass_color(client, token) == "green"
    assert await results_of(client, user_id) == ["negative"]


async def test_bad_rows_are_reported_by_line_and_good_rows_still_apply(
    client: Client, make_token: TokenFactory
) -> None:
    """A mixed file (CRLF, BOM, a blank line, quoted fields): each bad row is reported with its
    1-based line in the file (header = line 1) and what is wrong; the good rows around them are
    applied; a stray quote spoils only its own line."""
    good = [new_user() for _ in range(4)]
    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    no_offset = hours_ago(1)[:19]
    lines = [
        "user_id,result,tested_at",  # 1
        f"{good[0]},positive,{hours_ago(3)}",  # 2
        f"{new_user()},maybe,{hours_ago(3)}",  # 3 bad result
        f"{new_user()},negative,last tuesday",  # 4 bad time
        f"{new_user()},positive,{soon}",  # 5 future
        f",positive,{hours_ago(3)}",  # 6 empty user id
        f"{new_user()},positive",  # 7 two fields
        f'"{good[1]}","NEGATIVE"," {hours_ago(1)} "',  # 8 quoted, good
        f'"garbage"x,positive,{hours_ago(1)}',  # 9 broken quoting
        "",  # 10 blank: skipped, not a row
        f'"unterminated,positive,{hours_ago(1)}',  # 11 an open quote that never closes
        f"{good[2]},positive,{hours_ago(5)}",  # 12
        f"{new_user()},positive,{hours_ago(24 * 400)}",  # 13 too old
        f"{new_user()},positive,2026-02-30T00:00:00Z",  # 14 no such day
        f"{new_user()},positive,{no_offset}",  # 15 no offset
        f"bad\x07id,negative,{hours_ago(1)}",  # 16 control character
        f"{'x' * 129},negative,{hours_ago(1)}",  # 17 user id too long
        f"{good[3]},negative,{hours_ago(1)},extra",  # 18 four fields
    ]
    body = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()

    answer = await upload_ok(client, body)

    assert {e["line"]: e["error"] for e in answer["errors"]} == {
        3: "result must be positive or negative (the value given is not repeated here)",
        4: "tested_at must be an RFC 3339 time with an offset (the value given is not repeated"
        " here)",
        5: "tested_at is in the future",
        6: "user_id is empty",
        7: "expected 3 fields (user_id,result,tested_at), found 2",
        9: "broken quoting (a quote must close its field before a comma)",
        11: "broken quoting (a quote must close its field before a comma)",
        13: "tested_at is more than a year ago",
        14: "tested_at must be an RFC 3339 time with an offset, not '2026-02-30T00:00:00Z'",
        15: f"tested_at must be an RFC 3339 time with an offset, not '{no_offset}'",
        16: "user_id holds control characters or leading or trailing white space",
        17: "user_id is longer than 128 characters",
        18: "expected 3 fields (user_id,result,tested_at), found 4",
    }
    assert [e["line"] for e in answer["errors"]] == [3, 4, 5, 6, 7, 9, 11, 13, 14, 15, 16, 17, 18]
    assert (answer["rows"], answer["rejected"], answer["applied"]) == (16, 13, 3)
    assert (answer["duplicates"], answer["positives"], answer["errors_truncated"]) == (0, 2, False)
    assert await results_of(client, good[0]) == ["positive"]
    assert await results_of(client, good[1]) == ["negative"]
    assert await results_of(client, good[2]) == ["positive"]
    assert await results_of(client, good[3]) == []


async def test_a_reupload_applies_nothing_and_moves_no_status_version(
    client: Client, make_token: TokenFactory
) -> None:
    """The same file again: applied 0, duplicates = the first upload's applied, positives 0, and
    every status version as it was. A row repeated within one file is a duplicate too."""
    citizens = [await green_citizen(client, make_token) for _ in range(3)]
    tested = hours_ago(4)
    rows = [
        f"{citizens[0][0]},positive,{tested}",
        f"{citizens[1][0]},negative,{tested}",
        f"{citizens[2][0]},positive,{tested}",
        f"{citizens[2][0]},positive,{tested}",  # the same record twice in one file
    ]
    body = HEADER + "\n".join(rows) + "\n"
    first = await upload_ok(client, body)
    assert (first["applied"], first["duplicates"], first["positives"]) == (3, 1, 2)
    versions = [await status_of(client, user_id) for user_id, _, _ in citizens]

    again = await upload_ok(client, body)

    assert (again["applied"], again["duplicates"], again["positives"]) == (0, 4, 0)
    assert [await status_of(client, user_id) for user_id, _, _ in citizens] == versions
    assert [v[0] for v in versions if v is not None] == ["red", "green", "red"]


async def test_an_unknown_user_gets_a_subject_and_is_red_once_they_declare(
    client: Client, make_token: TokenFactory
) -> None:
    """A positive for a user never seen creates their (nameless) subject with no status colour
    yet; when they first declare, even healthy, their status and pass are red."""
    user_id = new_user()
    answer = await upload_ok(client, f"{HEADER}{user_id},positive,{hours_ago(6)}\n")
    assert (answer["applied"], answer["positives"]) == (1, 1)
    status = await status_of(client, user_id)
    assert status is not None
    assert status[0] is None

    token = make_token(user_id=user_id)
    declared = await declare(client, token, HEALTHY)

    assert declared["status"]["color"] == "red"
    assert await pass_color(client, token) == "red"


async def test_an_override_releases_a_positive_and_a_reupload_keeps_it_released(
    client: Client, make_token: TokenFactory
) -> None:
    """Red from a positive lasts until an authority's override: a green quarantine_release
    override settles it (a fresh pass is admitted), and uploading the same result again does
    not turn the citizen red again."""
    _, key = await new_terminal(client)
    user_id, token, _ = await green_citizen(client, make_token)
    body = f"{HEADER}{user_id},positive,{hours_ago(30)}\n"
    await upload_ok(client, body)
    assert await pass_color(client, token) == "red"

    response = await client.post(
        "/v1/admin/overrides",
        json={"user_id": user_id, "color": "green", "reason": "quarantine_release"},
        headers=ADMIN,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["status"]["color"] == "green"
    released = await fetch_pass(client, token)
    assert (await verify_ok(client, key, released))["decision"] == "admit"

    again = await upload_ok(client, body)
    assert (again["applied"], again["duplicates"]) == (0, 1)
    assert await pass_color(client, token) == "green"


async def test_a_chunk_committed_before_its_redis_write_is_repaired_and_not_redone(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory
) -> None:
    """Crash between a chunk's commit and its Redis write: Postgres holds the result, the
    exposure and the red status with ``cached_version`` behind; the sync the drain runs pushes
    it (verify then denies the old pass), and re-uploading the file applies nothing more."""
    client = await aiohttp_client(create_app(replace(settings, drain_enabled=False)))
    _, key = await new_terminal(client)
    user_id, _, green_pass = await green_citizen(client, make_token)
    tested = datetime.now(UTC) - timedelta(hours=2)
    pool = client.app[POOL]
    keyed = _keyed(client.app[SEALER], settings.idp_issuer, [LabResult(2, user_id, True, tested)])
    upload_id = str(uuid.uuid4())
    outcome = await apply_chunk(
        pool,
        keyed,
        uploaded_by="crashed",
        audit_target={"upload": upload_id, "chunk": 1, "chunks": 2},
        now=datetime.now(UTC),
        policy=settings.policy(),
        timeout=5,
    )
    assert (outcome.applied, outcome.exposed, outcome.statuses.bumped) == (1, 1, 1)
    # The chunk is audited although the upload never got further (chunk 2 never ran).
    assert [
        (e["actor"], e["rows"], e["target"]["chunk"]) for e in await entries(client, upload_id)
    ][-1] == (
        "crashed",
        1,
        1,
    )
    status = await status_of(client, user_id)
    assert status is not None
    assert status[:2] == ("red", "positive_test")
    assert (await verify_ok(client, key, green_pass))["decision"] == "admit"  # Redis not told

    assert await sync_unsynced(pool, client.app[CACHE], limit=500, timeout=5) >= 1

    assert (await verify_ok(client, key, green_pass))["reason"] == "status_red"
    answer = await upload_ok(client, f"{HEADER}{user_id},positive,{tested.isoformat()}\n")
    assert (answer["applied"], answer["duplicates"], answer["positives"]) == (0, 1, 0)
    assert await status_of(client, user_id) == status


async def test_an_upload_of_several_chunks_applies_every_row(
    client: Client, make_token: TokenFactory
) -> None:
    """More rows than one transaction takes: every chunk is applied, positives in any chunk
    turn red, and the counts add up."""
    positives = [await green_citizen(client, make_token) for _ in range(3)]
    negatives = [f"{new_user()},negative,{hours_ago(1)}" for _ in range(CHUNK * 2)]
    rows = [*negatives, *(f"{user_id},positive,{hours_ago(2)}" for user_id, _, _ in positives)]
    answer = await upload_ok(client, HEADER + "\n".join(rows))
    assert (answer["rows"], answer["applied"], answer["positives"]) == (len(rows), len(rows), 3)
    for _, token, _ in positives:
        assert await pass_color(client, token) == "red"


async def test_only_the_first_1000_errors_are_listed(client: Client) -> None:
    """1001 bad rows and a good one: all counted, the good one applied, the first 1000 errors
    listed (lines 2 to 1001) and errors_truncated set."""
    user_id = new_user()
    rows = [f"u{n},unknown,{hours_ago(1)}" for n in range(1001)]
    answer = await upload_ok(
        client, HEADER + "\n".join([*rows, f"{user_id},negative,{hours_ago(1)}"])
    )
    assert (answer["rows"], answer["rejected"], answer["applied"]) == (1002, 1001, 1)
    assert [e["line"] for e in answer["errors"]] == list(range(2, 1002))
    assert answer["errors_truncated"] is True


async def test_whole_file_problems_are_refused_and_apply_nothing(
    client: Client, aiohttp_client: Any, settings: Settings
) -> None:
    """No header or another header → 400 naming the expected one; a body that is not UTF-8 →
    400 with its line; another media type or charset → 415; a body above PASSCODE_MAX_CSV_BODY
    or more rows than PASSCODE_MAX_CSV_ROWS → 413. Not one row of them is stored."""
    user_id = new_user()
    row = f"{user_id},positive,{hours_ago(1)}\n"
    refused = [
        (row, CSV, 400, "line 1 must be the header user_id,result,tested_at"),
        ("user,result,time\n" + row, CSV, 400, "line 1 must be the header"),
        (b"", CSV, 400, "line 1 must be the header"),
        (HEADER.encode() + row.encode() + b"x\xff,positive,x\n", CSV, 400, "not UTF-8 (line 3"),
        (HEADER + row, "text/plain", 415, "text/csv"),
        (HEADER + row, "application/json", 415, "text/csv"),
        (HEADER + row, "text/csv; charset=latin-1", 415, "UTF-8"),
    ]
    for body, media, status, detail in refused:
        response, answer = await upload(client, body, content_type=media)
        assert response.status == status, answer
        assert response.content_type == "application/problem+json"
        assert detail in answer["detail"], answer

    small = await aiohttp_client(create_app(replace(settings, max_csv_body=200, max_csv_rows=2)))
    big = HEADER + row + f"{new_user()},negative,{hours_ago(1)}\n" * 3
    response, answer = await upload(small, big)
    assert response.status == 413, answer
    assert answer["limit"] == 200
    three = HEADER + "\n".join(f"u{i},negative,{hours_ago(1)}" for i in range(3))
    assert len(three) < 200
    response, answer = await upload(small, three)
    assert response.status == 413, answer
    assert "at most 2" in answer["detail"]
    assert await results_of(client, user_id) == []


async def test_a_credential_without_the_role_is_refused_and_audited(client: Client) -> None:
    """An auditor's credential gets 403 (nothing applied) and the refusal is in the audit log."""
    pool = client.app[POOL]
    _, key = await add_credential(pool, "auditor only", frozenset({Role.AUDITOR}), timeout=5)
    user_id = new_user()
    response, answer = await upload(
        client, f"{HEADER}{user_id},positive,{hours_ago(1)}\n", headers=auth(key)
    )
    assert response.status == 403, answer
    async with pool.acquire() as conn:
        entry = await conn.fetchrow(
            "SELECT actor, outcome FROM audit_log WHERE action = 'test_results.upload'"
            " ORDER BY id DESC LIMIT 1"
        )
    assert entry is not None
    assert entry["outcome"] == "denied"
    assert entry["actor"].startswith("auditor only (")
    assert await results_of(client, user_id) == []


async def entries(client: Client, upload: str | None = None) -> list[dict[str, Any]]:
    """The test_results.upload entries (target decoded), of one upload if given, oldest first."""
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT actor, outcome, target::text AS target, rows FROM audit_log"
            " WHERE action = 'test_results.upload' AND ($1::text IS NULL OR target->>'upload' = $1)"
            " ORDER BY id",
            upload,
        )
    return [{**dict(r), "target": json.loads(r["target"]), "raw": r["target"]} for r in rows]


async def test_each_chunk_has_an_audit_entry_with_counts_and_no_user_id(client: Client) -> None:
    """One entry per chunk (action test_results.upload) with the upload's counts, its random
    upload id, the chunk's index and counts as target and the chunk's applied rows as rows; no
    user id (nor its hash) appears in any."""
    users = [new_user() for _ in range(3)]
    tested = hours_ago(1)
    rows = [
        f"{users[0]},positive,{tested}",
        f"{users[1]},negative,{tested}",
        f"{users[2]},unsure,{tested}",
        f"{users[0]},positive,{tested}",  # a duplicate
    ]
    await upload_ok(client, HEADER + "\n".join(rows))
    entry = (await entries(client))[-1]
    target = entry["target"]
    upload_id = target.pop("upload")
    assert uuid.UUID(upload_id).version == 4
    assert target == {
        "rows": 4,
        "good": 3,
        "rejected": 1,
        "chunk": 1,
        "chunks": 1,
        "records": 3,
        "applied": 2,
        "duplicates": 1,
        "positives": 1,
    }
    assert (entry["outcome"], entry["rows"]) == ("ok", 2)
    assert entry["actor"] == "admin (PASSCODE_ADMIN_KEY)"
    assert len(await entries(client, upload_id)) == 1
    settings = client.app[SETTINGS]
    for user_id in users:
        assert user_id not in entry["raw"]
        assert client.app[SEALER].user_hash(settings.idp_issuer, user_id).hex() not in entry["raw"]


async def test_a_multi_chunk_upload_has_one_entry_per_chunk_adding_up(client: Client) -> None:
    """CHUNK * 2 + 1 records: three entries sharing one upload id, chunks 1, 2, 3 of 3, whose
    applied rows add up to the answer's; another upload gets another id. An upload with no good
    record still gets one entry (chunk 0 of 0)."""
    rows = [f"{new_user()},negative,{hours_ago(1)}" for _ in range(CHUNK * 2 + 1)]
    answer = await upload_ok(client, HEADER + "\n".join(rows))
    upload_id = (await entries(client))[-1]["target"]["upload"]
    chunks = await entries(client, upload_id)
    assert [(e["target"]["chunk"], e["target"]["chunks"]) for e in chunks] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert [e["target"]["records"] for e in chunks] == [CHUNK, CHUNK, 1]
    assert sum(e["rows"] for e in chunks) == answer["applied"] == len(rows)

    await upload_ok(client, f"{HEADER}{new_user()},unsure,{hours_ago(1)}\n")
    last = (await entries(client))[-1]
    assert last["target"]["upload"] != upload_id
    assert (last["target"]["chunk"], last["target"]["chunks"], last["rows"]) == (0, 0, 0)


async def test_a_chunk_whose_audit_entry_fails_applies_nothing(
    client: Client, settings: Settings
) -> None:
    """The audit entry is written in the chunk's transaction: when it cannot be written (here a
    target that is not JSON), the chunk's results roll back with it, so nothing is applied
    unaudited."""
    user_id = new_user()
    keyed = _keyed(
        client.app[SEALER],
        settings.idp_issuer,
        [LabResult(2, user_id, True, datetime.now(UTC) - timedelta(hours=1))],
    )
    with pytest.raises(TypeError):
        await apply_chunk(
            client.app[POOL],
            keyed,
            uploaded_by="broken",
            audit_target={"upload": object()},
            now=datetime.now(UTC),
            policy=settings.policy(),
            timeout=5,
        )
    assert await results_of(client, user_id) == []
    assert await status_of(client, user_id) is None


async def test_an_id_number_in_a_wrong_column_is_never_echoed(client: Client) -> None:
    """Columns out of order put an ID number where result or tested_at belongs: the row is
    reported by line, but the number appears nowhere in the response (nor in the audit log)."""
    id_number = "110101199001011234"
    tested = hours_ago(1)
    rows = [
        f"positive,{id_number},{tested}",
        f"positive,{tested},{id_number}",
        f"{tested},positive,{id_number}",
        f"negative,11010119900101123X,{tested}",
        f"x,negative,{id_number[:4]}-{id_number[4:6]}-{id_number[6:]}",
    ]
    response = await client.post(
        PATH, data=(HEADER + "\n".join(rows)).encode(), headers={**ADMIN, "Content-Type": CSV}
    )
    text = await response.text()
    assert response.status == 200, text
    answer = json.loads(text)
    assert [e["line"] for e in answer["errors"]] == [2, 3, 4, 5, 6]
    for secret in (id_number, "11010119900101123X", id_number[6:]):
        assert secret not in text
        assert secret not in (await entries(client))[-1]["raw"]
    # A time in the result column is still shown: it tells the columns are swapped.
    assert answer["errors"][1]["error"] == f"result must be positive or negative, not {tested!r}"


async def stalled(
    client: Client, path: str, content_type: str, framing: str, first: bytes
) -> tuple[int, dict[str, Any]]:
    """Send headers and part of a body, then nothing: the status and problem body answered."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\n"
                f"Authorization: {ADMIN['Authorization']}\r\nContent-Type: {content_type}\r\n"
                f"{framing}\r\n\r\n"
            ).encode()
            + first
        )
        await writer.drain()
        async with asyncio.timeout(20):  # a bound for the test only; the server answers first
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in {b"\r\n", b""}:
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    assert headers["content-type"].startswith("application/problem+json")
    return int(status_line.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("path", "content_type", "framing", "first"),
    [
        (PATH, CSV, "Content-Length: 1000", HEADER.encode()),
        (PATH, CSV, "Transfer-Encoding: chunked", b"400\r\n" + HEADER.encode()),
        ("/v1/admin/overrides", "application/json", "Content-Length: 100", b'{"user_id": '),
        ("/v1/admin/overrides", "application/json", "Transfer-Encoding: chunked", b"40\r\n{"),
    ],
)
async def test_a_body_that_stalls_gets_408(
    aiohttp_client: Any,
    settings: Settings,
    path: str,
    content_type: str,
    framing: str,
    first: bytes,
) -> None:
    """A client that sends part of its body (with a Content-Length larger than what it sends, or
    a chunk it never finishes) and then nothing gets 408 request-timeout once
    PASSCODE_BODY_TIMEOUT passes: the CSV upload and a JSON endpoint (read_json) alike."""
    client = await aiohttp_client(create_app(replace(settings, body_timeout=0.3)))
    status, problem = await stalled(client, path, content_type, framing, first)
    assert status == 408, problem
    assert problem["type"].endswith("/request-timeout")
    assert problem["title"] == "Request body not received in time"
    assert "0.3 s" in problem["detail"]
