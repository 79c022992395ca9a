"""Terminal API (DESIGN §3): verify one scan or a batch uploaded after being offline."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import Any

from aiohttp import web

from passcode.api.auth import terminal_of
from passcode.api.body import check, read_json
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import VERIFY_BATCH_REQUEST, VERIFY_REQUEST, compile_schema
from passcode.domain import fields
from passcode.domain.clock import Clock, utc_now
from passcode.errors import StatusUnavailable
from passcode.keys import SETTINGS, TERMINAL_LIMITS, VERIFIER
from passcode.metrics import count_decision
from passcode.service.verify import ScanRequest, VerifyOutcome

_validate_schema = compile_schema(VERIFY_REQUEST)
_CODE_MAX = VERIFY_REQUEST["properties"]["code"]["maxLength"]


def _validate_one(data: Any) -> Any:
    """The verify body's schema check. The body nearly every scan sends, ``{"code": <text of
    1 to 4296 characters>}``, is accepted by a shortcut at a fifth of the schema's cost (half a
    microsecond on each verify); anything else goes to the schema, which names what is wrong."""
    if type(data) is dict and len(data) == 1:
        code = data.get("code")
        if type(code) is str and 0 < len(code) <= _CODE_MAX:
            return data
    return _validate_schema(data)


_validate_batch = compile_schema(VERIFY_BATCH_REQUEST)


def _scan(
    data: dict[str, Any], clock: Clock, retention_days: int, at: int | None = None
) -> ScanRequest:
    """The scan a body (or item ``at`` of a batch) asks for. A ``scanned_at`` must be a time
    within the window around ``clock`` that offline terminals need (the scan retention back,
    :data:`passcode.domain.fields.TERMINAL_AHEAD` ahead), else a 400 naming the field
    (``scans[<at>].scanned_at`` in a batch); the usual body has none, and costs nothing here."""
    scan_id = data.get("scan_id")
    scanned_at = data.get("scanned_at")
    terminal_time = None
    if scanned_at is not None:
        rule = functools.partial(
            fields.terminal_time,
            now=utc_now(clock),
            back=timedelta(days=retention_days),
        )
        field = "scanned_at" if at is None else f"scans[{at}].scanned_at"
        terminal_time = check(rule, scanned_at, field)
    return ScanRequest(
        data["code"], uuid.UUID(scan_id) if scan_id is not None else None, terminal_time
    )


def outcome_body(outcome: VerifyOutcome) -> dict[str, Any]:
    """The answer's body, counted by decision and reason (:mod:`passcode.metrics`); the enums
    are ``str`` members, which orjson writes as their values."""
    verdict = outcome.verdict
    count_decision(verdict.decision, verdict.reason)
    holder = outcome.holder
    return {
        "decision": verdict.decision,
        "color": verdict.color,
        "reason": verdict.reason,
        "holder": None if holder is None else {"name": holder},
        "scan_id": outcome.scan_id,
        "server_time": rfc3339(outcome.server_time),
        "kind": outcome.kind,
    }


async def verify(request: web.Request) -> web.Response:
    """The rate limit's GCRA call is submitted right before the verify, in the same event-loop
    turn, so both ride in one Redis write (see :meth:`Limiter.speculate`)."""
    terminal = await terminal_of(request)
    app = request.app
    settings, verifier = app[SETTINGS], app[VERIFIER]
    data = await read_json(request, limit=settings.max_verify_body, validate=_validate_one)
    scan = _scan(data, verifier.clock, settings.scan_retention_days)
    limits = app[TERMINAL_LIMITS]
    key = limits.key(terminal.id.bytes, terminal.id_text)
    if not limits.speculate(key):
        await limits.check(key)
    outcome = await verifier.verify(terminal, scan)
    return json_response(outcome_body(outcome))


async def verify_batch(request: web.Request) -> web.Response:
    """Every item is checked before any is verified (a bad ``scanned_at`` refuses the batch,
    naming the item), and the batch is charged its number of scans at once; then the scans are
    verified together (one Redis round trip). One that must not be admitted makes the answer
    the 503 ``unverified`` of a single verify; the others were recorded, and a retry with the
    same scan ids records none twice."""
    terminal = await terminal_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_batch_body, validate=_validate_batch)
    verifier = request.app[VERIFIER]
    scans = [
        _scan(item, verifier.clock, settings.scan_retention_days, at)
        for at, item in enumerate(data["scans"])
    ]
    limits = request.app[TERMINAL_LIMITS]
    await limits.check(limits.key(terminal.id.bytes, terminal.id_text), len(scans))
    outcomes = await verifier.verify_many(terminal, scans)
    results = []
    for outcome in outcomes:
        if isinstance(outcome, StatusUnavailable):
            raise outcome  # DESIGN §3: a batch's results are decisions; unverified is a 503
        results.append(outcome_body(outcome))
    return json_response({"results": results})
