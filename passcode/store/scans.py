"""The scan log in PostgreSQL: day partitions, COPY-speed idempotent inserts."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
from asyncpg.pgproto import pgproto

from passcode.domain.fields import EARLIEST, LATEST
from passcode.domain.model import Color, Decision, Kind, Reason
from passcode.domain.verdict import Verdict, judge_live
from passcode.store.pg import Connection, Pool, acquire

COLUMNS = (
    "scanned_at",
    "scan_id",
    "terminal_time",
    "terminal_id",
    "place",
    "subject_id",
    "decision",
    "reason",
    "color",
    "replay",
    "kind",
    "issuer",
    "cert_hash",
)


# A scan keeps its subject only while the subject exists: a deletion (DELETE /v1/me, the
# retention's purge) that ran while the drain held a batch of that subject's scans read from
# the stream but not yet stored would otherwise see them stored just after it. The scan itself
# is kept (it was acknowledged); it no longer leads to anyone.
_SUBJECT = (
    "CASE WHEN EXISTS (SELECT 1 FROM subjects su WHERE su.id = s.subject_id) THEN s.subject_id END"
)
_SELECTED = [
    "coalesce(s.place, t.place, '')"
    if c == "place"
    else _SUBJECT
    if c == "subject_id"
    else f"s.{c}"
    for c in COLUMNS
]


@dataclass(frozen=True, slots=True)
class ScanRow:
    scanned_at: datetime
    scan_id: uuid.UUID
    terminal_time: datetime | None
    terminal_id: uuid.UUID
    place: str | None  # None: taken from the terminal when stored
    subject_id: bytes | None
    decision: str
    reason: str
    color: str | None
    replay: bool = False  # the direct-to-Postgres path has no replay window: always False
    kind: str | None = Kind.PASSCODE.value  # None: a text of no known kind
    issuer: str | None = None  # a foreign certificate's country or issuer URL
    cert_hash: bytes | None = None  # a keyed hash of a foreign certificate's id


SEP = "|"
_SCAN_LOCK = 0x5C4D  # advisory lock namespace (first key) of scan-id buckets
SCAN_LOCK_BUCKETS = 64  # divides 256: see lock_bucket


def encode_record(
    *,
    scan_id: str,
    at_ms: int,
    terminal_time: datetime | None,
    terminal_id: str,
    subject: bytes | None,
    pass_version: int,
    verdict: Verdict | None,
    kind: Kind | None = Kind.PASSCODE,
    issuer: str = "",
    cert_hash: bytes = b"",
) -> str:
    """One scan as the stream carries it: ``|``-separated, no free text (the place is joined
    from ``terminals`` when stored). ``verdict`` is None when the verify script adds a snapshot
    of the live status instead, from which :func:`decode_entry` derives the decision.

    Our own pass (the hot path) has nine fields; any other kind adds three (kind, issuer, cert
    hash; an empty kind is a text of no known kind). An issuer is an ISO country code or an
    issuer URL, whose ``|`` and ``%`` are percent-encoded so the fields stay split.
    """
    # Fields joined by SEP, spelled out: one format instead of a tuple and a join per scan.
    tt = terminal_time.isoformat() if terminal_time else ""
    hexed = subject.hex() if subject else ""
    if kind is Kind.PASSCODE:
        extra = ""
    else:
        safe = issuer.replace("%", "%25").replace(SEP, "%7C")
        extra = f"|{kind.value if kind else ''}|{safe}|{cert_hash.hex()}"
    if verdict is None:
        return f"{scan_id}|{at_ms}|{tt}|{terminal_id}|{hexed}|{pass_version}|||{extra}"
    color = verdict.color.value if verdict.color else ""
    decision, reason = verdict.decision.value, verdict.reason.value
    return (
        f"{scan_id}|{at_ms}|{tt}|{terminal_id}|{hexed}|{pass_version}"
        f"|{decision}|{reason}|{color}{extra}"
    )


# A scan as the staging table's COPY record, in COLUMNS order: what the drain builds straight
# from a stream entry (no ScanRow in between: at 50k entries a second every object counts).
# Ids are UUID text, which asyncpg encodes in C: a tuple of strings, bytes, datetimes and None
# is one the garbage collector stops tracking (a UUID object is tracked, and so its tuple).
ScanRecord = tuple[
    datetime,
    str,
    datetime | None,
    str,
    str | None,
    bytes | None,
    str,
    str,
    str | None,
    bool,
    str | None,
    str | None,
    bytes | None,
]


_DECISIONS = frozenset(d.value for d in Decision)
_REASONS = frozenset(r.value for r in Reason)
_COLORS_OR_NONE = frozenset(c.value for c in Color) | {""}
_OTHER_KINDS = frozenset(k.value for k in Kind if k is not Kind.PASSCODE) | {""}
_PASSCODE = Kind.PASSCODE.value


@functools.lru_cache(maxsize=4096)
def _judged(pass_version: str, live: bytes, live_version: bytes) -> tuple[str, str, str | None]:
    """:func:`judge_live` on a status snapshot's raw fields, memoized: its few distinct inputs
    (colour, pass and status versions) repeat across thousands of entries."""
    verdict = judge_live(
        int(pass_version), Color(live.decode()) if live else None, int(live_version)
    )
    color = verdict.color.value if verdict.color else None
    return verdict.decision.value, verdict.reason.value, color


# The times the scan log stores, those the API accepts (one rule: passcode.domain.fields): a
# scan's server time (the stream's ``at_ms``, compared as ms since the epoch) and a terminal's
# clock. Beyond them lie partition bounds and UTC conversions that overflow.
SCAN_TIME_RANGE_MS = (int(EARLIEST.timestamp() * 1000), int(LATEST.timestamp() * 1000))


def _terminal_time(text: str) -> datetime:
    """A terminal's clock as recorded (with its offset); ValueError without an offset or out
    of the range (``9999-12-31T23:59:59-23:59``, which UTC cannot even hold)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("terminal time without a UTC offset")
    if moment.year not in _INNER_YEARS:  # an offset (under a day) cannot take those out
        try:
            inside = EARLIEST <= moment.astimezone(UTC) < LATEST
        except OverflowError:
            inside = False
        if not inside:
            raise ValueError(f"terminal time {text} is outside the range the scan log stores")
    return moment


