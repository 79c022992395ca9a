"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.api.proxy import TcpProxy
from tests.helpers import ON_CLUSTER


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[[str], Awaitable[TcpProxy]]]:
    """Start TCP proxies in front of real servers; all are cut at the end of the test."""
    started: list[TcpProxy] = []

    async def start(url: str) -> TcpProxy:
        if ON_CLUSTER and url.startswith("redis"):
            pytest.skip("a proxy cuts one Redis; the cluster's failures are in tests/chaos")
        try:
            proxy = TcpProxy.for_url(url)
        except AssertionError:
            pytest.skip(
                f"the outage tests proxy TCP; {url.rsplit('@', maxsplit=1)[-1]} has no host:port"
            )
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()
