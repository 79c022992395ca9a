"""The HTTP connection layer under the app: what aiohttp answers before any route runs.

Three things aiohttp does at this layer that the service cannot accept, and no supported
setting changes (aiohttp 3.14 has no hook for the responses its parser makes):

- **Parser errors echo the input.** A request aiohttp's parser rejects (a control byte in a
  header line, a header over 8 KB, a bad method, version or chunk) is answered by
  ``RequestHandler.handle_error``: a ``text/plain`` 400 quoting the offending line, which may be
  a terminal key or an ID token, after logging it at ERROR with a traceback. Here it is a
  problem+json body (RFC 9457) that quotes nothing, and one log line naming the error's class.
- **``Server: Python/3.x aiohttp/3.y``** on every response names versions. Here it is
  ``Server: passcode``, parser errors and the router's own 404s included.
- **No deadline for a request's headers.** A client trickling a header line every few seconds
  holds its connection until the keep-alive timeout. Here the headers of each request must be
  complete within ``PASSCODE_HEADER_TIMEOUT`` seconds of its first byte, else a 408 and the
  connection closes. (Bodies have their own deadline: ``PASSCODE_BODY_TIMEOUT``.)

Also, anything the router itself raises (``CONNECT host:443``, ``OPTIONS *``: targets no route
can match) is turned into a problem here, as the routes' own wrapper does for theirs.

The override is the narrowest aiohttp allows: a subclass of its ``RequestHandler`` (the
connection protocol) overriding ``handle_error``, ``finish_response`` and ``data_received``, made
by a subclass of ``web.Server``, made by :class:`Runner`, the ``web.AppRunner`` that
``passcode serve`` uses, which also sets the ``Server`` text aiohttp's responses take
(``aiohttp.web_response.SERVER_SOFTWARE``). ``tests/api/test_parser_errors.py`` pins this against the real process,
so an aiohttp upgrade that moves these internals fails there, not in production.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import hdrs, http_exceptions, web, web_response
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from passcode.api.problems import PROBLEM_JSON, from_http_exception, problem_response
from passcode.errors import BadRequest, PasscodeError, RequestTimeout
from passcode.keys import SETTINGS

log = logging.getLogger(__name__)

SERVER = "passcode"

# What each kind of parser error is called in a problem's detail: fixed text, never the input.
_DETAILS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.BadHttpMethod, "the request method is not valid HTTP"),
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP"),
    (http_exceptions.LineTooLong, "the request line or a header is too long"),
    (http_exceptions.InvalidHeader, "a header is not valid HTTP"),
    (http_exceptions.InvalidURLError, "the request target is not valid"),
    (http_exceptions.PayloadEncodingError, "the body's framing or encoding is not valid"),
    (http_exceptions.HttpProcessingError, "the request is not valid HTTP"),
)


class HeaderTimeout(Exception):
    """A request's headers did not all arrive within the deadline."""


