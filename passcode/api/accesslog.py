"""The access log: one line per request, naming the route, never the raw URL.

aiohttp's default ``%r`` logs the request line with its query string, and a client that puts a
pass, an ID token or a key in the URL (``?code=PC1:…``, ``?access_token=…``) would have it written
to the log. This logger writes the matched route's template instead (``/v1/admin/terminals/
{terminal_id}/revoke``), or ``(unrouted)`` when no route matched, so a path segment cannot carry
one either.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from passcode.api.problems import UNMATCHED
from passcode.api.requestid import HEADER, request_id
from passcode.domain.redact import REDACTION_SAFE


def route_of(request: web.BaseRequest) -> str:
    """The template of the route that matched, or ``(unrouted)``.

    Any request object will do: a bare ``BaseRequest`` has no ``match_info``, and a
    ``web.Request`` the HTTP parser rejected (never routed) asserts on reading it.
    """
    try:
        match_info = request.match_info  # type: ignore[attr-defined]  # absent on BaseRequest
    except (AttributeError, AssertionError):
        return "(unrouted)"
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if (
        resource is None
        or getattr(match_info, "http_exception", None) is not None
        or resource.name == UNMATCHED
    ):
        return "(unrouted)"
    canonical: str = resource.canonical
    return canonical


# Methods logged as sent; any other token (a client may send ``pt_<key> / HTTP/1.1``) is not.
_METHODS = frozenset(hdrs.METH_ALL | {"UNKNOWN"})  # UNKNOWN: aiohttp's name for a parse error


class AccessLogger(AbstractAccessLogger):
    """``<peer> "<method> <route template> HTTP/x.y" <status> <bytes> <seconds>s``, and the same
    as the record's extras, with the request id, for the JSON format (:mod:`passcode.logformat`).

    Every field is the server's (address, route template, numbers, the id it made or found
    sane) or from a fixed set (the method; ``(other)`` otherwise), so the records are marked
    :data:`~passcode.domain.redact.REDACTION_SAFE` and skip the redacting filter, a third of
    the cost of an access line.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        method = request.method if request.method in _METHODS else "(other)"
        route = route_of(request)
        peer = request.remote or "-"
        status = response.status
        size = response.body_length
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs',
            peer,
            method,
            route,
            version.major,
            version.minor,
            status,
            size,
            time,
            extra={
                REDACTION_SAFE: True,
                "request_id": response.headers.get(HEADER) or request_id(request),
                "method": method,
                "route": route,
                "status": status,
                "bytes": size,
                "duration": round(time, 6),
                "peer": peer,
            },
        )
