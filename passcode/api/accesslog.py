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
# Marks this logger's records as holding nothing to redact (passcode.domain.redact).
_CLEAN = {REDACTION_SAFE: True}


class AccessLogger(AbstractAccessLogger):
    """``<peer> "<method> <route template> HTTP/x.y" <status> <bytes> <seconds>s``.

    Every field is the server's (address, route template, numbers) or from a fixed set (the
    method; ``(other)`` otherwise), so the records skip the redacting filter, a third of the
    cost of an access line.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        method = request.method
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs',
            request.remote or "-",
            method if method in _METHODS else "(other)",
            route_of(request),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
            extra=_CLEAN,
        )
