"""Every failure becomes an RFC 9457 problem body, never a bare 500; shedding runs first.

Each route's handler is wrapped once, when the route is added (:func:`add_route`, for each
entry of :mod:`passcode.api.routes`), in :func:`problems`, its shedding class bound then;
requests that match no route are answered by :func:`unmatched` (404, or 405 with ``Allow``), a
catch-all route added last. Together they do what an error middleware would.

Not an aiohttp middleware because of what one costs on every request: aiohttp adds a second
layer of its own whenever an app has any middleware (``_fix_request_current_app``), builds the
chain through a cache, and the middleware had to look the route's shedding class up by path.
Measured with ``wrk`` against the bare hello app of ``make bench`` (25 µs of server CPU per
request): a middleware doing this work cost 4.7 µs a request, this wrapper 1.2 µs. The verify
path is measured against that ceiling (issue 3).
"""

from __future__ import annotations

import json
import logging
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler

from passcode import metrics
from passcode.api.requestid import HEADER, given_id, request_id
from passcode.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PasscodeError,
    PayloadTooLarge,
)
from passcode.keys import SETTINGS, SHEDDER
from passcode.service.shedding import LoadShedder

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
UNMATCHED = "unmatched"  # the catch-all route's name: not an operation, logged as unrouted


def problem_response(error: PasscodeError) -> web.Response:
    return web.Response(
        status=error.status,
        text=json.dumps(error.body(), ensure_ascii=False),
        content_type=PROBLEM_JSON,
        headers=error.headers,
    )


def from_http_exception(exc: web.HTTPException) -> PasscodeError:
    """The problem for an aiohttp HTTP error (404, 405 with ``Allow``, 413, any other)."""
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


def problems(
    handler: Handler,
    *,
    shedder: LoadShedder,
    kind: int | None,
    method: str = "*",
    route: str = "(unrouted)",
    make_ids: bool = True,
) -> Handler:
    """``handler`` answering every failure as a problem; shed first when ``kind`` is a class
    of :mod:`passcode.service.shedding` (the requests it counts are those of such routes).
    Every answer carries its request id (a made one only when ``make_ids``: the access log is
    on) and is counted by status under ``method route``; the answers of a shedding class are
    timed too (the metrics' series are bound here, once)."""
    by_status: dict[int, metrics.Tally] = {}
    identify = request_id if make_ids else given_id
    timer = None if kind is None else metrics.REQUEST_SECONDS.labels(route)

    async def answer(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        try:
            if kind is None:
                response = await handler(request)
            else:
                shedder.admit(kind)
                shedder.in_flight += 1
                try:
                    response = await handler(request)
                finally:
                    shedder.in_flight -= 1
        except PasscodeError as error:
            response = problem_response(error)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = problem_response(from_http_exception(exc))
        except web.RequestPayloadError:
            # aiohttp's parser failed inside the body (framing, decompression): the client's.
            response = problem_response(BadRequest("the body's framing or encoding is not valid"))
        except ConnectionResetError:
            response = _reset(request)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = problem_response(PasscodeError("internal error; it has been logged"))
        rid = identify(request)
        if rid is not None:
            response.headers[HEADER] = rid
        status = response.status
        counter = by_status.get(status)
        if counter is None:
            counter = by_status[status] = metrics.REQUESTS.labels(method, route, str(status))
        counter.inc()
        if timer is not None:
            timer.observe(perf_counter() - started)
        return response

    answer.__name__ = answer.__qualname__ = getattr(handler, "__name__", "handler")
    answer.__doc__ = handler.__doc__
    return answer


def _reset(request: web.Request) -> web.Response:
    """The answer when the connection reset under a handler."""
    if request.transport is not None:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(PasscodeError("internal error; it has been logged"))
    # The client went away mid-body (aiohttp fails the body so): nothing went wrong here.
    resource = request.match_info.route.resource
    log.info("client left during %s %s", request.method, getattr(resource, "canonical", ""))
    return problem_response(BadRequest("the connection closed before the body arrived"))


def _access_logged(app: web.Application) -> bool:
    """Whether the app's access log is on (an app without settings, as in tests: yes)."""
    settings = app.get(SETTINGS)
    return settings is None or settings.access_log


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, *, shed: int | None = None
) -> None:
    """Route ``method path`` to ``handler`` inside :func:`problems`, shed in class ``shed``
    (GET routes answer HEAD too, as aiohttp's ``add_get`` does)."""
    wrapped = problems(
        handler,
        shedder=app[SHEDDER],
        kind=shed,
        method=method,
        route=path,
        make_ids=_access_logged(app),
    )
    if method == "GET":
        app.router.add_get(path, wrapped)
    else:
        app.router.add_route(method, path, wrapped)


def add_unmatched(app: web.Application) -> None:
    """The catch-all route, added after every other: a request no route takes gets a problem."""
    handler = problems(unmatched, shedder=app[SHEDDER], kind=None, make_ids=_access_logged(app))
    app.router.add_route("*", "/{path:.*}", handler, name=UNMATCHED)


async def unmatched(request: web.Request) -> web.StreamResponse:
    """404, or 405 naming the methods of the routes whose path matches (as aiohttp would)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNMATCHED:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
