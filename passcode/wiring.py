"""What the settings describe, built the same way for the app, the CLI, seeding and the
benchmarks: the server secret, the identity keys, the Redis cache, the scan-log drain.

Below :mod:`passcode.app` (which wires the web service from these) so that ``passcode seed``
and the CLI's store commands need not import the web application.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
import time
from pathlib import Path

from passcode.config import Settings, SettingsError
from passcode.domain.identity import load_jwks
from passcode.errors import StoreUnavailable
from passcode.store import cache as cache_store
from passcode.store import pg, transport
from passcode.store.keyring import load_or_create_ed25519, load_or_create_secret
from passcode.workers.drain import ScanDrain

log = logging.getLogger(__name__)

DEV_IDP_KID = "dev"
REDIS_STARTUP_WAIT = 60.0


def dev_idp_key_path(settings: Settings) -> Path:
    return settings.key_dir / "idp-dev.key"


def with_dev_discovery(settings: Settings) -> Settings:
    """Dev mode's settings trusting the service's own /dev-idp/ through discovery (as a real
    provider is trusted), unless PASSCODE_IDP_DISCOVERY_URL names another; others unchanged."""
    if not settings.dev_mode or settings.idp_discovery_url:
        return settings
    host = settings.host
    if not host or ipaddress.ip_address(host.strip("[]") or "::").is_unspecified:
        host = "127.0.0.1"  # listening on every interface: reach it on loopback
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/dev-idp/.well-known/openid-configuration"
    return dataclasses.replace(settings, idp_discovery_url=url)


def server_secret(settings: Settings) -> str:
    """The configured secret; dev mode keeps a generated one beside its keys."""
    if settings.secret:
        return settings.secret
    if settings.dev_mode:
        return load_or_create_secret(settings.key_dir / "server-secret")
    raise SettingsError("PASSCODE_SECRET is required outside dev mode")


def identity_keys(settings: Settings) -> dict[str, object]:
    keys: dict[str, object] = {}
    if settings.idp_jwks_file is not None:
        keys.update(load_jwks(settings.idp_jwks_file.read_text(encoding="utf-8")))
    if settings.dev_mode:
        keys[DEV_IDP_KID] = load_or_create_ed25519(dev_idp_key_path(settings)).public_key()
    if not keys:
        log.warning("no identity-provider keys: set PASSCODE_IDP_JWKS_FILE; citizens get 401")
    return keys


def open_cache(settings: Settings) -> cache_store.Cache:
    """The Redis client and key layout the settings describe (service, CLI, workers alike)."""
    assert settings.redis_url is not None
    redis: transport.RedisTransport
    if settings.redis_cluster_nodes:
        # The slot map is read on the first execute, which every process's start-up makes.
        redis = transport.ClusterTransport(
            settings.cluster_seeds(),
            url=settings.redis_url,
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
    else:
        redis = transport.connect(
            settings.redis_url,
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
    return cache_store.Cache(
        redis,
        prefix=settings.redis_prefix,
        shards=settings.scan_shards,
        timeout=settings.redis_timeout,
        dedupe_ttl=settings.scan_dedupe_ttl,
        replay_window=settings.replay_window,
    )


def make_drain(settings: Settings, pool: pg.Pool, cache: cache_store.Cache) -> ScanDrain:
    """A scan-log drain; one consumer per process, named after host, port and pid."""
    return ScanDrain(
        pool,
        cache,
        consumer=f"{socket.gethostname()}:{settings.port}:{os.getpid()}",
        batch=settings.drain_batch,
        interval=settings.drain_interval,
        pg_timeout=settings.pg_timeout,
        claim_idle_ms=int(settings.drain_claim_idle * 1000),
        dedupe_window=settings.scan_dedupe_ttl,
    )


async def until_answering(cache: cache_store.Cache, *, deadline: float) -> None:
    """Wait for Redis up to a deadline, then fail (StoreUnavailable). Still loading its
    append-only file, Redis refuses commands with LOADING (redis-py's BusyLoadingError, a
    ConnectionError, so StoreUnavailable like a down Redis); the service, the CLI and the
    benchmark scripts all wait here before their first command."""
    while True:
        try:
            await cache.ping()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for redis to answer")
            await asyncio.sleep(0.5)
