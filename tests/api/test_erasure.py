"""Erasure of subjects (passcode.store.erasure) on real PostgreSQL and Redis: every record of
the erased subject goes, in every table and every Redis key of theirs, while another citizen's
stay; scans still in the stream never reach the scan log; an authority's open ruling stays with
only what it needs; a second erasure erases nothing more."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import CACHE, DRAIN, POOL
from passcode.store import deadletters
from passcode.store.deadletters import DeadLetter
from passcode.store.erasure import erase_subjects
from tests.api.erasure_history import History, cjk_name, rows_of, seed_history
from tests.helpers import TokenFactory, new_terminal

Client = TestClient[Any, Any]
PLACE = "Erasure Mall, Gate 1"
ALL_GONE = dict.fromkeys(
    ("subjects", "declarations", "statuses", "overrides", "exposures", "test_results", "cards"),
    0,
) | {"scans": 0}


async def two_citizens(
    client: Client, make_token: TokenFactory, *, open_ruling: bool = False, drain: bool = True
) -> tuple[History, History]:
    _, key = await new_terminal(client, PLACE)
    histories = []
    for ruling in (open_ruling, False):
        name, masked = cjk_name()
        histories.append(
            await seed_history(
                client,
                make_token,
                key,
                PLACE,
                name=name,
                masked=masked,
                open_ruling=ruling,
                drain=drain,
            )
        )
    return histories[0], histories[1]


async def redis_keys_of(client: Client, history: History) -> list[str]:
    """The Redis keys of this run's prefix naming the subject, its keyed hash or a scan id."""
    cache = client.app[CACHE]
    found = []
    needles = [history.subject.hex(), history.user_hash.hex(), *history.scan_ids]
    async for key in cache.client.scan_iter(match=f"{cache.prefix}:*", count=1000):
        text = key.decode() if isinstance(key, bytes) else key
        if any(n in text for n in needles):
            found.append(text)
    return found


async def test_erasure_removes_every_record_and_key_of_the_subject_and_no_one_elses(
    client: Client, make_token: TokenFactory
) -> None:
    """After erase_subjects, no table holds a row of the erased subject and Redis no key of
    theirs (status, rate limit, scan-id marks); the other citizen's rows and keys are intact."""
    gone, kept = await two_citizens(client, make_token)
    before = await rows_of(client, kept.subject)
    assert await redis_keys_of(client, gone), "the history left no Redis key to erase"
    assert all(before[t] for t in ("subjects", "declarations", "cards", "scans", "test_results"))

    report = await erase_subjects(
        client.app[POOL], client.app[CACHE], [gone.subject], now=datetime.now(UTC), timeout=5
    )

    assert (report.subjects, report.erased, report.kept) == (1, 1, ())
    assert report.rows["declarations"] == 2
    assert report.rows["scans"] == 2
    assert report.rows["cards"] == 1
    assert await rows_of(client, gone.subject) == ALL_GONE
    assert await redis_keys_of(client, gone) == []
    assert await rows_of(client, kept.subject) == before
    assert await client.app[CACHE].get_status(kept.subject) is not None


async def test_a_second_erasure_erases_nothing_more(
    client: Client, make_token: TokenFactory
) -> None:
    """Erasing an erased subject again finds nothing (idempotent), and fails on nothing."""
    gone, _ = await two_citizens(client, make_token)
    pool, cache = client.app[POOL], client.app[CACHE]
    await erase_subjects(pool, cache, [gone.subject], now=datetime.now(UTC), timeout=5)
    again = await erase_subjects(pool, cache, [gone.subject], now=datetime.now(UTC), timeout=5)
    assert (again.subjects, again.erased, sum(again.rows.values()), again.kept) == (0, 0, 0, ())


async def test_undrained_scans_of_an_erased_subject_never_reach_the_scan_log(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory
) -> None:
    """Scans still in the Redis stream when the subject is erased are deleted from it: a drain
    afterwards stores the other citizen's scans and none of theirs."""
    client = await aiohttp_client(create_app(replace(settings, drain_enabled=False)))
    drain = client.app[DRAIN]
    gone, kept = await two_citizens(client, make_token, drain=False)
    report = await erase_subjects(
        client.app[POOL], client.app[CACHE], [gone.subject], now=datetime.now(UTC), timeout=5
    )
    assert report.stream_entries >= 2
    await drain.ensure_groups()
    await drain.drain_all()
    assert (await rows_of(client, gone.subject))["scans"] == 0
    assert (await rows_of(client, kept.subject))["scans"] == 2


async def test_dead_letters_naming_the_subject_go_and_others_stay(
    client: Client, make_token: TokenFactory
) -> None:
    """A dead letter whose record names the erased subject is deleted; one naming another
    citizen is kept."""
    gone, kept = await two_citizens(client, make_token)
    pool = client.app[POOL]
    letters = [
        DeadLetter(
            "pc:{0}:scans",
            f"{n}-{uuid.uuid4().int % 1000}",
            (b"r", f"{uuid.uuid4()}|1|bad-time|{uuid.uuid4()}|{h.subject.hex()}|1|||".encode()),
            "unreadable",
        )
        for n, h in enumerate((gone, kept), start=1)
    ]
    await deadletters.add(pool, letters, timeout=5)
    await erase_subjects(pool, client.app[CACHE], [gone.subject], now=datetime.now(UTC), timeout=5)
    held = await pool.fetch("SELECT fields FROM scan_dead_letters")
    joined = b" ".join(f for row in held for f in row["fields"])
    assert gone.subject.hex().encode() not in joined
    assert kept.subject.hex().encode() in joined


async def test_an_open_red_ruling_keeps_only_what_it_needs_until_it_ends(
    client: Client, make_token: TokenFactory
) -> None:
    """A subject under an open red override keeps their subject row (keyed hash and sealed id,
    the masked name blanked), their status and that override; their declarations, scans, test
    results, cards and the closed (green) override go. The report names what stayed."""
    held, _ = await two_citizens(client, make_token, open_ruling=True)
    report = await erase_subjects(
        client.app[POOL], client.app[CACHE], [held.subject], now=datetime.now(UTC), timeout=5
    )
    assert report.erased == 0
    assert [(k.kind, k.color, k.reason, k.until) for k in report.kept] == [
        ("override", "red", "positive_test", None)
    ]
    rows = await rows_of(client, held.subject)
    assert rows == ALL_GONE | {"subjects": 1, "statuses": 1, "overrides": 1}
    subject = await client.app[POOL].fetchrow(
        "SELECT user_hash, name_masked FROM subjects WHERE id = $1", held.subject
    )
    assert subject is not None
    assert (bytes(subject["user_hash"]), subject["name_masked"]) == (held.user_hash, "*")
