"""``create_app(settings)``: the one place that wires the service together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from passcode.api.auth import requires
from passcode.api.metrics import share as share_metrics
from passcode.api.openapi import openapi_document
from passcode.api.problems import add_route, add_unmatched
from passcode.api.routes import ROUTES
from passcode.config import Settings, SettingsError, mask_url
from passcode.domain.cardsheet import MAX_DAYS
from passcode.domain.identity import IdTokenVerifier
from passcode.domain.policy import VALUE_SETS
from passcode.domain.privacy import Sealer
from passcode.errors import StoreUnavailable
from passcode.keys import (
    CACHE,
    CARDS,
    CATALOGS,
    CHECKINS,
    CITIZEN_LIMITS,
    CITIZENS,
    DEV_IDP,
    DRAIN,
    ID_TOKENS,
    KEYRING,
    MY_DATA,
    OPENAPI,
    PLACES,
    POOL,
    POSTERS,
    RISK_PLACES,
    SEALER,
    SETTINGS,
    SHEDDER,
    SIGN_IN,
    SUPERVISOR,
    TERMINAL_LIMITS,
    TERMINALS,
    TRUST,
    VERIFIER,
)
from passcode.service.cards import CardRegistry, CardService
from passcode.service.catalogs import CatalogWatcher
from passcode.service.checkins import Checkins, VenuePosters
from passcode.service.citizen import CitizenService
from passcode.service.devidp import DevIdentityProvider
from passcode.service.foreign import ForeignJudge
from passcode.service.limits import Limiter
from passcode.service.mydata import MyData
from passcode.service.oidc import ProviderKeys, SignIn
from passcode.service.places import PlaceDirectory
from passcode.service.riskplaces import RiskPlaceRunner
from passcode.service.shedding import LoadShedder
from passcode.service.signing import KeyringHolder
from passcode.service.trust import TrustHolder
from passcode.service.verify import PostgresFallback, Verifier
from passcode.store import pg
from passcode.store.catalogs import Catalog
from passcode.store.keyring import ensure_key, load_or_create_ed25519
from passcode.store.places import load_value_sets
from passcode.store.terminals import TerminalDirectory
from passcode.wiring import (
    DEV_IDP_KID,
    REDIS_STARTUP_WAIT,
    dev_idp_key_path,
    identity_keys,
    make_drain,
    open_cache,
    server_secret,
    until_answering,
)
from passcode.workers.retention import expire_logged, run_retention
from passcode.workers.supervisor import Supervisor

log = logging.getLogger(__name__)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None
    log.info("connecting to postgres %s", mask_url(settings.database_url))
    pool = await pg.create_pool(
        settings.database_url,
        timeout=settings.pg_timeout,
        min_size=settings.pg_pool_min,
        max_size=settings.pg_pool_max,
    )
    try:
        await pg.migrate(pool)
        app[POOL] = pool
        # Services register their catalogs with it; _catalogs loads them and follows changes.
        app[CATALOGS] = CatalogWatcher(pool, timeout=settings.pg_timeout)
        yield
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pool.close(), timeout=10)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    log.info("connecting to redis %s", mask_url(settings.redis_url))
    cache = open_cache(settings)
    try:
        await until_answering(cache, deadline=time.monotonic() + REDIS_STARTUP_WAIT)
        await cache.check_layout()
        app[CACHE] = cache
        yield
    finally:
        await cache.close()


async def _keyring(app: web.Application) -> AsyncIterator[None]:
    """Load keys (creating the first in dev mode) and reload them while running."""
    settings = app[SETTINGS]
    now = int(settings.clock.now())
    keyring = ensure_key(settings.key_dir, now=now)
    holder = KeyringHolder(
        settings.key_dir,
        keyring,
        retire_after=settings.pass_ttl + settings.clock_skew,
        card_retire_after=MAX_DAYS * 86400 + settings.clock_skew,
    )
    app[KEYRING] = holder

    async def reload() -> None:
        while True:
            await asyncio.sleep(settings.key_reload_interval)
            try:
                holder.reload_if_changed()
            except (OSError, ValueError, KeyError):
                log.exception("could not reload signing keys; keeping the old set")

    task = app[SUPERVISOR].start("key-reload", reload)
    yield
    task.cancel()
    await _finish(task, timeout=5)


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    policy = settings.policy()
    sealer = Sealer(server_secret(settings))
    app[SEALER] = sealer
    id_tokens = IdTokenVerifier(
        identity_keys(settings),
        issuer=settings.idp_issuer,
        audience=settings.idp_audience,
        leeway=settings.clock_skew,
    )
    app[ID_TOKENS] = id_tokens
    provider = None
    if settings.idp_discovery_url:
        provider = ProviderKeys(
            settings.idp_discovery_url,
            issuer=settings.idp_issuer,
            static=id_tokens.keys,
            on_keys=id_tokens.replace_keys,
            timeout=settings.idp_fetch_timeout,
            min_interval=settings.idp_jwks_min_interval,
        )
    app[SIGN_IN] = SignIn(id_tokens, provider, clock=settings.clock)
    if settings.dev_mode:
        app[DEV_IDP] = DevIdentityProvider(
            load_or_create_ed25519(dev_idp_key_path(settings)),
            kid=DEV_IDP_KID,
            issuer=settings.idp_issuer,
            client_id=settings.idp_audience,
            clock=settings.clock,
        )
    app[TERMINALS] = TerminalDirectory(
        app[POOL], ttl=settings.terminal_cache_ttl, timeout=settings.pg_timeout
    )
    # Places and their policies: loaded by _catalogs before serving, reloaded on every change.
    value_sets = dict(VALUE_SETS)
    if settings.value_sets_dir is not None:  # an unreadable folder stops the start: say why
        try:
            value_sets |= load_value_sets(settings.value_sets_dir)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"PASSCODE_VALUE_SETS_DIR: {exc}") from exc
    app[PLACES] = PlaceDirectory(
        app[POOL], app[CATALOGS], timeout=settings.pg_timeout, value_sets=value_sets
    )
    # The trust store of foreign signers: the same, via the catalog watcher.
    app[TRUST] = TrustHolder(app[POOL], timeout=settings.pg_timeout, watcher=app[CATALOGS])
    app[TERMINAL_LIMITS] = Limiter(
        app[CACHE],
        kind="t",
        rate=settings.terminal_rate,
        burst=settings.terminal_burst,
        what="terminal",
        clock=settings.clock,
    )
    app[CITIZEN_LIMITS] = Limiter(
        app[CACHE],
        kind="c",
        rate=settings.citizen_rate,
        burst=settings.citizen_burst,
        what="citizen",
        clock=settings.clock,
    )
    # Printed cards reported lost: verify refuses them (this replica at once, others within
    # the catalog watcher's poll).
    card_registry = CardRegistry(app[POOL], timeout=settings.pg_timeout, clock=settings.clock)
    app[CATALOGS].register(Catalog.CARDS, card_registry.reload)
    foreign = ForeignJudge(
        trust=app[TRUST],
        places=app[PLACES],
        hasher=sealer.certificate_hash,
        max_entries=settings.authenticated_cache,
    )
    app[VERIFIER] = Verifier(
        keys=app[KEYRING],
        cache=app[CACHE],
        fallback=PostgresFallback(
            pool=app[POOL],
            cache=app[CACHE],
            policy=policy,
            timeout=settings.pg_timeout,
            dedupe_window=settings.scan_dedupe_ttl,
        ),
        issuer=settings.issuer,
        leeway=settings.clock_skew,
        pg_timeout=settings.pg_timeout,
        fallback_concurrency=settings.pg_fallback_concurrency,
        authenticated_cache=settings.authenticated_cache,
        clock=settings.clock,
        foreign=foreign,
        cards=card_registry,
        places=app[PLACES],
    )
    app[CITIZENS] = CitizenService(
        pool=app[POOL],
        cache=app[CACHE],
        sealer=sealer,
        keys=app[KEYRING],
        policy=policy,
        issuer=settings.issuer,
        pass_ttl=settings.pass_ttl,
        refresh_margin=settings.refresh_margin,
        pg_timeout=settings.pg_timeout,
        clock=settings.clock,
    )
    app[MY_DATA] = MyData(
        pool=app[POOL],
        cache=app[CACHE],
        sealer=sealer,
        idp_issuer=settings.idp_issuer,
        scan_retention_days=settings.scan_retention_days,
        signin_window=settings.erasure_signin_window,
        pg_timeout=settings.pg_timeout,
        clock=settings.clock,
    )
    app[CARDS] = CardService(
        pool=app[POOL],
        cache=app[CACHE],
        sealer=sealer,
        keys=app[KEYRING],
        policy=policy,
        issuer=settings.issuer,
        idp_issuer=settings.idp_issuer,
        default_days=settings.card_days,
        catalogs=app[CATALOGS],
        registry=card_registry,
        pg_timeout=settings.pg_timeout,
        clock=settings.clock,
    )
    # Venue check-in (场所码): check-ins are scans of each place's venue terminal.
    app[CHECKINS] = Checkins(
        pool=app[POOL],
        cache=app[CACHE],
        citizens=app[CITIZENS],
        keys=app[KEYRING],
        issuer=settings.issuer,
        leeway=settings.clock_skew,
        pg_timeout=settings.pg_timeout,
        dedupe_window=settings.scan_dedupe_ttl,
        clock=settings.clock,
    )
    app[POSTERS] = VenuePosters(
        pool=app[POOL],
        keys=app[KEYRING],
        issuer=settings.issuer,
        pg_timeout=settings.pg_timeout,
        clock=settings.clock,
        on_issue=app[CHECKINS].forget,
    )
    yield


async def _identity_provider(app: web.Application) -> AsyncIterator[None]:
    """Fetch the provider's discovery document and keys in the background, then keep them
    fresh (:class:`ProviderKeys`); not at start-up itself: dev mode's provider is this very
    service, which answers only once it listens."""
    provider = app[SIGN_IN].provider
    if provider is None:
        yield
        return
    await provider.open()
    every = app[SETTINGS].idp_jwks_refresh
    task = app[SUPERVISOR].start("idp-keys", lambda: provider.run(every=every))
    yield
    task.cancel()
    await _finish(task, timeout=5)
    await provider.close()


async def _drain(app: web.Application) -> AsyncIterator[None]:
    """Move scans into Postgres in the background; flush what is left on shutdown."""
    settings = app[SETTINGS]
    drain = make_drain(settings, app[POOL], app[CACHE])
    app[DRAIN] = drain
    if not settings.drain_enabled:
        yield
        return
    supervisor = app[SUPERVISOR]
    tasks = [
        supervisor.start("scan-drain", drain.run),
        supervisor.start("status-sync", drain.sync_statuses),
    ]
    yield
    drain.stop()
    for task in tasks:
        supervisor.retire(task)
    for task in tasks:
        await _finish(task, timeout=10)
    try:
        async with asyncio.timeout(10):
            await drain.ensure_groups()
            flushed = await drain.drain_all()
        log.info("drained %d scans on shutdown", flushed)
    except (StoreUnavailable, TimeoutError):
        log.warning("scan drain on shutdown incomplete; the stream keeps the rest")
    except Exception:  # a bug: logged, and the other resources still close
        log.exception("scan drain on shutdown failed; the stream keeps the rest")


RETENTION_STARTUP_WAIT = 30.0


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """Expire old scans before serving (bounded: a slow run is left to the schedule), then every
    ``retention_interval`` seconds in the background; cancelled on shutdown (a drop in flight
    rolls back and is redone next time)."""
    settings = app[SETTINGS]
    days, clock, timeout = settings.scan_retention_days, settings.clock, settings.pg_timeout
    periods, ttl = settings.retention_periods(), settings.policy().declaration_ttl
    try:
        async with asyncio.timeout(RETENTION_STARTUP_WAIT):
            await expire_logged(
                app[POOL],
                days=days,
                clock=clock,
                timeout=timeout,
                periods=periods,
                declaration_ttl=ttl,
                cache=app[CACHE],
            )
    except TimeoutError:
        log.warning("retention at start-up took too long; the scheduled runs go on")
    task = app[SUPERVISOR].start(
        "retention",
        lambda: run_retention(
            app[POOL],
            days=days,
            interval=settings.retention_interval,
            clock=clock,
            timeout=timeout,
            periods=periods,
            declaration_ttl=ttl,
            cache=app[CACHE],
        ),
    )
    yield
    task.cancel()
    await _finish(task, timeout=10)


async def _risk_places(app: web.Application) -> AsyncIterator[None]:
    """Risk-place jobs in the background: those a stopped process left unfinished resume at
    start-up; on shutdown they are cancelled (a cancelled one resumes at the next start)."""
    settings = app[SETTINGS]
    runner = RiskPlaceRunner(
        app[POOL],
        app[CACHE],
        policy=settings.policy(),
        chunk=settings.risk_chunk,
        timeout=settings.risk_timeout,
        # A job first drains the scans of its window; without this process's drain it waits
        # for the `passcode drain` process's (bounded, then a warning).
        drain=app[DRAIN] if settings.drain_enabled else None,
        supervisor=app[SUPERVISOR],
        clock=settings.clock,
    )
    app[RISK_PLACES] = runner
    runner.resume_unfinished()
    yield
    await runner.close(timeout=10)


async def _catalogs(app: web.Application) -> AsyncIterator[None]:
    """Load every registered catalog before serving, then follow changes made anywhere."""
    watcher = app[CATALOGS]
    await watcher.load_all()
    task = app[SUPERVISOR].start("catalog-watch", watcher.run)
    yield
    task.cancel()
    await _finish(task, timeout=5)


async def _finish(task: asyncio.Task[None], *, timeout: float) -> None:
    """Wait for a background task to end by itself, cancelling it only past the deadline."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())


