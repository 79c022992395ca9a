"""Redaction of log text, the filter that applies it to every record, and the access logger's
route for requests that were never routed."""

from __future__ import annotations

import io
import logging
import secrets
import time

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.api.accesslog import AccessLogger, route_of
from passcode.domain.identity import mint_dev_token
from passcode.domain.redact import RedactingFilter, redact

TERMINAL_KEY = "pt_" + secrets.token_urlsafe(32)
ADMIN_KEY = "pa_" + secrets.token_urlsafe(32)
ID_TOKEN = mint_dev_token(
    Ed25519PrivateKey.generate(),
    kid="dev",
    issuer="i",
    audience="a",
    user_id="raw-user-redact",
    name="Redacta Person",
    now=int(time.time()),
    ttl=60,
)
UNUSUAL_JWT = jwt.encode({"sub": "x" * 20}, "k" * 32, "HS256", headers={"kid": "a b"})
PASS = "PC1:6BFOXN*TS0BI$ZD-PHM%VUBAOW+KBA7G NCFE5 0TS1E/Q$"
SECRETS = {
    "terminal key": TERMINAL_KEY,
    "admin key": ADMIN_KEY,
    "ID token": ID_TOKEN,
    "HS256 JWT": UNUSUAL_JWT,
    "pass": PASS,
    "EU certificate": "HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH",
    "SMART Health Card": "shc:/5676290952432060346029243740446031222959532654603460292540772804",
}


@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "b'Authorization: Bearer {}\\x01'",
        "Got more than 8190 bytes when reading: b'Bearer {}",
        '{{"code": "{}"}}',
        "authorization={}",
        "key={}&x=1",
        "Authorization: Basic {}",
    ],
)
@pytest.mark.parametrize("what", SECRETS)
def test_every_kind_of_secret_is_redacted_wherever_it_stands(template: str, what: str) -> None:
    """Keys, tokens and pass texts, bare, quoted in a header line, in JSON or a query string,
    leave no piece of 12 characters behind, and a marker naming what was there."""
    secret = SECRETS[what]
    out = redact(template.format(secret))
    assert "redacted>" in out
    for start in range(0, len(secret) - 12, 6):
        assert secret[start : start + 12] not in out, (what, out)


def test_a_key_cut_short_is_still_redacted() -> None:
    """aiohttp quotes the first ~100 bytes of an over-long header: a cut key or token counts."""
    for secret in (TERMINAL_KEY, ADMIN_KEY, ID_TOKEN):
        out = redact("Got more than 8190 bytes: b'X-Pad: " + secret[:30])
        assert secret[3:30] not in out, out


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1 "POST /v1/verify HTTP/1.1" 200 187 0.000412s',
        '10.0.0.12 "GET /v1/admin/terminals/{terminal_id}/revoke HTTP/1.1" 204 0 0.001s',
        "connecting to postgres postgresql://postgres:***@127.0.0.1:5432/passcode",
        "File /work/.venv/lib/python3.11/site-packages/aiohttp/web_protocol.py, line 548",
        "passcode.workers.drain stored 5000 scans from scans:{3} at 2026-12-02T06:30:11+00:00",
        "Settings(database_url='postgresql://x', pass_ttl=60, clock_skew=30)",
    ],
)
def test_ordinary_log_lines_are_left_alone(line: str) -> None:
    """Access lines, addresses, paths, module names and times are not mistaken for secrets."""
    assert redact(line) == line


def test_the_filter_redacts_messages_args_and_tracebacks_of_child_loggers() -> None:
    """Installed on a handler of the root logger, the filter cleans records of any logger that
    propagates to it (aiohttp's too): the %-args, the exception message and its traceback."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    child = logging.getLogger("aiohttp.server.redact-test")
    child.setLevel(logging.INFO)
    try:
        child.warning("bad header %r from %s", f"Bearer {TERMINAL_KEY}", "127.0.0.1")
        try:
            raise ValueError(f"Invalid header value char: b'Authorization: Bearer {ID_TOKEN}'")
        except ValueError:
            child.exception("Error handling request with %s", ADMIN_KEY)
        child.info("plain line %d", 7)
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback" in out
    assert "plain line 7" in out
    for secret in (TERMINAL_KEY, ADMIN_KEY, ID_TOKEN):
        assert secret[3:30] not in out, out


def test_the_access_log_names_no_route_for_a_request_that_was_never_routed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request the HTTP parser rejected reaches the access logger without match info (aiohttp's
    ``match_info`` asserts then: on main as filed, a traceback and no access line): one line,
    ``(unrouted)``."""
    request = make_mocked_request("GET", "/v1/pass")
    # private: aiohttp's own attribute, None as on the request its error handler passes
    request._match_info = None
    assert route_of(request) == "(unrouted)"
    logger = AccessLogger(logging.getLogger("aiohttp.access"), "")
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        logger.log(request, web.Response(status=400), 0.001)
    assert [r.getMessage() for r in caplog.records] == [
        '- "GET (unrouted) HTTP/1.1" 400 0 0.001000s'
    ]


def test_the_access_log_writes_no_method_outside_the_known_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any token is a valid HTTP method, a terminal key too: the access line, which skips the
    redacting filter, names only standard methods, others as ``(other)``."""
    logger = AccessLogger(logging.getLogger("aiohttp.access"), "")
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        logger.log(make_mocked_request(TERMINAL_KEY, "/"), web.Response(status=405), 0.001)
        logger.log(make_mocked_request("PATCH", "/"), web.Response(status=405), 0.001)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith('- "(other) '), lines
    assert TERMINAL_KEY not in lines[0]
    assert lines[1].startswith('- "PATCH '), lines
