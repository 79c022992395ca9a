"""Shared fixtures: a throwaway database and Redis key prefix per run, on real servers.

``PASSCODE_DATABASE_URL`` and ``PASSCODE_REDIS_URL`` name the servers (``make test`` sets them,
starting embedded ones when they are unset); without them the machine's standard loopback ports
are used. Each run creates its own database and drops it at the end, and deletes its keys.
With ``TEST_REDIS_CLUSTER`` set, the run starts a Redis Cluster of its own (3 primaries and 3
replicas of the real ``redis-server``, AOF on, loopback: :mod:`passcode.localcluster`) and every
test's settings point at it instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.localcluster import LocalCluster, local_cluster
from passcode.store.keyring import load_or_create_ed25519
from passcode.wiring import dev_idp_key_path
from tests.helpers import (
    ADMIN_KEY,
    ON_CLUSTER,
    RUN_ID,
    TokenFactory,
    dev_token,
    new_terminal,
    redis_client,
)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def base_database_url() -> str:
    return (
        os.environ.get("PASSCODE_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On the cluster, redis-py's own async cluster client (the tests' look into Redis) can
    leave a socket of its start-up node unclosed (redis-py issues 3846 and 3572): that
    ResourceWarning is not made an error there. The service's transport is the same code on
    one node, where the warning stays an error."""
    if not ON_CLUSTER:
        return
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"))
        item.add_marker(pytest.mark.filterwarnings("ignore:loop is closed:ResourceWarning"))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster | None]:
    """The run's own Redis Cluster when TEST_REDIS_CLUSTER is set, else None."""
    if not ON_CLUSTER:
        yield None
        return
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        os.environ["TEST_REDIS_CLUSTER_NODES"] = cluster.seeds  # for tests/live_server.py
        try:
            yield cluster
        finally:
            del os.environ["TEST_REDIS_CLUSTER_NODES"]


@pytest.fixture(scope="session")
def redis_url(redis_cluster: LocalCluster | None) -> str:
    if redis_cluster is not None:
        return f"redis://{redis_cluster.nodes[0].address}/0"
    return os.environ.get("PASSCODE_REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_cluster_nodes(redis_cluster: LocalCluster | None) -> tuple[str, ...]:
    return () if redis_cluster is None else tuple(redis_cluster.seeds.split(","))


@pytest.fixture(scope="session")
def database_url(base_database_url: str) -> Iterator[str]:
    """A database made for this run and dropped after it."""
    name = f"passcode_test_{RUN_ID}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base_database_url, timeout=10)
        try:
            await conn.execute(sql, timeout=30)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(base_database_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str, redis_cluster: LocalCluster | None) -> Iterator[str]:
    """This run's key prefix; every key under it is deleted at the end (a cluster of the
    run's own goes with its keys)."""
    prefix = f"pctest-{RUN_ID}"
    yield prefix
    if redis_cluster is not None:
        return

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            batch = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(batch), 500):
                await client.delete(*batch[start : start + 500])
        finally:
            await client.aclose()

    asyncio.run(cleanup())


@pytest.fixture
def settings(
    database_url: str,
    redis_url: str,
    redis_cluster_nodes: tuple[str, ...],
    redis_prefix: str,
    tmp_path: Path,
) -> Settings:
    """Dev-mode settings on the run's database, with a key prefix of the test's own."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_cluster_nodes=redis_cluster_nodes,
        redis_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        secret="test-secret-" + RUN_ID,
        admin_key=ADMIN_KEY,
        dev_mode=True,
        drain_interval=0.02,
        pg_pool_min=1,
        pg_pool_max=5,
        scan_shards=4,
        # Suites send dozens of requests per citizen in a row (bad-input runs); the citizen
        # limit itself is tested with its own tight settings (tests/api/test_abuse.py).
        citizen_burst=1000.0,
        # Lag-based shedding answers 503 when the loop runs 0.25 s late, which a loaded CI
        # machine does now and then; it is tested with its own settings (test_abuse.py).
        shed_issue_lag=0.0,
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@pytest.fixture
def make_token(settings: Settings) -> TokenFactory:
    """Mint dev ID tokens for ``user_id`` (a fresh random user by default)."""
    key = load_or_create_ed25519(dev_idp_key_path(settings))

    def make(user_id: str | None = None, name: str = "张小三", ttl: int = 3600) -> str:
        return dev_token(settings, user_id, name, ttl=ttl, key=key)

    return make


@pytest.fixture
async def terminal_key(client: TestClient[Any, Any]) -> str:
    """The key of a terminal registered for the test."""
    _, key = await new_terminal(client)
    return key


@pytest.fixture
async def raw_redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own on the real Redis, for what the service's client hides."""
    client = redis_client(settings)
    try:
        yield client
    finally:
        await client.aclose()
