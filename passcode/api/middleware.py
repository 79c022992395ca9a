"""The one middleware: load shedding (see :mod:`passcode.api.shedding`), then every failure
becomes an RFC 9457 problem body, never a bare 500.

One middleware rather than two: each layer is a coroutine frame on every request, and the
verify path is measured against a bare aiohttp app.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from passcode.api.shedding import CLASSES, SHEDDER
from passcode.errors import (
    MethodNotAllowed,
    NotFound,
    PasscodeError,
    PayloadTooLarge,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(error: PasscodeError) -> web.Response:
    return web.Response(
        status=error.status,
        text=json.dumps(error.body(), ensure_ascii=False),
        content_type=PROBLEM_JSON,
        headers=error.headers,
    )


def _from_http(exc: web.HTTPException) -> PasscodeError:
    if exc.status == 404:
        return NotFound("no such resource")
    if exc.status == 405:
        error: PasscodeError = MethodNotAllowed(
            f"method not allowed; use {exc.headers.get('Allow', '')}"
        )
        error.headers["Allow"] = exc.headers.get("Allow", "")
        return error
    if exc.status == 413:
        return PayloadTooLarge("request body too large")
    generic = PasscodeError(exc.reason)
    generic.status = exc.status
    return generic


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = CLASSES.get((request.method, request.path))
    try:
        if kind is None:
            return await handler(request)
        shedder = request.app[SHEDDER]
        shedder.admit(kind)
        shedder.in_flight += 1
        try:
            return await handler(request)
        finally:
            shedder.in_flight -= 1
    except PasscodeError as error:
        return problem_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(PasscodeError("internal error; it has been logged"))