def _problem(status: int, exc: BaseException | None, header_timeout: float) -> PasscodeError:
    if status == 408:
        return RequestTimeout(f"the request headers did not arrive within {header_timeout:g} s")
    if status == 400:
        detail = next(
            (text for kind, text in _DETAILS if isinstance(exc, kind)),
            "the request is not valid HTTP",
        )
        return BadRequest(detail)
    error = PasscodeError("internal error; it has been logged")
    error.status = status
    return error


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection protocol with the three changes of the module docstring."""

    def __init__(self, manager: _ProblemServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager  # aiohttp's own reference (_manager) is dropped when it closes
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # of the request whose body is still arriving
        self._head_expired = False

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A problem (closing the connection) instead of text quoting ``message``/``exc``."""
        kind = type(exc).__name__ if exc is not None else "-"
        if status >= 500:
            log.error("error handling a request from %s (%d)", request.remote, status, exc_info=exc)
        elif isinstance(exc, http_exceptions.BadHttpMethod) and self._request_count == 1:
            # Usually not HTTP at all (TLS or a scanner on the port): aiohttp logs it at DEBUG.
            log.debug("not an HTTP request from %s: %s", request.remote, kind)
        else:
            log.info("refused a malformed request from %s: %d %s", request.remote, status, kind)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way; cannot send another")
        response = problem_response(_problem(status, exc, self.header_timeout))
        response.force_close()
        return response

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Any:
        """A problem for an HTTP error the router raised (the routes' own answers are problems
        already), and ``Connection: close`` on every answer once the server is stopping. Not a
        coroutine of its own: it hands on the base's, so the hot path pays no extra frame."""
        if (
            resp.__class__ is not web.Response
            and isinstance(resp, web.HTTPException)
            and resp.status >= 400
            and resp.content_type != PROBLEM_JSON
        ):
            resp = problem_response(from_http_exception(resp))
        if self._server.stopping and not resp.prepared:
            # Headers are written after this: the header for the client, force_close for the
            # protocol (it closes the connection once this answer is out).
            resp.force_close()
            resp.headers[hdrs.CONNECTION] = "close"
        return RequestHandler.finish_response(self, request, resp, start_time)

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, timing each request's headers from the first data that
        leaves them incomplete (a request whose headers come in one read costs no timer)."""
        if self._head_expired:
            return
        before = self._request_count
        body = self._body
        RequestHandler.data_received(self, data)
        if self._request_count == before:  # headers incomplete, or more of a body
            if body is None and self._head_timer is None and data:
                self._head_timer = self._loop.call_later(self.header_timeout, self._head_timed_out)
            return
        message, payload = self._messages[-1]
        if body is not None and not body.is_eof() and isinstance(message, _ErrInfo):
            self._fail_body(body)
            return
        if self._head_timer is not None:  # a request's headers were queued: deadline met
            self._cancel_head_timer()
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            self._body = payload
            payload.on_eof(self._body_done)

    def _fail_body(self, body: StreamReader) -> None:
        """The parser failed inside a body (bad chunk framing): aiohttp queues the error as a
        request of its own and leaves the body unfinished, so the handler reading it would wait
        for its deadline. Instead the body fails (the handler answers 400; one that answered
        already is not troubled) and the connection closes after that answer."""
        self._messages.pop()
        self._request_count -= 1
        self._body = None
        if self._request_in_progress:
            body.set_exception(web.RequestPayloadError("the body's chunked framing is not valid"))
        body.feed_eof()  # so aiohttp does not linger reading it after the answer
        self.close()

    def _body_done(self) -> None:
        self._body = None

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """Queue a 408 as aiohttp queues a parse error; nothing more is read on this connection."""
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        self._head_expired = True
        error = HeaderTimeout(f"headers incomplete after {self.header_timeout:g} s")
        self._messages.append((_ErrInfo(status=408, exc=error, message=""), EMPTY_PAYLOAD))
        self._request_count += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


class _ProblemServer(web.Server):
    """``web.Server`` whose connections use :class:`ProblemRequestHandler`; once ``stopping``
    (``passcode.serving`` on SIGTERM), every answer closes its connection."""

    stopping = False

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`ProblemRequestHandler`; the header deadline
    comes from the app's settings (``header_timeout``). Bodies are never inflated: every body
    endpoint refuses a ``Content-Encoding`` with 415 before reading (``api/body.py``), and
    without this aiohttp's parser would inflate a compressed body as it arrives regardless."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("header_timeout", app[SETTINGS].header_timeout)
        kwargs.setdefault("auto_decompress", False)
        super().__init__(app, **kwargs)
        # The Server header aiohttp gives every response it prepares (ours, the router's, the
        # parser errors'): a module global read by StreamResponse._prepare_headers, set here
        # rather than per response (a header set per answer cost verify ~1%).
        web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]  # a re-export

    def close_after_each_answer(self) -> None:
        """From now on every answer says ``Connection: close`` and closes its connection."""
        if isinstance(self.server, _ProblemServer):
            self.server.stopping = True

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's start-up, and aiohttp's own Server
        return _ProblemServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,  # the handler options aiohttp assembled (debug, access log, …)
        )
