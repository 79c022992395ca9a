"""The service the browser tests drive: the real app (dev mode, the run's PostgreSQL and Redis)
served on a loopback port from a thread of its own, so Playwright's synchronous API owns the
test's thread while the test can still reach into the app (drain the scan log, read PostgreSQL).

The tests speak to it as a citizen's phone or an operator would, over HTTP (``urllib``): terminals
and overrides with the admin key, declarations and passes with dev ID tokens. Also here: the
Y4M file Chromium's fake camera plays, made from a PNG (a pass or a venue poster).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zxingcpp
from aiohttp import web
from PIL import Image

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import DRAIN, POOL
from passcode.store.pg import acquire
from passcode.testing import HEALTHY, auth
from passcode.wiring import with_dev_discovery
from tests.helpers import dev_token

T = TypeVar("T")
START_DEADLINE = 60.0  # s: migrations and key set-up of a fresh database
CALL_DEADLINE = 30.0  # s: one call into the app's loop (a drain, a query)
HTTP_DEADLINE = 10.0  # s: one request of the tests to the service


class ServiceThread:
    """``create_app(settings)`` behind an ``AppRunner`` on ``settings.host:settings.port``, its
    event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = with_dev_discovery(settings)  # as `passcode serve` in dev mode
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service", daemon=True)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def app(self) -> web.Application:
        assert self.runner is not None
        return self.runner.app

    def start(self) -> None:
        self.thread.start()
        self.call(self._start, timeout=START_DEADLINE)

    async def _start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.host, self.settings.port).start()

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = CALL_DEADLINE) -> T:
        """Run ``make()`` on the app's loop and wait for its result."""

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.runner is not None:
            self.call(self.runner.cleanup)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=CALL_DEADLINE)
        self.loop.close()

    # --- what the tests read from the stores ---------------------------------------------------

    def drain(self) -> int:
        """Move every scan waiting in the Redis stream into PostgreSQL now."""
        return self.call(self.app[DRAIN].drain_all)

    def scan_rows(self, scan_id: str) -> list[dict[str, Any]]:
        """The ``scans`` rows of one scan id (a scan recorded once has exactly one)."""

        async def read() -> list[dict[str, Any]]:
            async with acquire(self.app[POOL], "read", 5) as conn:
                rows = await conn.fetch(
                    "SELECT decision, reason, place, terminal_time FROM scans WHERE scan_id = $1",
                    uuid.UUID(scan_id),
                )
            return [dict(row) for row in rows]

        return self.call(read)

    # --- HTTP, as the service's clients ----------------------------------------------------------

    def request(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """(status, body bytes) of one request; a JSON ``body`` is sent as JSON."""
        headers = auth(token) if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310  # our own loopback URL
            self.url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_DEADLINE) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(
        self, method: str, path: str, *, expect: int, body: Any = None, token: str | None = None
    ) -> Any:
        status, raw = self.request(method, path, body=body, token=token)
        assert status == expect, f"{method} {path}: {status} {raw[:500]!r}"
        return json.loads(raw)

    def new_terminal(self, place: str) -> str:
        """The key of a terminal registered at ``place``."""
        answer = self.json(
            "POST",
            "/v1/admin/terminals",
            body={"place": place},
            token=self.settings.admin_key,
            expect=201,
        )
        return str(answer["key"])

    def citizen(self, name: str = "张小三", declaration: dict[str, Any] = HEALTHY) -> Citizen:
        """A new citizen of the dev identity provider who has declared ``declaration``."""
        user_id = f"browser-{uuid.uuid4().hex[:12]}"
        token = dev_token(self.settings, user_id, name)
        self.json("POST", "/v1/declarations", body=declaration, token=token, expect=201)
        return Citizen(self, user_id, token)

    def override(self, user_id: str, color: str) -> None:
        """An authority's ruling: ``user_id`` is ``color`` from now on."""
        self.json(
            "POST",
            "/v1/admin/overrides",
            body={"user_id": user_id, "color": color, "reason": "positive_test"},
            token=self.settings.admin_key,
            expect=201,
        )

    def poster(self, name: str) -> tuple[str, dict[str, Any], bytes]:
        """(place id, the poster's answer, its A4 PNG) of a new place called ``name`` whose
        operator has just issued its venue code (场所码)."""
        place = f"Corner Shop {uuid.uuid4().hex[:8]}"
        path = f"/v1/admin/places/{urllib.parse.quote(place, safe='')}"
        admin = self.settings.admin_key
        self.json("PUT", path, body={"type": "shop", "name": name}, token=admin, expect=201)
        issued = self.json("POST", f"{path}/poster", token=admin, expect=201)
        status, png = self.request("GET", issued["png_url"], token=admin)
        assert status == 200, png[:500]
        return place, issued, png

    def verify(self, terminal_key: str, code: str) -> dict[str, Any]:
        """The service's answer to a terminal scanning ``code``."""
        answer: dict[str, Any] = self.json(
            "POST", "/v1/verify", body={"code": code}, token=terminal_key, expect=200
        )
        return answer


