"""Terminal API (DESIGN §3): verify one scan or a batch uploaded after being offline."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from passcode.api.auth import terminal_of
from passcode.api.body import parse_datetime, read_json
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import VERIFY_BATCH_REQUEST, VERIFY_REQUEST, compile_schema
from passcode.errors import RateLimited
from passcode.keys import SETTINGS, TERMINAL_LIMITS, VERIFIER
from passcode.service.verify import ScanRequest, VerifyOutcome
from passcode.store.terminals import Terminal

_validate_one = compile_schema(VERIFY_REQUEST)
_validate_batch = compile_schema(VERIFY_BATCH_REQUEST)


def _scan(data: dict[str, Any]) -> ScanRequest:
    scan_id = data.get("scan_id")
    scanned_at = data.get("scanned_at")
    return ScanRequest(
        code=data["code"],
        scan_id=uuid.UUID(scan_id) if scan_id is not None else None,
        scanned_at=parse_datetime(scanned_at, "scanned_at") if scanned_at is not None else None,
    )


def outcome_body(outcome: VerifyOutcome) -> dict[str, Any]:
    verdict = outcome.verdict
    return {
        "decision": verdict.decision.value,
        "color": verdict.color.value if verdict.color else None,
        "reason": verdict.reason.value,
        "holder": {"name": outcome.holder} if outcome.holder is not None else None,
        "scan_id": str(outcome.scan_id),
        "server_time": rfc3339(outcome.server_time),
    }


def _limit(request: web.Request, terminal: Terminal, cost: int) -> None:
    limits = request.app[TERMINAL_LIMITS]
    wait = limits.take(str(terminal.id), time.monotonic(), cost)
    if wait:
        raise RateLimited(
            "this terminal is sending faster than its rate limit",
            retry_after=limits.retry_after(wait),
        )


async def verify(request: web.Request) -> web.Response:
    terminal = await terminal_of(request)
    _limit(request, terminal, 1)
    data = await read_json(request, limit=request.app[SETTINGS].max_body, validate=_validate_one)
    outcome = await request.app[VERIFIER].verify(terminal, _scan(data))
    return json_response(outcome_body(outcome))


async def verify_batch(request: web.Request) -> web.Response:
    terminal = await terminal_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_batch_body, validate=_validate_batch)
    scans = [_scan(item) for item in data["scans"]]
    _limit(request, terminal, len(scans))
    verifier = request.app[VERIFIER]
    results = [outcome_body(await verifier.verify(terminal, scan)) for scan in scans]
    return json_response({"results": results})
