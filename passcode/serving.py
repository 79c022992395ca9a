"""One serving process on a TCP port, and a SIGTERM that drops no request already sent.

aiohttp's ``run_app`` on SIGTERM closes the listener and then, one loop turn later, every
connection that is not in the middle of a request (``Server.pre_shutdown`` → ``close()``; from
then on ``RequestHandler.data_received`` discards what arrives): a request a client had already
written on an idle keep-alive connection, still in the socket buffer or arriving a moment later,
is never read, and closing a socket with unread data answers it with a reset. The answers to
requests in flight meanwhile say ``keep-alive``, so clients send their next request on a
connection that is about to close.

Here SIGTERM (or SIGINT) instead stops accepting, then for ``grace`` seconds lets every open
connection deliver what its client had sent: each answer from then on carries
``Connection: close`` and its connection closes right after it. What is still open after that
(idle connections, long requests) goes to ``AppRunner.cleanup``: idle ones are closed, running
requests get up to ``shutdown_timeout`` to finish, then the app's cleanup contexts run (the
scan drain's final flush). A connection the kernel had queued but the loop not yet accepted is
refused: no request on it was ever read.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from passcode.api.protocol import Runner

log = logging.getLogger(__name__)

# Long enough for a request a client wrote just before the signal to be read under load; every
# idle keep-alive connection (a balancer keeps some) holds shutdown this long, no longer.
GRACE = 1.0
SHUTDOWN_TIMEOUT = 15.0
KEEPALIVE_TIMEOUT = 75.0  # run_app's default (a bare AppRunner would keep idle ones for 3630 s)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _until_quiet(server: web.Server, seconds: float) -> None:
    """Until every connection has closed itself (after its last answer) or ``seconds`` pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # aiohttp's Server has no event for its last connection closing: poll its list.
    while server.connections and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    grace: float = GRACE,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    **runner_kwargs: Any,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then stop as the module docstring says."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    started = False

    def on_signal() -> None:
        stop.set()
        if not started and task is not None:
            task.cancel()  # still starting (e.g. waiting for Redis): give up, clean up

    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal)
    runner_kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
    runner = Runner(app, shutdown_timeout=shutdown_timeout, **runner_kwargs)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        started = True
        await stop.wait()
        await site.stop()
        runner.close_after_each_answer()
        server = runner.server
        log.info(
            "stopping: not accepting; answering what %d open connection(s) sent",
            len(server.connections) if server else 0,
        )
        if server is not None:
            await _until_quiet(server, grace)
    finally:
        await runner.cleanup()
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)


def run(
    app: web.Application,
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    **options: Any,
) -> None:
    """:func:`serve` on a new event loop; a signal during start-up ends it cleanly too."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(serve(app, **options))
        except asyncio.CancelledError:
            log.info("stopped during start-up")