_INNER_YEARS = range(EARLIEST.year + 1, LATEST.year - 1)


def decode_entry(fields: Sequence[bytes]) -> ScanRecord:
    """A stream entry's fields, as Redis sends them (name, value, ...), as a COPY record (place
    left for the insert to join); ValueError if the entry is unreadable. The replay flag is the
    verify script's ``rp`` field (absent: not a replay).

    Ids are checked by parsing them as asyncpg will when it sends them (its C ``UUID``);
    decision, reason and colour against their enums' values; times against the range the log
    stores (:data:`SCAN_TIME_RANGE_MS`), so the COPY meets no value it refuses.
    """
    try:
        n = len(fields)
        if n == 2 and fields[0] == b"r":  # decided: as the append script writes it
            raw, live, live_version, replay = fields[1], None, b"", False
        elif (
            (n == 6 or (n == 8 and fields[6] == b"rp"))
            and fields[0] == b"sc"
            and fields[2] == b"sv"
            and fields[4] == b"r"
        ):  # as the verify script writes it ('rp' only on a replay)
            raw, live, live_version = fields[5], fields[1], fields[3]
            replay = n == 8 and fields[7] == b"1"
        else:  # any other layout: by name
            named = dict(zip(fields[::2], fields[1::2], strict=True))
            raw, live, live_version = named[b"r"], named.get(b"sc"), named.get(b"sv", b"")
            replay = named.get(b"rp") == b"1"
        parts = raw.decode().split(SEP)
        kind: str | None = _PASSCODE
        issuer: str | None = None
        cert_hash: bytes | None = None
        if len(parts) == 12:
            kind, issuer_text, hash_hex = parts[9:]
            if kind not in _OTHER_KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            kind = kind or None
            issuer = issuer_text.replace("%7C", SEP).replace("%25", "%") or None
            cert_hash = bytes.fromhex(hash_hex) if hash_hex else None
            parts = parts[:9]
        scan_id, at_ms, tt, terminal_id, subject, pv, decision, reason, color = parts
        stored_color: str | None
        if live is not None:  # the verify script's status snapshot: derive the decision
            decision, reason, stored_color = _judged(pv, live, live_version)
        elif decision in _DECISIONS and reason in _REASONS and color in _COLORS_OR_NONE:
            stored_color = color or None
        else:
            raise ValueError(f"unknown decision, reason or colour {decision}/{reason}/{color}")
        pgproto.UUID(scan_id)  # ValueError unless UUIDs; kept as text
        pgproto.UUID(terminal_id)
        ms = int(at_ms)
        if not SCAN_TIME_RANGE_MS[0] <= ms < SCAN_TIME_RANGE_MS[1]:
            raise ValueError(f"scan time {ms} ms is outside the range the scan log stores")
        return (
            datetime.fromtimestamp(ms / 1000, UTC),
            scan_id,
            _terminal_time(tt) if tt else None,
            terminal_id,
            None,
            bytes.fromhex(subject) if subject else None,
            decision,
            reason,
            stored_color,
            replay,
            kind,
            issuer,
            cert_hash,
        )
    except (KeyError, ValueError, OverflowError, OSError) as exc:  # UnicodeDecodeError included
        raise ValueError(f"unreadable scan entry: {exc}") from exc


