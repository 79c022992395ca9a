"""The command line: serve, migrate, keys, terminals, overrides, dev tokens, embedded servers."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from passcode import metrics, serving
from passcode.api.accesslog import AccessLogger
from passcode.api.schemas import CARD_REVOKE_REASONS
from passcode.app import create_app
from passcode.config import Settings, SettingsError
from passcode.domain import fields
from passcode.domain import poster as posters
from passcode.domain.cardsheet import render_card_png, render_sheet_svg
from passcode.domain.identity import mint_dev_token
from passcode.domain.model import Color, Role, StatusReason
from passcode.domain.policy import policy_json
from passcode.domain.privacy import Sealer
from passcode.domain.redact import RedactingFilter
from passcode.domain.sunsetreport import MAX_REPORT_BYTES, ReportError, summary, verify_report
from passcode.embedded import EmbeddedError, servers
from passcode.errors import PasscodeError
from passcode.logformat import JsonFormatter
from passcode.seed import seed
from passcode.service import access
from passcode.service import sunset as sunsets
from passcode.service.authority import override_status
from passcode.service.cards import CardRegistry, CardService, parse_serial
from passcode.service.catalogs import CatalogWatcher
from passcode.service.checkins import VenuePosters
from passcode.service.deadletters import list_dead_letters, replay_dead_letters
from passcode.service.places import (
    MAX_POLICY_BYTES,
    PlaceDirectory,
    set_place,
    set_policy,
)
from passcode.service.riskplaces import Progress, run_marking
from passcode.service.signing import KeyringHolder
from passcode.service.terminals import register_terminal, revoke_terminal
from passcode.service.trust import TrustHolder, b64, dcc_from_text, parse_kid
from passcode.store import pg, riskplaces
from passcode.store.cache import LayoutMismatchError
from passcode.store.keyring import ensure_key, load_keyring, load_or_create_ed25519, rotate
from passcode.store.venues import poster_font
from passcode.wiring import (
    DEV_IDP_KID,
    REDIS_STARTUP_WAIT,
    dev_idp_key_path,
    make_drain,
    open_cache,
    server_secret,
    until_answering,
    with_dev_discovery,
)
from passcode.workers.retention import expire_now
from passcode.workers.supervisor import Supervisor

log = logging.getLogger("passcode")


def _configure_logging(level: str, log_format: str = "text") -> None:
    """Logs to stderr, as text or one JSON object a line (``PASSCODE_LOG_FORMAT``), every
    handler behind a RedactingFilter (credentials, tokens, passes)."""
    if log_format not in {"text", "json"}:
        raise SettingsError(f"PASSCODE_LOG_FORMAT: {log_format!r} is neither text nor json")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
    logging.getLogger("pgserver").setLevel(logging.WARNING)


def _with_stores(
    settings: Settings,
    work: Callable[[Settings], Coroutine[Any, Any, int]],
    *,
    need_redis: bool = False,
) -> int:
    """Run ``work`` with the database (and Redis) the settings name, embedded when unset; with
    Redis only once it answers (a Redis given by URL may be restarting, loading its data)."""
    redis_url = settings.redis_url if need_redis else settings.redis_url or "unused"
    with servers(settings.data_dir, database_url=settings.database_url, redis_url=redis_url) as up:
        resolved = dataclasses.replace(
            settings, database_url=up.database_url, redis_url=up.redis_url
        )
        return asyncio.run(_once_answering(resolved, work) if need_redis else work(resolved))


async def _once_answering(
    settings: Settings, work: Callable[[Settings], Coroutine[Any, Any, int]]
) -> int:
    cache = open_cache(settings)
    try:
        await until_answering(cache, deadline=time.monotonic() + REDIS_STARTUP_WAIT)
    finally:
        await cache.close()
    return await work(settings)


async def _pool(settings: Settings) -> pg.Pool:
    assert settings.database_url is not None
    pool = await pg.create_pool(
        settings.database_url, timeout=settings.pg_timeout, min_size=1, max_size=2
    )
    await pg.migrate(pool)
    return pool


async def settle_gc(_app: web.Application) -> None:
    """After start-up: move what exists to the permanent generation, collect less often.

    The service allocates short-lived objects per request; with CPython's default thresholds
    the collector ran hundreds of times a second and its pauses showed in the p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


GC_GEN0_THRESHOLD = 20_000


