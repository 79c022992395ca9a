"""Bulk test results: a health officer uploads a CSV; good rows apply, bad rows are reported."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from passcode.api.auth import authorize
from passcode.api.body import body_deadline, check_body_headers, read_limited
from passcode.api.responses import json_response
from passcode.domain.model import Role
from passcode.domain.testresults import TooManyRows, UploadRejected, parse_upload
from passcode.errors import PayloadTooLarge, ValidationFailed
from passcode.keys import CACHE, POOL, SEALER, SETTINGS
from passcode.service.testresults import Tally, apply_results
from passcode.store.testresults import ACTION

MAX_ERRORS_SHOWN = 1000


async def post_test_results(request: web.Request) -> web.Response:
    """``text/csv`` with ``user_id,result,tested_at`` rows: 200 with counts and each bad row's
    line and error; good rows are applied even when others are bad."""
    actor = await authorize(request, Role.HEALTH_OFFICER, action=ACTION)
    settings = request.app[SETTINGS]
    raw = await read_csv(request, limit=settings.max_csv_body)
    now = datetime.fromtimestamp(settings.clock.now(), UTC)
    try:
        # Checking 100,000 rows takes a while: off the event loop, so verify keeps answering.
        parsed = await asyncio.to_thread(
            parse_upload,
            raw,
            now=now,
            skew=timedelta(seconds=settings.clock_skew),
            max_rows=settings.max_csv_rows,
        )
    except TooManyRows as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except UploadRejected as exc:
        raise ValidationFailed(str(exc), errors=["body"]) from exc
    tally = Tally()
    # Each chunk writes its own audit entry in its own transaction (see apply_results), so
    # whatever commits is audited even if the upload is cut short by a failure or shutdown.
    await apply_results(
        parsed.good,
        pool=request.app[POOL],
        cache=request.app[CACHE],
        sealer=request.app[SEALER],
        idp_issuer=settings.idp_issuer,
        actor=actor.name,
        upload_id=str(uuid.uuid4()),
        summary={"rows": parsed.rows, "good": len(parsed.good), "rejected": len(parsed.errors)},
        clock=settings.clock,
        policy=settings.policy(),
        timeout=settings.pg_timeout,
        tally=tally,
    )
    return json_response(
        {
            "rows": parsed.rows,
            "applied": tally.applied,
            "duplicates": len(parsed.good) - tally.applied,
            "rejected": len(parsed.errors),
            "positives": tally.positives,
            "errors": [
                {"line": e.line, "error": e.error} for e in parsed.errors[:MAX_ERRORS_SHOWN]
            ],
            "errors_truncated": len(parsed.errors) > MAX_ERRORS_SHOWN,
        }
    )


async def read_csv(request: web.Request, *, limit: int) -> bytes:
    """The ``text/csv`` body (UTF-8, the default), never more than ``limit`` bytes read, all of
    it within PASSCODE_BODY_TIMEOUT (else 408).

    Read from the stream, not with ``request.read()``: the application's ``client_max_size``
    is sized for JSON batches, far below an upload.
    """
    check_body_headers(
        request,
        media_type="text/csv",
        spelled="text/csv; charset=utf-8",
        kind="CSV uploads",
        limit=limit,
    )
    async with body_deadline(request):  # the whole body, not each read: a trickle times out too
        return await read_limited(request, limit)