def partition_name(day: date) -> str:
    return f"scans_{day:%Y%m%d}"


async def ensure_partitions(conn: Connection, days: Iterable[date]) -> None:
    """Create missing day partitions; a concurrent creator winning the race is fine."""
    for day in sorted(set(days)):
        start = datetime.combine(day, time(), tzinfo=UTC)
        end = start + timedelta(days=1)
        try:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF scans"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
            continue


async def insert_scans(
    pool: Pool, rows: Sequence[ScanRow], *, timeout: float, dedupe_window: int
) -> int:
    """:func:`insert_records` for scans built as :class:`ScanRow` (verify's direct path)."""
    records: list[ScanRecord] = [
        (
            r.scanned_at,
            str(r.scan_id),
            r.terminal_time,
            str(r.terminal_id),
            r.place,
            r.subject_id,
            r.decision,
            r.reason,
            r.color,
            r.replay,
            r.kind,
            r.issuer,
            r.cert_hash,
        )
        for r in rows
    ]
    return await insert_records(pool, records, timeout=timeout, dedupe_window=dedupe_window)


# Kept per connection (asyncpg's pool does not discard temporary tables) and emptied by every
# commit: no catalog rows written and deleted per batch, and the COPY's column introspection
# stays in asyncpg's statement cache. Named for its shape; a new shape gets a new name.
_STAGE = "scan_stage_v4"
_PREPARE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    " scanned_at timestamptz NOT NULL, scan_id uuid NOT NULL, terminal_time timestamptz,"
    " terminal_id uuid NOT NULL, place text, subject_id bytea, decision text NOT NULL,"
    " reason text NOT NULL, color text, replay boolean NOT NULL,"
    " kind text, issuer text, cert_hash bytea) ON COMMIT DELETE ROWS;"
    # The anti-join below must probe the scan_id index row by row. The staging table has no
    # statistics, and while a day's partition is small the planner prefers hashing all of it,
    # once per batch: 9 µs a row instead of 5 while a partition grew to 200k rows, and more
    # the larger it grew before the planner switched.
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
)
_INSERT = (
    f"INSERT INTO scans ({', '.join(COLUMNS)})"  # noqa: S608  # constant names
    f" SELECT DISTINCT ON (s.scan_id) {', '.join(_SELECTED)}"
    f" FROM {_STAGE} s LEFT JOIN terminals t ON t.id = s.terminal_id"
    " WHERE NOT EXISTS (SELECT 1 FROM scans x"
    "  WHERE x.scan_id = s.scan_id"
    "  AND x.scanned_at >= s.scanned_at - make_interval(secs => $1)"
    "  AND x.scanned_at <= s.scanned_at + make_interval(secs => $1))"
    " ORDER BY s.scan_id, s.scanned_at"
    " ON CONFLICT (scanned_at, scan_id) DO NOTHING"
)


_HEX = "0123456789abcdefABCDEF"
_BUCKET_OF_TAIL = {a + b: int(a + b, 16) % SCAN_LOCK_BUCKETS for a in _HEX for b in _HEX}


def lock_bucket(scan_id: str) -> int:
    """The advisory-lock bucket that serializes concurrent inserters of one scan id (as text):
    ``UUID(scan_id).int % SCAN_LOCK_BUCKETS``, read from its last byte's two hex digits."""
    bucket = _BUCKET_OF_TAIL.get(scan_id[-2:])
    if bucket is None:  # not canonical text: a dash among the last two characters
        return int(scan_id.replace("-", "")[-2:], 16) % SCAN_LOCK_BUCKETS
    return bucket


