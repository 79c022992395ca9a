"""What aiohttp answers before any route runs (``passcode.api.protocol``), on a real
``passcode serve``: malformed requests carrying real credentials get problem+json that quotes
nothing, the log holds none of the credentials and no traceback, every response says
``Server: passcode``, and headers trickled past the deadline get a 408.

Requests are written on raw sockets: no HTTP client would send them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from passcode.domain.model import Role
from passcode.store import pg
from passcode.store.admins import add_credential
from tests.helpers import dev_token
from tests.live_server import LiveServer, live_settings

HEADER_TIMEOUT = 1.0


@dataclass
class Live:
    server: LiveServer
    secrets: dict[str, str]

    @property
    def port(self) -> int:
        return self.server.settings.port


def _http(url: str, *, method: str = "GET", headers: dict[str, str], body: object = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        read: bytes = response.read()
        return read


@pytest.fixture(scope="module")
def live(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A ``passcode serve`` (DEBUG log, access log on, 1 s header deadline), a terminal key,
    an admin key and an ID token of its own, and its log to read after ``stop()``."""
    tmp = tmp_path_factory.mktemp("parser-errors")
    settings = live_settings(database_url, redis_url, redis_prefix, tmp, tag="parse")
    server = LiveServer(
        settings,
        tmp / "server.log",
        extra_env={
            "PASSCODE_LOG_LEVEL": "DEBUG",
            "PASSCODE_ACCESS_LOG": "1",
            "PASSCODE_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        },
    )
    server.start()
    try:
        made = json.loads(
            _http(
                f"{server.url}/v1/admin/terminals",
                method="POST",
                headers={"Authorization": f"Bearer {settings.admin_key}"},
                body={"place": "Gate P"},
            )
        )

        async def admin_key() -> str:
            pool = await pg.create_pool(database_url, timeout=5, min_size=1, max_size=1)
            try:
                _, key = await add_credential(pool, "parser", frozenset(Role), timeout=5)
            finally:
                await pool.close()
            return key

        token = dev_token(settings, f"raw-user-{uuid.uuid4().hex}", "Parserina Quux")
        assert settings.admin_key is not None
        secrets = {
            "terminal key": made["key"],
            "admin key": asyncio.run(admin_key()),
            "bootstrap admin key": settings.admin_key,
            "ID token": token,
        }
        yield Live(server, secrets)
    finally:
        server.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.raw.partition(b"\r\n\r\n")[2])
        return body


def _send(port: int, *parts: bytes, pause: float = 0.0) -> Answer:
    """Writes ``parts`` (``pause`` s apart) on a new connection; the first response."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        for n, part in enumerate(parts):
            if n and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: read what it said
        raw = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
            head, sep, rest = raw.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return Answer(int(status_line.split()[1]), headers, raw)


def _malformed(secret: str) -> dict[str, list[bytes]]:
    """Requests aiohttp's parser rejects, each carrying ``secret``."""
    s = secret.encode()
    auth = b"Authorization: Bearer " + s
    host = b"Host: localhost\r\n"
    return {
        "control byte ending the Authorization line": [
            b"GET /v1/pass HTTP/1.1\r\n" + host + auth + b"\x01\r\n\r\n"
        ],
        "NUL inside the Authorization line": [
            b"GET /v1/pass HTTP/1.1\r\n" + host + b"Authorization: Bearer \x00" + s + b"\r\n\r\n"
        ],
        "header over 8 KB starting with the credential": [
            b"GET /v1/pass HTTP/1.1\r\n" + host + auth + b"A" * 9000 + b"\r\n\r\n"
        ],
        "request line over 8 KB": [b"GET /" + s + b"x" * 9000 + b" HTTP/1.1\r\n" + host + b"\r\n"],
        "bad method": [b"G\x01T /v1/pass HTTP/1.1\r\n" + host + auth + b"\r\n\r\n"],
        "bad version": [b"GET /v1/pass HTTP/9.Z\r\n" + host + auth + b"\r\n\r\n"],
        "credential as a header name": [
            b"GET /v1/pass HTTP/1.1\r\n" + host + s + b"\x01: x\r\n\r\n"
        ],
        "credential in a bad target": [b"GET \x7f" + s + b" HTTP/1.1\r\n" + host + b"\r\n"],
        "chunked garbage": [
            b"POST /v1/verify HTTP/1.1\r\n" + host + auth + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz" + s + b"\r\n{}\r\n0\r\n\r\n"
        ],
        "two content lengths": [
            b"POST /v1/verify HTTP/1.1\r\n" + host + auth + b"\r\n"
            b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
        ],
    }


def _assert_problem(answer: Answer, status: int | None, secrets: dict[str, str]) -> None:
    assert answer.headers.get("content-type", "").startswith("application/problem+json"), answer
    body = answer.body
    assert set(body) >= {"type", "title", "status", "detail"}, body
    assert body["status"] == answer.status
    if status is not None:
        assert answer.status == status, answer
    assert answer.headers.get("server") == "passcode", answer.headers
    text = answer.raw.decode("latin-1")
    for what, secret in secrets.items():
        for part in (secret, secret[3:40], secret[-20:]):
            assert part not in text, f"{what} echoed in {text[:300]!r}"


def test_malformed_requests_with_credentials_get_problems_that_quote_nothing(live: Live) -> None:
    """Each malformed request of :func:`_malformed`, with each real credential (terminal key,
    admin key, bootstrap admin key, ID token), is answered 400 problem+json, with
    ``Server: passcode`` and nothing of the credential in the response (aiohttp's own answer
    is a ``text/plain`` 400 quoting the line)."""
    for what, secret in live.secrets.items():
        for case, parts in _malformed(secret).items():
            answer = _send(live.port, *parts)
            assert answer.status == 400, (what, case, answer.raw[:400])
            _assert_problem(answer, 400, {what: secret})


