"""Bulk test results: a health officer uploads a CSV; good rows apply, bad rows are reported."""

from __future__ import annotations

import uuid
from datetime import timedelta

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import body_deadline, check_body_headers, read_limited
from passcode.api.responses import json_response
from passcode.keys import CACHE, POOL, SEALER, SETTINGS
from passcode.service.testresults import upload_results

MAX_ERRORS_SHOWN = 1000


async def post_test_results(request: web.Request) -> web.Response:
    """``text/csv`` with ``user_id,result,tested_at`` rows: 200 with counts and each bad row's
    line and error; good rows are applied even when others are bad."""
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    raw = await read_csv(request, limit=settings.max_csv_body)
    report = await upload_results(
        raw,
        pool=request.app[POOL],
        cache=request.app[CACHE],
        sealer=request.app[SEALER],
        idp_issuer=settings.idp_issuer,
        actor=actor.name,
        upload_id=str(uuid.uuid4()),
        clock=settings.clock,
        skew=timedelta(seconds=settings.clock_skew),
        max_rows=settings.max_csv_rows,
        policy=settings.policy(),
        timeout=settings.pg_timeout,
    )
    return json_response(
        {
            "rows": report.rows,
            "applied": report.applied,
            "duplicates": report.good - report.applied,
            "rejected": len(report.errors),
            "positives": report.positives,
            "errors": [
                {"line": e.line, "error": e.error} for e in report.errors[:MAX_ERRORS_SHOWN]
            ],
            "errors_truncated": len(report.errors) > MAX_ERRORS_SHOWN,
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
