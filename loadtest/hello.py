"""The framework's ceiling: a bare aiohttp app with one POST route, served like passcode is.

``web.run_app`` gets the settings ``passcode serve`` uses (no access log, no banner, same
host/port style), so the benchmark's ``hello POST`` row measures aiohttp itself: read the
body, answer a small JSON document.

    python loadtest/hello.py --host 127.0.0.1 --port 8081
"""

from __future__ import annotations

import argparse

from aiohttp import web

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
    options = args.parse_args()
    web.run_app(
        create_app(),
        host=options.host,
        port=options.port,
        access_log=None,
        print=None,
        shutdown_timeout=15.0,
    )


if __name__ == "__main__":
    main()
