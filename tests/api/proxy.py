"""A small asyncio TCP proxy for tests: put it between the service and a real server, then break it.

``cut()`` makes the backing server look dead (the listening socket is closed, so new
connections are refused, and every open connection is aborted); ``freeze()`` makes it look
hung (connections stay open, bytes are swallowed, nothing comes back); ``restore()`` brings it
back on the same port. No mocks: the service talks its real protocol to the real server
through here.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None, f"give the port explicitly in {url!r}"
        return cls(parts.hostname, parts.port)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's (user and path kept)."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def start(self) -> int:
        """Listen (on a free port the first time, the same port after ``restore``)."""
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def restore(self) -> None:
        if self._server is None:
            await self.start()
        self._flowing.set()

    def freeze(self) -> None:
        """Keep every connection open but stop moving bytes: a hung server."""
        self._flowing.clear()

    async def cut(self) -> None:
        """Refuse new connections and abort every open one: a dead server."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._flowing.set()  # frozen pumps wake up and find their connections gone
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        # Let the handlers end by themselves: asyncio's start_server logs an error for a
        # cancelled handler task on Python 3.11.
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except OSError:
            pass  # the target refused: the client sees its connection closed
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF (passed on), or abort the writer on a broken link."""
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()
