"""Settings: one frozen dataclass read from ``PASSCODE_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.retention import RetentionPeriods
from passcode.domain.rules import Policy

_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


_NOT_FROM_ENV = frozenset({"clock"})
_PERIODS = RetentionPeriods()  # each retention default, with its reason in its docstring


class SettingsError(ValueError):
    """An environment variable is missing or malformed."""


def mask_url(url: str | None) -> str | None:
    """A DSN with its password replaced, safe for logs and ``repr``."""
    if url is None:
        return None
    parts = urlsplit(url)
    # libpq and asyncpg also read the password from the query string (?password=...).
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to run; built by :meth:`from_env` or by tests."""

    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    # Seed nodes (host:port) of a Redis Cluster; set, the service speaks cluster, and
    # redis_url (if given) only lends its credentials: it defaults to the first seed.
    redis_cluster_nodes: tuple[str, ...] = ()
    # Replicas every Redis pipeline waits for (WAIT) before anyone hears back: -1 is 1 on a
    # cluster (an acknowledged scan survives its primary's death) and 0 on a single Redis.
    redis_wait_replicas: int = -1
    redis_wait_timeout_ms: int = 100  # within the pipeline's deadline (redis_timeout)
    redis_prefix: str = "pc"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".data")
    keys_dir: Path | None = None
    secret: str | None = field(default=None, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    dev_mode: bool = False
    issuer: str = "passcode"
    idp_jwks_file: Path | None = None
    idp_issuer: str = "passcode-dev-idp"
    idp_audience: str = "passcode"  # also the pages' OAuth client id (an ID token's aud)
    # The provider's OpenID Connect discovery document: its keys are fetched from its jwks_uri
    # and again on an unknown kid (passcode.service.oidc). In dev mode `passcode serve` points
    # it at the service's own /dev-idp/ when unset.
    idp_discovery_url: str | None = None
    idp_fetch_timeout: float = 5.0  # s: deadline of one discovery + JWKS fetch
    idp_jwks_min_interval: float = 30.0  # s between fetches an unknown kid may cause
    idp_jwks_refresh: float = 3600.0  # s between routine fetches of the provider's keys
    # Where the provider sends a signed-in page back (the first is the one /v1/web-config
    # names); the dev provider accepts these only. Unset: the /app/ of the request's origin.
    idp_redirect_uris: tuple[str, ...] = ()
    pass_ttl: int = 60
    # A folder of EU DCC value sets (the eu-dcc-valuesets layout) that place policies' rules
    # read, over the built-in few (test types, results, disease); unset: the built-in only.
    value_sets_dir: Path | None = None
    card_days: int = 180  # a printed card's default lifetime; at most 365 (a year)
    # s: DELETE /v1/me takes only an ID token issued this recently (a stolen old one cannot)
    erasure_signin_window: int = 300
    refresh_margin: int = 15
    clock_skew: int = 30
    key_publish_lead: int = 300
    key_reload_interval: float = 10.0
    declaration_ttl: int = 7 * 24 * 3600
    fever_threshold: float = 37.3
    risk_regions: tuple[str, ...] = ()
    pg_timeout: float = 2.0
    pg_pool_min: int = 2
    pg_pool_max: int = 10
    pg_fallback_concurrency: int = 8
    redis_timeout: float = 0.5
    redis_max_connections: int = 64
    scan_shards: int = 16
    scan_dedupe_ttl: int = 2 * 24 * 3600
    replay_window: int = 300  # s: a pass scanned at another place within it is flagged
    scan_retention_days: int = 28  # scans older than this are deleted (whole day partitions)
    # The name `passcode sunset --confirm-deployment` must repeat; unset: the database's name.
    deployment_name: str = ""
    retention_interval: float = 3600.0  # s between the service's retention runs
    # Retention of every other kind (passcode.domain.retention.RetentionPeriods says why each
    # default is what it is); scan dead letters go after scan_retention_days.
    declaration_retention_days: int = _PERIODS.declaration_days  # after it stopped deciding
    ruling_retention_days: int = _PERIODS.ruling_days  # overrides, exposures: after they end
    test_result_retention_days: int = _PERIODS.test_result_days  # after the test
    card_retention_days: int = _PERIODS.card_days  # after the card expired
    idempotency_retention_hours: int = _PERIODS.idempotency_hours  # declarations' keys
    audit_retention_days: int = _PERIODS.audit_days  # whole months past it go
    subject_grace_hours: int = _PERIODS.subject_grace_hours  # an empty subject's creation
    drain_batch: int = 5000
    drain_interval: float = 0.2
    drain_claim_idle: float = 30.0
    drain_enabled: bool = True
    risk_chunk: int = 2000  # subjects per transaction of a risk-place job
    risk_timeout: float = 30.0  # s: deadline of each query of a risk-place job
    terminal_cache_ttl: float = 5.0
    authenticated_cache: int = 100_000
    terminal_rate: float = 20.0
    terminal_burst: float = 600.0
    citizen_rate: float = 5.0
    citizen_burst: float = 20.0
    shed_issue_inflight: int = 256
    shed_verify_inflight: int = 1024
    shed_issue_lag: float = 0.25
    shed_lag_interval: float = 0.05
    shed_retry_after: int = 1
    max_body: int = 4096
    # One verify: a code up to a QR code's 4,296 characters (an EU DCC with several entries,
    # a SMART Health Card's numeric text) with its scan id and time.
    max_verify_body: int = 8192
    max_batch_body: int = 512 * 1024
    max_csv_body: int = 8 * 1024 * 1024  # bytes of one test-results upload
    max_csv_rows: int = 100_000  # records in one test-results upload
    max_trust_body: int = 4 * 1024 * 1024  # bytes of one trust-store import (EU list: ~1 MB)
    body_timeout: float = 30.0  # s to receive a whole request body, else 408
    header_timeout: float = 10.0  # s from a request's first byte to its last header, else 408
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object a line (passcode.logformat)
    access_log: bool = True
    # Where the workers of `passcode serve --workers N` share their metrics (passcode.metrics);
    # unset, the CLI makes one for the run and removes it after.
    metrics_dir: Path | None = None
    # Where the npm packages the pages serve (Swagger UI, the QR encoder) are installed: unset,
    # the node_modules `make install` fills beside the package's source tree.
    node_modules_dir: Path | None = None
    # Not read from the environment: a hook for tests (and embedders) to replace "now".
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)

    def cluster_seeds(self) -> list[tuple[str, int]]:
        """PASSCODE_REDIS_CLUSTER_NODES as (host, port) pairs (an IPv6 host without its
        brackets); SettingsError for an entry that is not ``host:port``."""
        seeds = []
        for node in self.redis_cluster_nodes:
            host, sep, port = node.strip().rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
                raise SettingsError(f"PASSCODE_REDIS_CLUSTER_NODES: {node!r} is not host:port")
            seeds.append((host.strip("[]"), int(port)))
        return seeds

    def __post_init__(self) -> None:
        if self.redis_cluster_nodes:
            self.cluster_seeds()  # refuses a node that is not host:port
            if self.redis_url is None:
                object.__setattr__(self, "redis_url", f"redis://{self.redis_cluster_nodes[0]}/0")
        if self.redis_wait_timeout_ms <= 0:  # WAIT 0 would wait forever
            raise SettingsError("PASSCODE_REDIS_WAIT_TIMEOUT_MS must be above 0")
        if not 1 <= self.card_days <= 365:  # a printed card lives at most a year (issue 14)
            raise SettingsError("PASSCODE_CARD_DAYS must be 1 to 365")

    @property
    def wait_replicas(self) -> int:
        """The replicas a Redis pipeline waits for (see ``redis_wait_replicas``)."""
        if self.redis_wait_replicas >= 0:
            return self.redis_wait_replicas
        return 1 if self.redis_cluster_nodes else 0

    @property
    def key_dir(self) -> Path:
        """Where signing keys, the dev identity key and the dev secret live."""
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    def policy(self) -> Policy:
        """The status rules' tunables."""
        return Policy(
            declaration_ttl=timedelta(seconds=self.declaration_ttl),
            fever_threshold=self.fever_threshold,
            risk_regions=frozenset(self.risk_regions),
        )

    def retention_periods(self) -> RetentionPeriods:
        """How long each kind of record is kept (ValueError for a period below 1)."""
        return RetentionPeriods(
            declaration_days=self.declaration_retention_days,
            ruling_days=self.ruling_retention_days,
            test_result_days=self.test_result_retention_days,
            card_days=self.card_retention_days,
            idempotency_hours=self.idempotency_retention_hours,
            dead_letter_days=self.scan_retention_days,
            audit_days=self.audit_retention_days,
            subject_grace_hours=self.subject_grace_hours,
        )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if f.name in _NOT_FROM_ENV:
                continue
            value = getattr(self, f.name)
            if f.name in {"database_url", "redis_url"}:
                value = mask_url(value)
            elif f.name in {"secret", "admin_key"}:
                value = None if value is None else "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``PASSCODE_<FIELD>`` for each field; unknown ``PASSCODE_*`` names are an error."""
        env = os.environ if environ is None else environ
        known = {
            f"PASSCODE_{f.name.upper()}": f for f in fields(cls) if f.name not in _NOT_FROM_ENV
        }
        unknown = sorted(k for k in env if k.startswith("PASSCODE_") and k not in known)
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(unknown)}")
        values: dict[str, object] = {}
        for name, f in known.items():
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.default)
        return cls(**values)  # type: ignore[arg-type]  # values are parsed to each field's type


def _parse(name: str, raw: str, default: object) -> object:
    """Parse one variable by the type of the field's default."""
    try:
        if isinstance(default, bool):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(default, Path) or name.endswith(("_DIR", "_FILE")):
            return Path(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot parse {raw!r}") from exc
    return raw