async def insert_records(
    pool: Pool, records: Sequence[ScanRecord], *, timeout: float, dedupe_window: int
) -> int:
    """COPY into a staging table, then insert what is new: a scan id is stored once.

    A re-delivered stream entry conflicts on the key; a retry that reached Postgres another way
    (and so has another server time) is caught by the scan_id check within ``dedupe_window``
    seconds. Returns the number of rows newly stored. Commits before returning, so the caller
    may then acknowledge the source.
    """
    if not records:
        return 0
    async with acquire(pool, "store scans", timeout) as conn:
        await ensure_partitions(conn, (r[0].astimezone(UTC).date() for r in records))
        async with conn.transaction():
            await conn.execute(_PREPARE, timeout=timeout)
            await conn.copy_records_to_table(
                _STAGE, records=records, columns=COLUMNS, timeout=timeout
            )
            # The NOT EXISTS below cannot see a concurrent transaction's row: two attempts of
            # one scan id at once (a retry while the first is in flight, Redis down) would both
            # insert. Inserters of the same scan id serialize on its bucket's lock (in order:
            # no deadlock) until commit; a few dozen locks at most per transaction.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int, b) FROM unnest($2::int[]) AS b",
                _SCAN_LOCK,
                sorted({lock_bucket(r[1]) for r in records}),
                timeout=timeout,
            )
            status = await conn.execute(_INSERT, float(dedupe_window), timeout=timeout)
    return int(status.rsplit(" ", 1)[1])


# What one row's values make the COPY or the insert raise: asyncpg's encoders (a datetime UTC
# cannot hold, a malformed UUID, a wrong type) and PostgreSQL's data and constraint errors.
# Anything else (a lost connection is StoreUnavailable) says nothing about a row.
UNSTORABLE: tuple[type[Exception], ...] = (
    OverflowError,
    ValueError,
    TypeError,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


def unstorable_reason(exc: BaseException) -> str:
    """Why a record was not stored, for the dead-letter store: the error's class and message
    (records hold ids, times and enum values, never names or secrets), bounded."""
    return f"{type(exc).__name__}: {exc}"[:500]


async def insert_isolating(
    pool: Pool, records: Sequence[ScanRecord], *, timeout: float, dedupe_window: int
) -> dict[int, str]:
    """:func:`insert_records`, and when a row's values make it fail, the rest stored anyway.

    A failing set is split in halves and each tried alone, down to the single records that
    fail (about 2·log2(n) transactions per bad record); those are returned by index with the
    reason. Halves that went in stay committed: a retry stores them once (the insert is
    idempotent). :class:`StoreUnavailable` and errors not in :data:`UNSTORABLE` propagate.
    """
    unstorable: dict[int, str] = {}
    todo: list[range] = [range(len(records))]
    while todo:
        part = todo.pop()
        try:
            await insert_records(
                pool, [records[i] for i in part], timeout=timeout, dedupe_window=dedupe_window
            )
        except UNSTORABLE as exc:
            if len(part) == 1:
                unstorable[part[0]] = unstorable_reason(exc)
            else:
                middle = len(part) // 2
                todo += [part[middle:], part[:middle]]
    return unstorable


async def count_scans(pool: Pool, *, timeout: float) -> int:
    async with acquire(pool, "count scans", timeout) as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM scans")
        return found


REPLAY_TOP_PLACES = 50


async def count_replays(
    pool: Pool, *, since: datetime, until: datetime, timeout: float
) -> tuple[int, list[tuple[str, int]]]:
    """Scans flagged as replays in ``[since, until)``: the total, and per place (the most first,
    at most :data:`REPLAY_TOP_PLACES`)."""
    async with acquire(pool, "count replays", timeout) as conn:
        total: int = await conn.fetchval(
            "SELECT count(*) FROM scans WHERE replay AND scanned_at >= $1 AND scanned_at < $2",
            since,
            until,
            timeout=timeout,
        )
        rows = await conn.fetch(
            "SELECT place, count(*) AS n FROM scans"
            " WHERE replay AND scanned_at >= $1 AND scanned_at < $2"
            " GROUP BY place ORDER BY n DESC, place LIMIT $3",
            since,
            until,
            REPLAY_TOP_PLACES,
            timeout=timeout,
        )
    return total, [(row["place"], row["n"]) for row in rows]
