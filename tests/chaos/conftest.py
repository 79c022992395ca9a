"""What every fault test file shares: one PostgreSQL cluster made per session, copied per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.harness import PgTemplate


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PgTemplate]:
    template = PgTemplate.make()
    yield template
    template.remove()