@dataclass(frozen=True)
class Citizen:
    service: ServiceThread
    user_id: str
    token: str

    def pass_text(self) -> str:
        """The text of a freshly fetched pass (``GET /v1/pass``)."""
        return str(self.service.json("GET", "/v1/pass", token=self.token, expect=200)["code"])

    def pass_png(self) -> bytes:
        """A freshly fetched pass as the PNG a phone shows (``GET /v1/pass.png``)."""
        status, raw = self.service.request("GET", "/v1/pass.png", token=self.token)
        assert status == 200, raw[:500]
        return raw


def live_settings(base: Settings, port: int) -> Settings:
    """``base`` (the run's stores, dev mode) listening on loopback ``port``."""
    return dataclasses.replace(base, host="127.0.0.1", port=port)


# --- the fake camera's video --------------------------------------------------------------------

FRAME_SIZE = (640, 480)
CODE_SIZE = 440  # px of the code in the frame: jsQR reads it at once, well inside the frame
FRAMES = 2  # Chromium loops the file; two frames keep it a video


def close_up(png: bytes, margin: float = 0.15) -> bytes:
    """The part of ``png`` (a printed poster) around its one QR code, as a phone held up to
    it sees it: the code and a white margin of ``margin`` of its size on each side."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, f"{len(found)} codes on the poster"
    where = found[0].position
    xs = [where.top_left.x, where.top_right.x, where.bottom_left.x, where.bottom_right.x]
    ys = [where.top_left.y, where.top_right.y, where.bottom_left.y, where.bottom_right.y]
    pad = round(max(max(xs) - min(xs), max(ys) - min(ys)) * margin)
    box = (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)
    out = io.BytesIO()
    image.crop(box).save(out, format="PNG")
    return out.getvalue()


def y4m_from_png(png: bytes, out: Path, *, size: int = CODE_SIZE) -> Path:
    """Write ``out``: a Y4M video (4:2:0, 10 frames a second) of ``png`` scaled to ``size`` px
    wide (nearest neighbour, so QR modules stay sharp) in the middle of a white 640×480 frame,
    which Chromium's ``--use-file-for-fake-video-capture`` plays as the camera."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    height = round(image.height * size / image.width)
    scaled = image.resize((size, height), Image.Resampling.NEAREST)
    frame = Image.new("RGB", FRAME_SIZE, "white")
    frame.paste(scaled, ((FRAME_SIZE[0] - size) // 2, (FRAME_SIZE[1] - height) // 2))
    y, cb, cr = frame.convert("YCbCr").split()
    half = (FRAME_SIZE[0] // 2, FRAME_SIZE[1] // 2)
    planes = (
        y.tobytes()
        + cb.resize(half, Image.Resampling.BILINEAR).tobytes()
        + cr.resize(half, Image.Resampling.BILINEAR).tobytes()
    )
    header = f"YUV4MPEG2 W{FRAME_SIZE[0]} H{FRAME_SIZE[1]} F10:1 Ip A1:1 C420jpeg\n".encode()
    out.write_bytes(header + (b"FRAME\n" + planes) * FRAMES)
    return out