@pytest.mark.parametrize(
    "request_line",
    [b"CONNECT localhost:443 HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET http://x/%00 HTTP/1.1"],
)
def test_targets_no_route_can_match_get_a_problem(live: Live, request_line: bytes) -> None:
    """``CONNECT host:port``, ``OPTIONS *`` and an absolute URL are answered with a 4xx
    problem, not aiohttp's ``text/plain`` 404."""
    token = live.secrets["ID token"].encode()
    answer = _send(
        live.port,
        request_line + b"\r\nHost: localhost\r\nAuthorization: Bearer " + token + b"\r\n\r\n",
    )
    assert 400 <= answer.status < 500, answer.raw[:300]
    _assert_problem(answer, None, live.secrets)


def test_every_response_says_server_passcode_without_a_version(live: Live) -> None:
    """Routed, unrouted (the catch-all 404) and public responses carry ``Server: passcode``."""
    for target in (b"/healthz", b"/v1/keys", b"/no/such/thing", b"/v1/pass"):
        answer = _send(live.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.headers.get("server") == "passcode", (target, answer.headers)


def _chunked_head(secret: str) -> bytes:
    return (
        b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + secret.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


def _body_then_gone(port: int, secret: str) -> None:
    """Headers and half a body, then the client closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(_chunked_head(secret) + b'5\r\n{"cod\r\n')
        time.sleep(0.2)


def test_bad_chunk_framing_inside_a_body_is_a_400_at_once(live: Live) -> None:
    """Headers and a good chunk, then (in a later read) a chunk that is not chunked framing:
    the handler reading the body gets a 400 problem straight away (aiohttp leaves such a body
    unfinished: the handler waited until the client gave up, then logged a 500)."""
    key = live.secrets["terminal key"]
    answer = _send(
        live.port,
        _chunked_head(key) + b'5\r\n{"cod\r\n',
        b"zz" + key.encode() + b"\r\n\r\n",
        pause=0.3,
    )
    _assert_problem(answer, 400, live.secrets)


@pytest.mark.parametrize(
    ("target", "prefix"),
    [
        (b"GET /v1/pass", b""),
        (b"POST /v1/verify", b"pt_"),
        (b"POST /v1/admin/overrides", b"pa_"),
        (b"POST /v1/admin/overrides", b""),
    ],
)
def test_credentials_whose_bytes_are_not_utf8_get_401_not_500(
    live: Live, target: bytes, prefix: bytes
) -> None:
    """A bearer credential with bytes that are not UTF-8 (aiohttp decodes them to lone
    surrogates, which hashing a key cannot encode: a 500 on main as filed) → 401 problem."""
    answer = _send(
        live.port,
        target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + prefix + b"\xff\xfe" + b"A" * 40 + b"\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    assert answer.status == 401, answer.raw[:300]
    _assert_problem(answer, 401, live.secrets)


def test_headers_trickled_past_the_deadline_get_a_408_problem(live: Live) -> None:
    """A client sending one header line at a time, slower than the header deadline allows
    (``PASSCODE_HEADER_TIMEOUT``), gets a 408 problem and the connection is closed; a client
    that sends its headers within the deadline, even in pieces, is answered normally, and so is
    one whose body (not its headers) takes longer than the header deadline."""
    lines = [b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"]
    slow = _send(live.port, *lines, b"X-C: 3\r\n", b"\r\n", pause=HEADER_TIMEOUT * 0.6)
    assert slow.status == 408, slow.raw[:300]
    _assert_problem(slow, 408, live.secrets)
    quick = _send(live.port, *lines, b"\r\n", pause=0.01)
    assert quick.status == 200, quick.raw[:300]
    # The deadline is the headers': a body may take longer (it has PASSCODE_BODY_TIMEOUT).
    key = live.secrets["terminal key"].encode()
    body = b'{"code": "PC1:NOT-A-PASS"}'
    head = (
        b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    slow_body = _send(live.port, head, body[:5], body[5:15], body[15:], pause=HEADER_TIMEOUT * 0.6)
    assert slow_body.status == 200, slow_body.raw[:300]
    assert slow_body.body["decision"] == "invalid"


def test_log_holds_no_credential_and_no_traceback_of_a_parser_error(live: Live) -> None:
    """Run last in this module: after the requests above the server is stopped and its whole
    DEBUG log searched (after a round of malformed requests, bad chunks inside bodies,
    clients that leave mid-body, and each credential sent as the method, which is a valid
    HTTP token). No credential (nor a 20-character
    piece of one), no traceback, no ERROR line; and each refused request left one access-log line, ``(unrouted)``.
    Control: the log holds the refusals themselves."""
    for secret in live.secrets.values():
        for parts in _malformed(secret).values():
            _send(live.port, *parts)
        _body_then_gone(live.port, secret)
        as_method = _send(live.port, secret.encode() + b" /v1/pass HTTP/1.1\r\nHost: x\r\n\r\n")
        _assert_problem(as_method, None, live.secrets)
        _send(live.port, _chunked_head(secret) + b"1\r\n{\r\n", b"zz\r\n", pause=0.1)
    assert live.server.stop() == 0
    log = live.server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "refused a malformed request" in log, log[-2000:]
    assert '"UNKNOWN (unrouted) HTTP/1.0" 400' in log, log[-2000:]
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    assert " ERROR " not in log, [ln for ln in log.splitlines() if " ERROR " in ln][:5]
    for what, secret in live.secrets.items():
        for part in (secret, secret[3:23], secret[-20:]):
            assert part not in log, (what, [ln[:300] for ln in log.splitlines() if part in ln])
