"""The framework's ceiling: a bare aiohttp app with one POST route, served like passcode is.

``web.run_app`` gets the settings ``passcode serve`` uses (the same event loop, uvloop when
installed; the same garbage-collector settings; no access log, no banner), so the benchmark's
``hello POST`` row measures aiohttp itself: read the body, answer a small JSON document.
``--loop asyncio`` serves it on asyncio's own loop with default GC instead (how the issue's
baseline was measured), for comparison.

    python loadtest/hello.py --host 127.0.0.1 --port 8081 [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from passcode.cli import new_event_loop, settle_gc

BODY = b'{"hello":"world"}'


async def hello(request: web.Request) -> web.Response:
    """Read the whole body (as any POST handler must) and answer a small JSON document."""
    await request.read()
    return web.Response(body=BODY, content_type="application/json", charset="utf-8")


def create_app() -> web.Application:
    """The app: one POST route and nothing else."""
    app = web.Application()
    app.router.add_post("/hello", hello)
    return app


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, default=8081)
    args.add_argument("--loop", choices=("service", "asyncio"), default="service")
    options = args.parse_args()
    app = create_app()
    if options.loop == "service":
        app.on_startup.append(settle_gc)
    web.run_app(
        app,
        loop=new_event_loop() if options.loop == "service" else asyncio.new_event_loop(),
        host=options.host,
        port=options.port,
        access_log=None,
        print=None,
        shutdown_timeout=15.0,
    )


if __name__ == "__main__":
    main()
