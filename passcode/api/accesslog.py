"""The access log: one line per request, naming the route, never the raw URL.

aiohttp's default ``%r`` logs the request line with its query string, and a client that puts a
pass, an ID token or a key in the URL (``?code=PC1:…``, ``?access_token=…``) would have it written
to the log. This logger writes the matched route's template instead (``/v1/admin/terminals/
{terminal_id}/revoke``), or ``(unrouted)`` when no route matched, so a path segment cannot carry
one either.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from passcode.api.problems import UNMATCHED


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


class AccessLogger(AbstractAccessLogger):
    """``<peer> "<method> <route template> HTTP/x.y" <status> <bytes> <seconds>s``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs',
            request.remote or "-",
            request.method,
            route_of(request),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
        )