def _run_server(settings: Settings, *, reuse_port: bool) -> None:
    """One serving process; SIGTERM stops accepting, answers what clients already sent (with
    ``Connection: close``), finishes requests, flushes, exits (:mod:`passcode.serving`)."""
    app = create_app(settings)
    app.on_startup.append(settle_gc)
    serving.run(
        app,
        loop_factory=new_event_loop,
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        access_log_class=AccessLogger,
        reuse_port=reuse_port,
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (a faster loop for the same code), else asyncio's own."""
    try:
        import uvloop  # noqa: PLC0415  # optional speed-up, checked at run time
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    with servers(
        settings.data_dir, database_url=settings.database_url, redis_url=settings.redis_url
    ) as up:
        resolved = with_dev_discovery(
            dataclasses.replace(settings, database_url=up.database_url, redis_url=up.redis_url)
        )
        log.info("starting %d worker(s): %r", args.workers, resolved)
        if args.workers == 1:
            _run_server(resolved, reuse_port=False)
            return 0
        if resolved.metrics_dir is not None:
            resolved.metrics_dir.mkdir(parents=True, exist_ok=True)
            metrics.clear(resolved.metrics_dir)
            return _run_workers(resolved, args.workers)
        with tempfile.TemporaryDirectory(prefix="passcode-metrics-") as directory:
            return _run_workers(
                dataclasses.replace(resolved, metrics_dir=Path(directory)), args.workers
            )


def _run_workers(settings: Settings, count: int) -> int:
    """N processes sharing the port (SO_REUSEPORT): the kernel spreads connections; they share
    their metrics through ``settings.metrics_dir``, emptied for this run (passcode.metrics)."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings,), name=f"passcode-{n}")
        for n in range(count)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return max((w.exitcode or 0) for w in workers)


def _worker_main(settings: Settings) -> None:
    _configure_logging(settings.log_level, settings.log_format)
    _run_server(settings, reuse_port=True)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def work(s: Settings) -> int:
        pool = await _pool(s)
        await pool.close()
        print("migrations applied")
        return 0

    return _with_stores(settings, work)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    now = int(settings.clock.now())
    if args.keys_command == "init":
        ensure_key(settings.key_dir, now=now)
    elif args.keys_command == "rotate":
        ensure_key(settings.key_dir, now=now)
        lead = args.lead if args.lead is not None else settings.key_publish_lead
        key = rotate(settings.key_dir, now=now, publish_lead=lead)
        print(f"added key {key.kid.hex()}: published now, signs from {_iso(key.activates_at)}")
    keyring = load_keyring(settings.key_dir)
    for key in keyring.keys:
        state = (
            "signing"
            if key is keyring.signer(now)
            else ("upcoming" if key.activates_at > now else "retired/verify-only")
        )
        print(f"{key.kid.hex()}  activates {_iso(key.activates_at)}  {state}")
    return 0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def cmd_dev_token(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.dev_mode:
        print("dev-token needs PASSCODE_DEV_MODE=1", file=sys.stderr)
        return 2
    key = load_or_create_ed25519(dev_idp_key_path(settings))
    print(
        mint_dev_token(
            key,
            kid=DEV_IDP_KID,
            issuer=settings.idp_issuer,
            audience=settings.idp_audience,
            user_id=args.user_id,
            name=args.name,
            now=int(settings.clock.now()),
            ttl=args.ttl,
        )
    )
    return 0


_T = TypeVar("_T")


class _Refused(Exception):
    """A command-line value its kind's rule refuses; already reported on stderr."""


def _checked(rule: Callable[[str], _T], value: str, flag: str) -> _T:
    """``value`` through the rule the API applies to the same field (passcode.domain.fields)."""
    try:
        return rule(value)
    except fields.FieldError as exc:
        print(f"passcode: {flag} {exc}", file=sys.stderr)
        raise _Refused from exc


def _cli_actor() -> str:
    """Who the audit log names for a change made through the CLI: the operator's login."""
    return f"cli:{os.environ.get('USER', 'unknown')}"


def cmd_terminal(settings: Settings, args: argparse.Namespace) -> int:
    place = ""
    if args.terminal_command == "add":
        # the rule the API's POST /v1/admin/terminals applies
        place = _checked(fields.place, args.place, "--place")

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        try:
            if args.terminal_command == "add":
                created = await register_terminal(
                    pool, place, actor=_cli_actor(), timeout=s.pg_timeout
                )
                print(f"terminal {created.id} at {created.place!r}")
                print(f"key (shown once, store it on the terminal): {created.key}")
                return 0
            found = await revoke_terminal(
                pool, uuid.UUID(args.terminal_id), actor=_cli_actor(), timeout=s.pg_timeout
            )
            print("revoked" if found else "no such terminal")
            return 0 if found else 1
        finally:
            await pool.close()

    return _with_stores(settings, work)


def cmd_admin_key(settings: Settings, args: argparse.Namespace) -> int:
    """Role-scoped admin credentials: add (key printed once), list, revoke."""
    name = _checked(fields.actor, args.name, "--name") if args.admin_command == "add" else ""

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        try:
            if args.admin_command == "add":
                roles = frozenset(Role(r) for r in args.role)
                made, key = await access.add_credential(
                    pool, name, roles, actor=_cli_actor(), timeout=s.pg_timeout
                )
                print(f"admin credential {made.id} {made.name!r}: {', '.join(sorted(roles))}")
                print(f"key (shown once): {key}")
                return 0
            if args.admin_command == "list":
                for c in await access.list_credentials(pool, timeout=s.pg_timeout):
                    state = f"revoked {_iso_dt(c.revoked_at)}" if c.revoked_at else "active"
                    print(f"{c.id}  {c.name!r}  {','.join(sorted(c.roles))}  {state}")
                return 0
            found = await access.revoke_credential(
                pool, uuid.UUID(args.credential_id), actor=_cli_actor(), timeout=s.pg_timeout
            )
            print("revoked" if found else "no such credential")
            return 0 if found else 1
        finally:
            await pool.close()

    return _with_stores(settings, work)


def _iso_dt(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def cmd_override(settings: Settings, args: argparse.Namespace) -> int:
    user_id = _checked(fields.user_id, args.user_id, "user_id")
    until = _checked(fields.parse_time, args.until, "--until") if args.until else None

    async def work(s: Settings) -> int:
        assert s.redis_url is not None
        pool = await _pool(s)
        cache = open_cache(s)
        try:
            await cache.check_layout()
            override_id, live = await override_status(
                pool=pool,
                cache=cache,
                sealer=Sealer(server_secret(s)),
                policy=s.policy(),
                idp_issuer=s.idp_issuer,
                user_id=user_id,
                color=Color(args.color),
                reason=StatusReason(args.reason),
                valid_from=None,
                valid_until=until,
                created_by=_cli_actor(),
                clock=s.clock,
                timeout=s.pg_timeout,
            )
        finally:
            await cache.close()
            await pool.close()
        color = live.color.value if live.color else "none (no valid declaration)"
        print(f"override {override_id} recorded; status now {color}, version {live.version}")
        return 0

    return _with_stores(settings, work, need_redis=True)


def cmd_card(settings: Settings, args: argparse.Namespace) -> int:
    """Printed cards (纸质码): issue one (its PNG and A6 SVG sheet written), or revoke one by
    its serial; audited with the operator's login as actor."""
    if args.card_command == "issue":
        user_id = _checked(fields.user_id, args.user_id, "--user-id")
        name = _checked(lambda v: fields.line(v, max_length=100), args.name, "--name")
        serial = b""
    else:
        user_id = name = ""
        try:
            serial = parse_serial(args.serial)
        except ValueError as exc:
            print(f"passcode: serial {exc}", file=sys.stderr)
            raise _Refused from exc

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        cache = open_cache(s)
        try:
            now = int(s.clock.now())
            keys = KeyringHolder(
                s.key_dir, ensure_key(s.key_dir, now=now), retire_after=s.pass_ttl + s.clock_skew
            )
            watcher = CatalogWatcher(pool, timeout=s.pg_timeout)
            service = CardService(
                pool=pool,
                cache=cache,
                sealer=Sealer(server_secret(s)),
                keys=keys,
                policy=s.policy(),
                issuer=s.issuer,
                idp_issuer=s.idp_issuer,
                default_days=s.card_days,
                catalogs=watcher,
                registry=CardRegistry(pool, timeout=s.pg_timeout, clock=s.clock),
                pg_timeout=s.pg_timeout,
                clock=s.clock,
            )
            if args.card_command == "revoke":
                card, changed = await service.revoke(serial, reason=args.reason, actor=_cli_actor())
                state = "revoked" if changed else "already revoked"
                when = _iso_dt(card.revoked_at or card.issued_at)
                print(f"card {card.serial.hex()} {state} at {when}")
                return 0
            issued = await service.issue(
                user_id=user_id, name=name, days=args.days, actor=_cli_actor()
            )
        finally:
            await cache.close()
            await pool.close()
        if args.png is not None:
            args.png.write_bytes(render_card_png(issued.code))
        if args.sheet is not None:
            args.sheet.write_text(
                render_sheet_svg(
                    issued.code,
                    holder=issued.holder,
                    serial=issued.serial,
                    issued_at=issued.issued_at,
                    expires_at=issued.expires_at,
                ),
                encoding="utf-8",
            )
        print(f"card {issued.serial.hex()} for {issued.holder}, until {_iso_dt(issued.expires_at)}")
        return 0

    return _with_stores(settings, work, need_redis=True)


def cmd_drain(settings: Settings, args: argparse.Namespace) -> int:
    """A process that only drains the scan log, so API processes can run with it off."""

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        cache = open_cache(s)
        try:
            await cache.check_layout()
            drain = make_drain(s, pool, cache)
            supervisor = Supervisor()
            tasks = [
                supervisor.start("scan-drain", drain.run),
                supervisor.start("status-sync", drain.sync_statuses),
            ]

            def stop() -> None:
                drain.stop()
                for task in tasks:
                    supervisor.retire(task)

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            log.info("draining scans from %d shards", s.scan_shards)
            await asyncio.wait(tasks)
            async with asyncio.timeout(30):
                flushed = await drain.drain_all()
            log.info(
                "stopped; %d scans stored in all, %d in the final flush", drain.stored, flushed
            )
        finally:
            await cache.close()
            await pool.close()
        return 0

    return _with_stores(settings, work, need_redis=True)


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    """Purge every kind of record past its retention period now (the service also does it
    every PASSCODE_RETENTION_INTERVAL); prints what went, per kind."""

    async def work(s: Settings) -> int:
        periods = s.retention_periods()
        pool = await _pool(s)
        cache = open_cache(s)
        try:
            report = await expire_now(
                pool,
                days=s.scan_retention_days,
                clock=s.clock,
                timeout=s.pg_timeout,
                periods=periods,
                declaration_ttl=s.policy().declaration_ttl,
                cache=cache,
            )
        finally:
            await cache.close()
            await pool.close()
        print(report.summary())
        for line in report.lines():
            print(line)
        return 0

    return _with_stores(settings, work, need_redis=True)


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """Scan entries the drain could not store: list them, or replay those storable now."""

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        try:
            if args.dead_letters_command == "replay":
                report = await replay_dead_letters(
                    pool,
                    actor=_cli_actor(),
                    limit=args.limit,
                    dedupe_window=s.scan_dedupe_ttl,
                    timeout=s.pg_timeout,
                )
                print(
                    f"replayed {report.replayed}, still failing {report.failed},"
                    f" {report.remaining} dead letter(s) left"
                )
                return 1 if report.failed else 0
            page = await list_dead_letters(
                pool,
                actor=_cli_actor(),
                after_id=args.cursor,
                limit=args.limit,
                timeout=s.pg_timeout,
            )
            print(f"{page.total} dead letter(s)")
            for kept in page.letters:
                fields = [part.decode("utf-8", "backslashreplace") for part in kept.letter.fields]
                print(
                    f"{kept.id}  {_iso_dt(kept.first_seen)}  {kept.letter.stream}"
                    f" {kept.letter.entry_id}  {kept.letter.reason}\n    fields: {fields}"
                )
            if len(page.letters) == args.limit:
                print(f"more: --cursor {page.letters[-1].id}")
            return 0
        finally:
            await pool.close()

    return _with_stores(settings, work)


def cmd_risk_place(settings: Settings, args: argparse.Namespace) -> int:
    """Run every unfinished risk-place marking (pending, running, failed) in the foreground."""

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        cache = open_cache(s)
        failed = 0

        async def show(progress: Progress) -> None:
            print(
                f"  {progress.marking_id} {progress.place!r}:"
                f" {progress.processed}/{progress.affected}",
                flush=True,
            )

        try:
            await cache.check_layout()
            states = (riskplaces.PENDING, riskplaces.RUNNING, riskplaces.FAILED)
            found = await riskplaces.unfinished(pool, states=states, timeout=s.pg_timeout)
            print(f"{len(found)} unfinished risk place marking(s)")
            for marking_id in found:
                report = await run_marking(
                    pool,
                    cache,
                    marking_id,
                    policy=s.policy(),
                    chunk=s.risk_chunk,
                    timeout=s.risk_timeout,
                    states=states,
                    on_progress=show,
                    clock=s.clock,
                )
                failed += report.state != riskplaces.DONE
                print(
                    f"{marking_id}: {report.state}, {report.processed}/{report.affected}"
                    f" subjects, {report.exposures} exposures, {report.rows_written} statuses"
                    f" changed, {report.redis_writes} redis writes, {report.seconds:.2f} s"
                )
        finally:
            await cache.close()
            await pool.close()
        return 1 if failed else 0

    return _with_stores(settings, work, need_redis=True)


def _read_text(path: Path, limit: int) -> str:
    """An import file as UTF-8 text, at most ``limit`` bytes (the API's body limit)."""
    with path.open("rb") as file:
        raw = file.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes (PASSCODE_MAX_TRUST_BODY)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text") from exc


def _read_json_file(path: Path, limit: int) -> Any:
    try:
        return json.loads(_read_text(path, limit))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc


def cmd_trust(settings: Settings, args: argparse.Namespace) -> int:
    """The trust store of foreign signers: import, list, remove. Changes are audited as the
    CLI's user and reach every running replica within about a second."""
    limit = settings.max_trust_body

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        try:
            holder = TrustHolder(pool, timeout=s.pg_timeout)
            if args.trust_command == "import-dcc":
                source, signers = dcc_from_text(_read_text(args.file, limit))
                written = await holder.import_dcc(
                    signers, source, actor=_cli_actor(), replace=args.replace
                )
                print(
                    f"{source.value}: {written.added} added, {written.updated} updated,"
                    f" {written.removed} removed; trust store version {written.version}"
                )
                return 0
            if args.trust_command == "import-shc":
                imported = await holder.import_shc(
                    args.iss,
                    _read_json_file(args.jwks, limit),
                    [_read_json_file(crl, limit) for crl in args.crl],
                    actor=_cli_actor(),
                    name=_checked(_issuer_name, args.name, "--name") if args.name else None,
                )
                state = "added" if imported.new else "replaced"
                print(
                    f"{args.iss} {state}: {imported.keys} keys, {imported.crls} CRLs;"
                    f" trust store version {imported.version}"
                )
                return 0
            if args.trust_command == "list":
                stored = await holder.stored()
                print(f"trust store version {stored.version}")
                for signer in stored.signers:
                    when = _iso_dt(signer.imported_at) if signer.imported_at else "-"
                    print(
                        f"dcc  {b64(signer.kid)}  {signer.country or '-'}  {signer.source}"
                        f"  {when}  {signer.imported_by}"
                    )
                for issuer in stored.issuers:
                    when = _iso_dt(issuer.imported_at) if issuer.imported_at else "-"
                    keys = len(issuer.jwks.get("keys", []))
                    print(
                        f"shc  {issuer.iss}  {keys} keys  {len(issuer.crls)} CRLs"
                        f"  {when}  {issuer.imported_by}"
                    )
                return 0
            if args.kid is not None:
                found = await holder.remove_dcc(parse_kid(args.kid), actor=_cli_actor())
            else:
                found = await holder.remove_shc(args.iss, actor=_cli_actor())
            print("removed" if found else "not in the trust store")
            return 0 if found else 1
        finally:
            await pool.close()

    return _with_stores(settings, work)


def cmd_place(settings: Settings, args: argparse.Namespace) -> int:
    """Places and their policies: describe a place (as an operator would), set a type's or a
    place's policy (as a health officer would), show what a place is judged by. Changes are
    audited as the CLI's user and reach every running replica within about a second."""
    policy_file: Path | None = None
    target = ""
    if args.place_command == "policy":
        names = list(args.target)
        if (args.type is None and len(names) != 2) or (args.type is not None and len(names) != 1):
            print(
                "passcode: place policy takes <place> <file.json> or --type T <file.json>",
                file=sys.stderr,
            )
            raise _Refused
        policy_file = Path(names[-1])
        target = args.type if args.type is not None else names[0]

    async def work(s: Settings) -> int:
        pool = await _pool(s)
        try:
            directory = PlaceDirectory(
                pool, CatalogWatcher(pool, timeout=s.pg_timeout), timeout=s.pg_timeout
            )
            if args.place_command == "poster":
                return await _poster(s, pool, args)
            if args.place_command == "set":
                created = await set_place(
                    directory, args.place, type_=args.type, name=args.name, actor=_cli_actor()
                )
                print(f"place {args.place.strip()!r} {'created' if created else 'updated'}")
                return 0
            if args.place_command == "policy":
                assert policy_file is not None
                policy = _read_json_file(policy_file, MAX_POLICY_BYTES)
                scope = "type" if args.type is not None else "place"
                stored = await set_policy(
                    directory, scope=scope, target=target, policy=policy, actor=_cli_actor()
                )
                print(f"{scope} {target.strip()!r}: policy version {stored.version}")
                return 0
            await directory.reload()
            place = args.place.strip()
            info = directory.info(place)
            resolved = directory.resolve(place)
            print(
                json.dumps(
                    {
                        "place": place,
                        "name": None if info is None else info[0],
                        "type": None if info is None else info[1],
                        "policy": {
                            "source": resolved.source,
                            "version": resolved.policy.version,
                            **policy_json(resolved.policy),
                        },
                    },
                    ensure_ascii=False,
                    indent=2,
                )
            )
            return 0
        finally:
            await pool.close()

    return _with_stores(settings, work)


async def _poster(s: Settings, pool: pg.Pool, args: argparse.Namespace) -> int:
    """Issue a place's poster (revoking its old one, audited as the CLI's user) and write its
    PNG and SVG, as POST /v1/admin/places/{place}/poster does."""
    now = int(s.clock.now())
    keys = KeyringHolder(
        s.key_dir, ensure_key(s.key_dir, now=now), retire_after=s.pass_ttl + s.clock_skew
    )
    service = VenuePosters(pool=pool, keys=keys, issuer=s.issuer, pg_timeout=s.pg_timeout)
    venue = await service.issue(args.place, actor=_cli_actor())
    text = posters.PosterText(venue.name, venue.issue, venue.expires_at)
    if args.png is not None:
        args.png.write_bytes(posters.render_png(venue.code, text, font=poster_font()))
    if args.svg is not None:
        args.svg.write_text(posters.render_svg(venue.code, text), encoding="utf-8")
    until = _iso_dt(venue.expires_at)
    print(f"place {venue.place!r}: poster issue {venue.issue}, valid until {until}")
    print(venue.code)
    return 0


def _issuer_name(value: str) -> str:
    return fields.line(value, max_length=fields.MAX_PLACE)


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    async def work(s: Settings) -> int:
        report = await seed(
            s,
            citizens=args.citizens,
            terminals=args.terminals,
            colors=(1 - args.yellow - args.red, args.yellow, args.red),
            out=args.out,
            run_id=args.run,
        )
        print(report.summary())
        return 0

    return _with_stores(settings, work, need_redis=True)


def cmd_sunset(settings: Settings, args: argparse.Namespace) -> int:
    """Retire the deployment (see :mod:`passcode.service.sunset`), or ``verify`` a report."""
    if args.sunset_command == "verify":
        return _sunset_verify(settings, args)

    async def work(s: Settings) -> int:
        deployment = sunsets.deployment_name(s.deployment_name, s.database_url)
        keyring, actor = load_keyring(s.key_dir), _cli_actor()
        pool = await _pool(s)
        cache = open_cache(s)
        try:
            await sunsets.confirm(
                pool,
                keyring=keyring,
                deployment=deployment,
                confirmation=args.confirm_deployment,
                actor=actor,
                clock=s.clock,
                timeout=s.pg_timeout,
            )
            stamp = datetime.fromtimestamp(s.clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
            path: Path = args.report or Path(f"sunset-report-{deployment}-{stamp}.json")
            try:  # made before anything goes: a report that cannot be written stops the sunset
                handle = path.open("xb")
            except OSError as exc:
                print(
                    f"passcode: report file {path}: {exc.strerror}; nothing was changed",
                    file=sys.stderr,
                )
                return 2
            with handle:
                await cache.check_layout()
                drained = await make_drain(s, pool, cache).drain_all()
                done = await sunsets.sunset(
                    pool,
                    cache,
                    keyring=keyring,
                    deployment=deployment,
                    confirmation=args.confirm_deployment,
                    issuer=s.issuer,
                    actor=actor,
                    clock=s.clock,
                    timeout=args.timeout,
                )
                handle.write(done.signed)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            await cache.close()
            await pool.close()
        for line in summary(done.report):
            print(line)
        print(f"  ({drained} scans still in Redis were stored first, and are counted above)")
        print(f"signed report written to {path}")
        return 0

    return _with_stores(settings, work, need_redis=True)


def _sunset_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Check a report against a saved ``/v1/keys`` document (or URL), else the key folder."""
    try:
        raw = sunsets.read_capped(args.report_file, MAX_REPORT_BYTES)
        if args.jwks:
            keys = asyncio.run(sunsets.key_set(args.jwks, timeout=settings.idp_fetch_timeout))
        else:
            keys = sunsets.keyring_keys(load_keyring(settings.key_dir))
        verified = verify_report(raw, keys)
    except ReportError as exc:
        print(f"passcode: the report does not verify: {exc}", file=sys.stderr)
        return 1
    for line in summary(verified.report):
        print(line)
    print(f"the signature verifies: key {verified.kid.hex()}")
    return 0


def cmd_embedded(settings: Settings, args: argparse.Namespace) -> int:
    """Run a command with embedded servers (for those URLs not set), their URLs in its env."""
    command = [c for c in args.argv if c != "--"]
    if not command:
        print("usage: passcode embedded -- <command> [args…]", file=sys.stderr)
        return 2
    with servers(
        settings.data_dir, database_url=settings.database_url, redis_url=settings.redis_url
    ) as up:
        env = dict(os.environ)
        env["PASSCODE_DATABASE_URL"] = up.database_url or ""
        env["PASSCODE_REDIS_URL"] = up.redis_url or ""
        return subprocess.call(command, env=env)  # noqa: S603  # the operator's own command


def _scan_log_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``retention`` and ``dead-letters``: the scan log's upkeep."""
    ret = sub.add_parser("retention", help="retention of every kind (PASSCODE_*_RETENTION_*)")
    ret_sub = ret.add_subparsers(dest="retention_command", required=True)
    ret_sub.add_parser("run", help="purge every kind of record past its retention period now")
    dead = sub.add_parser("dead-letters", help="scan entries the drain could not store")
    dead_sub = dead.add_subparsers(dest="dead_letters_command", required=True)
    dead_list = dead_sub.add_parser("list", help="list them with the reason, oldest first")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.add_argument("--cursor", type=int, default=0, help="list those after this id")
    dead_replay = dead_sub.add_parser("replay", help="store those that can be stored now")
    dead_replay.add_argument("--limit", type=int, default=1_000_000, help="at most this many")


def _trust_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """passcode trust: the foreign signers operators import (DCC signers, SHC issuers)."""
    trust = sub.add_parser("trust", help="the trust store of foreign signers (DCC, SHC)")
    trust_sub = trust.add_subparsers(dest="trust_command", required=True)
    dcc = trust_sub.add_parser(
        "import-dcc",
        help="import DCC signer certificates: an EU gateway trust list (JSON) or base64 DER"
        " certificates (one a line, or a JSON array)",
    )
    dcc.add_argument("file", type=Path)
    dcc.add_argument("--replace", action="store_true", help="trust only these signers")
    shc = trust_sub.add_parser("import-shc", help="trust a SMART Health Card issuer")
    shc.add_argument("--iss", required=True, help="the issuer's URL (https, no trailing /)")
    shc.add_argument("--jwks", required=True, type=Path, help="its jwks.json")
    shc.add_argument(
        "--crl", action="append", default=[], type=Path, help="a CRL file (repeat for several)"
    )
    shc.add_argument("--name", help="the issuer's display name")
    trust_sub.add_parser("list", help="list trusted signers and issuers")
    remove = trust_sub.add_parser("remove", help="stop trusting a signer or an issuer")
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--kid", help="a DCC signer's kid (base64 or base64url)")
    which.add_argument("--iss", help="an SHC issuer's URL")


def _place_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``passcode place set|policy|show|poster``."""
    place = sub.add_parser("place", help="places (场所) and their policies")
    place_sub = place.add_subparsers(dest="place_command", required=True)
    put = place_sub.add_parser("set", help="create or describe a place")
    put.add_argument("place", help="the place, as its terminals carry it")
    put.add_argument("--type", required=True, help="its type (metro, hospital, mall, …)")
    put.add_argument("--name", required=True, help="its name")
    pol = place_sub.add_parser(
        "policy",
        help="set a place's (<place> <file.json>) or a type's (--type T <file.json>) policy",
    )
    pol.add_argument("--type", help="set this place type's policy instead of one place's")
    pol.add_argument("target", nargs="+", help="[place] file.json")
    show = place_sub.add_parser("show", help="a place and the policy its scans are judged by")
    show.add_argument("place")
    poster = place_sub.add_parser(
        "poster", help="issue the place's poster (场所码; revokes the old one), write PNG/SVG"
    )
    poster.add_argument("place")
    poster.add_argument("--png", type=Path, help="write the A4 poster here (PNG, 150 dpi)")
    poster.add_argument("--svg", type=Path, help="write the A4 poster here (SVG)")


def _card_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``passcode card issue|revoke``."""
    card = sub.add_parser("card", help="printed cards (纸质码) for people without a smartphone")
    card_sub = card.add_subparsers(dest="card_command", required=True)
    card_issue = card_sub.add_parser("issue", help="issue a card; write its PNG and SVG sheet")
    card_issue.add_argument("--user-id", required=True, help="the identity provider's user id")
    card_issue.add_argument("--name", required=True, help="the person's name (stored masked)")
    card_issue.add_argument("--days", type=int, help="lifetime (default PASSCODE_CARD_DAYS)")
    card_issue.add_argument("--png", type=Path, help="write the card's QR here (PNG)")
    card_issue.add_argument("--sheet", type=Path, help="write the printable A6 sheet here (SVG)")
    card_rev = card_sub.add_parser("revoke", help="revoke a lost card by its serial")
    card_rev.add_argument("serial", help="the card's serial (hex)")
    card_rev.add_argument("--reason", default="lost", choices=CARD_REVOKE_REASONS)


def _sunset_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sunset`` (run) and ``sunset verify``."""
    sun = sub.add_parser(
        "sunset",
        help="retire the deployment: destroy every citizen record, keep the audit log and"
        " counts per day and place type, write a signed report",
    )
    sun.add_argument(
        "--confirm-deployment",
        metavar="NAME",
        help="the deployment's name (PASSCODE_DEPLOYMENT_NAME, else the database's): required",
    )
    sun.add_argument("--report", type=Path, help="where to write the signed report (a new file)")
    sun.add_argument("--timeout", type=float, default=600.0, help="s per statement")
    sun_sub = sun.add_subparsers(dest="sunset_command")
    check = sun_sub.add_parser("verify", help="check a sunset report's signature")
    check.add_argument("report_file", type=Path)
    check.add_argument("--jwks", help="a saved /v1/keys document, or its URL (default: key folder)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="passcode", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (embedded servers when URLs are unset)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    sub.add_parser("migrate", help="apply database migrations")
    keys = sub.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("init", help="create the first key if there is none")
    keys_sub.add_parser("list", help="list keys")
    rot = keys_sub.add_parser("rotate", help="add the next key (published before it signs)")
    rot.add_argument("--lead", type=int, help="seconds between publishing and signing")
    token = sub.add_parser("dev-token", help="print an ID token from the dev identity provider")
    token.add_argument("user_id")
    token.add_argument("--name", required=True, help="full name (only its mask is ever stored)")
    token.add_argument("--ttl", type=int, default=24 * 3600)
    term = sub.add_parser("terminal", help="scanner terminals")
    term_sub = term.add_subparsers(dest="terminal_command", required=True)
    add = term_sub.add_parser("add", help="register a terminal and print its key once")
    add.add_argument("--place", required=True)
    rev = term_sub.add_parser("revoke", help="revoke a terminal")
    rev.add_argument("terminal_id")
    adm = sub.add_parser("admin-key", help="admin credentials with roles")
    adm_sub = adm.add_subparsers(dest="admin_command", required=True)
    adm_add = adm_sub.add_parser("add", help="create a credential and print its key once")
    adm_add.add_argument("--name", required=True, help="who holds it (recorded in the audit log)")
    adm_add.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="a role it carries (repeat for several)",
    )
    adm_sub.add_parser("list", help="list credentials (never their keys)")
    adm_rev = adm_sub.add_parser("revoke", help="revoke a credential")
    adm_rev.add_argument("credential_id")
    over = sub.add_parser("override", help="set a citizen's colour by ruling")
    over.add_argument("user_id")
    over.add_argument("color", choices=[c.value for c in Color])
    over.add_argument("--reason", required=True, choices=[r.value for r in StatusReason])
    over.add_argument("--until", help="RFC 3339 end of the ruling (default: open-ended)")
    seed_cmd = sub.add_parser(
        "seed", help="create load-test citizens and terminals at COPY speed (see loadtest/)"
    )
    seed_cmd.add_argument("--citizens", type=int, default=100_000)
    seed_cmd.add_argument("--terminals", type=int, default=200)
    seed_cmd.add_argument("--yellow", type=float, default=0.05, help="share of yellow citizens")
    seed_cmd.add_argument("--red", type=float, default=0.02, help="share of red citizens")
    seed_cmd.add_argument("--run", help="run id in the user ids load-<run>-<n> (default: random)")
    seed_cmd.add_argument(
        "--out",
        type=Path,
        default=Path("loadtest/data/seed.json"),
        help="where to write what the Locust scenarios read (holds terminal keys)",
    )
    _card_parsers(sub)
    sub.add_parser("drain", help="only drain the scan log into PostgreSQL (until SIGTERM)")
    risk = sub.add_parser("risk-place", help="risk place markings (时空伴随)")
    risk_sub = risk.add_subparsers(dest="risk_command", required=True)
    risk_sub.add_parser(
        "resume", help="run every unfinished marking (pending, running, failed), with progress"
    )
    for add_parsers in (_scan_log_parsers, _trust_parsers, _place_parsers, _sunset_parsers):
        add_parsers(sub)
    emb = sub.add_parser("embedded", help="run a command with embedded PostgreSQL and Redis")
    emb.add_argument("argv", nargs=argparse.REMAINDER, help="the command to run")
    return top


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "keys": cmd_keys,
    "dev-token": cmd_dev_token,
    "terminal": cmd_terminal,
    "override": cmd_override,
    "admin-key": cmd_admin_key,
    "seed": cmd_seed,
    "embedded": cmd_embedded,
    "card": cmd_card,
    "drain": cmd_drain,
    "risk-place": cmd_risk_place,
    "retention": cmd_retention,
    "dead-letters": cmd_dead_letters,
    "trust": cmd_trust,
    "place": cmd_place,
    "sunset": cmd_sunset,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        _configure_logging(settings.log_level, settings.log_format)
        return COMMANDS[args.command](settings, args)
    except _Refused:
        return 2
    except (SettingsError, EmbeddedError, PasscodeError, LayoutMismatchError, ValueError) as exc:
        print(f"passcode: {exc}", file=sys.stderr)
        return 2
