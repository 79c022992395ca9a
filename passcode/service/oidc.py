"""The identity provider over the network: its discovery document and its keys (I/O).

:class:`ProviderKeys` fetches the provider's OpenID Connect discovery document and its JWK Set
with aiohttp, each fetch under one deadline, and hands the keys to the pure
:class:`~passcode.domain.identity.IdTokenVerifier`. It fetches them again in the background
(``idp_jwks_refresh``) and when a token names an unknown ``kid`` (a rotated provider key),
at most once per ``min_interval`` seconds and single-flight: every token waiting on an unknown
kid shares the one fetch in flight. A failed fetch keeps the keys already held. Tokens of keys
already held never wait for any of it: :class:`SignIn` verifies them without an await.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import aiohttp

from passcode.domain.clock import Clock
from passcode.domain.identity import (
    MAX_DOCUMENT_BYTES,
    Citizen,
    IdentityKeyError,
    IdpKey,
    IdTokenVerifier,
    ProviderMetadata,
    UnknownKeyError,
    idp_key,
    load_jwks,
    parse_discovery,
    same_key,
)

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0  # s before the first retry of a failed load; doubled up to RETRY_MAX
RETRY_MAX = 60.0


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys could not be fetched or were refused."""


class ProviderKeys:
    """The provider's metadata and keys, fetched from ``discovery_url`` and kept fresh.

    ``static`` keys (a JWKS file, dev mode's local key) are trusted besides the fetched ones
    and win over a fetched key under the same kid. ``on_keys`` receives every new merged set.
    """

    def __init__(
        self,
        discovery_url: str,
        *,
        issuer: str,
        static: Mapping[str, object],
        on_keys: Callable[[dict[str, IdpKey]], None],
        timeout: float,
        min_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.discovery_url = discovery_url
        self.issuer = issuer
        self.static = {kid: idp_key(key) for kid, key in static.items()}
        self.on_keys = on_keys
        self.timeout = timeout
        self.min_interval = min_interval
        self.monotonic = monotonic
        self.metadata: ProviderMetadata | None = None
        self.fetched: dict[str, IdpKey] = {}
        self.fetches = 0  # completed attempts, successful or not (tests and logs read it)
        self.loaded = asyncio.Event()  # set by the first fetch that works
        self._session: aiohttp.ClientSession | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_forced: float | None = None

    async def open(self) -> None:
        # No cookies, no proxy from the environment: the provider is reached directly.
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, raise_for_status=True
        )

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    @property
    def keys(self) -> dict[str, IdpKey]:
        """The keys trusted now: fetched ones, then the static ones over them."""
        return {**self.fetched, **self.static}

    async def refresh(self, *, quiet: bool = False) -> bool:
        """Fetch the document and keys now (or join the fetch in flight); whether it worked.
        ``quiet``: a failure of the fetch this call starts is logged at INFO, not WARNING."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch_once(quiet=quiet))
            self._inflight.add_done_callback(self._forget)
        # shield: a caller that gives up (its request cancelled) leaves the fetch to the others.
        return await asyncio.shield(self._inflight)

    async def refresh_for_unknown_kid(self) -> bool:
        """Fetch again because a token named an unknown kid: joins a fetch in flight, else
        starts one unless one was forced less than ``min_interval`` seconds ago (a flood of
        tokens with made-up kids costs the provider one request per interval)."""
        if self._inflight is None:
            now = self.monotonic()
            if self._last_forced is not None and now - self._last_forced < self.min_interval:
                return False
            self._last_forced = now
        return await self.refresh()

    async def ensure_metadata(self) -> ProviderMetadata:
        """The metadata, fetched now if no fetch has worked yet; ProviderUnavailable if not."""
        if self.metadata is None and not await self.refresh_for_unknown_kid():
            raise ProviderUnavailable("the identity provider's discovery document is not loaded")
        assert self.metadata is not None
        return self.metadata

    async def run(self, *, every: float) -> None:
        """Load until it works (backing off), then fetch again every ``every`` seconds. The first
        try is quiet: dev mode's provider is this service, which is not listening yet then."""
        loaded = await self.refresh(quiet=True)
        delay = RETRY_FIRST
        while not loaded:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            loaded = await self.refresh()
        while True:
            await asyncio.sleep(every)
            await self.refresh()

    def _forget(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch_once(self, *, quiet: bool) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                metadata = parse_discovery(await self._get(self.discovery_url), issuer=self.issuer)
                fetched = load_jwks(await self._get(metadata.jwks_uri), skip_unusable=True)
        except (aiohttp.ClientError, TimeoutError, IdentityKeyError, ProviderUnavailable) as exc:
            log.log(
                logging.INFO if quiet else logging.WARNING,
                "identity provider %s: %s; keeping the %d keys held",
                self.discovery_url,
                _reason(exc),
                len(self.keys),
            )
            return False
        finally:
            self.fetches += 1
        for kid, key in fetched.items():
            if kid in self.static and not same_key(key, self.static[kid]):
                log.warning("identity provider key %r differs from the configured one", kid)
        changed = set(fetched) != set(self.fetched)
        self.metadata, self.fetched = metadata, fetched
        self.on_keys(self.keys)
        self.loaded.set()
        if changed:
            log.info(
                "identity provider %s: %d keys (%s)", self.issuer, len(fetched), sorted(fetched)
            )
        return True

    async def _get(self, url: str) -> bytes:
        """The body at ``url``: a 2xx answer of at most MAX_DOCUMENT_BYTES, not a redirect."""
        assert self._session is not None, "open() first"
        async with self._session.get(
            url, allow_redirects=False, headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise ProviderUnavailable(f"{url} answered {response.status}")
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ProviderUnavailable(f"{url}: body above {MAX_DOCUMENT_BYTES} bytes")
            return body


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the deadline"
    return f"{type(exc).__name__}: {exc}"


class SignIn:
    """Who a citizen's ID token names: the domain's verifier, and on an unknown kid one
    bounded fetch of the provider's keys (when discovery is configured) before refusing."""

    def __init__(
        self, verifier: IdTokenVerifier, provider: ProviderKeys | None, *, clock: Clock
    ) -> None:
        self.verifier = verifier
        self.provider = provider
        self.clock = clock

    async def citizen(self, token: str) -> Citizen:
        """The citizen, or IdentityError (UnknownKeyError when no fetch found the key)."""
        try:
            return self.verifier.verify(token, now=self.clock.now())
        except UnknownKeyError as exc:
            if self.provider is None or exc.kid in self.verifier.keys:
                raise
            if not await self.provider.refresh_for_unknown_kid():
                raise
            return self.verifier.verify(token, now=self.clock.now())
