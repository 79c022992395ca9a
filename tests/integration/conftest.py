"""Fixtures of the store tests against the real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from passcode.config import Settings
from passcode.store.cache import Cache
from passcode.wiring import open_cache


@pytest.fixture
async def cache(settings: Settings) -> AsyncIterator[Cache]:
    """The settings' cache on its own connections, closed after the test."""
    opened = open_cache(settings)
    try:
        yield opened
    finally:
        await opened.close()