def create_app(settings: Settings) -> web.Application:
    """The whole service, from settings alone; the CLI and the tests both call this."""
    if settings.database_url is None or settings.redis_url is None:
        raise SettingsError("database_url and redis_url must be set (the CLI starts embedded ones)")
    if settings.scan_retention_days < 1 or settings.retention_interval <= 0:
        raise SettingsError("scan_retention_days must be at least 1, retention_interval above 0")
    try:
        settings.retention_periods()
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    app = web.Application(client_max_size=settings.max_batch_body + 1024)
    app[SETTINGS] = settings
    app[SUPERVISOR] = Supervisor()  # every background task runs under it (GET /readyz shows them)
    shedder = LoadShedder(
        issue_inflight=settings.shed_issue_inflight,
        verify_inflight=settings.shed_verify_inflight,
        issue_lag=settings.shed_issue_lag,
        lag_interval=settings.shed_lag_interval,
        retry_after=settings.shed_retry_after,
    )
    app[SHEDDER] = shedder
    app.cleanup_ctx.extend([_postgres, _redis, _keyring, _services, _catalogs])
    app.cleanup_ctx.append(_identity_provider)
    app.cleanup_ctx.extend([_drain, shedder.watch_lag])
    app.cleanup_ctx.append(_retention)
    app.cleanup_ctx.append(_risk_places)
    app.cleanup_ctx.append(share_metrics)  # with several workers: see passcode.metrics
    for route in ROUTES:
        handler = route.handler
        if route.role is not None and route.action is not None:
            handler = requires(handler, route.role, route.action)
        add_route(app, route.method, route.path, handler, shed=route.shed)
    app[OPENAPI] = openapi_document()  # served by GET /openapi.json, an entry of the table
    add_unmatched(app)  # last: what no route above takes
    return app
