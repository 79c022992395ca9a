"""The three populations that load passcode, as Locust users (FastHttpUser).

- :class:`TerminalUser`: a scanner at a gate, ``POST /v1/verify`` with its own terminal key.
  Codes come from a per-process :class:`PassPool` of real passes of many seeded citizens,
  refreshed before they expire, mixed with a configurable share of yellow/red, expired,
  tampered and garbage codes. Requests are named by the expected outcome, and a response whose
  decision contradicts it (a fresh green pass not admitted, a tampered one admitted) fails.
- :class:`CitizenUser`: a phone showing its pass (JSON and PNG) and re-declaring now and then,
  with an ``Idempotency-Key`` (sometimes retried, expecting the stored answer back).
- :class:`AuthorityUser`: rare overrides on citizens the seed reserved for it, so that what the
  terminals expect of every other citizen stays true for the whole run.

Everything comes from the seed file ``passcode seed`` wrote (``--seed-file``). Knobs are
environment variables (``LOADTEST_*``), listed in loadtest/README.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import string
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import gevent
from gevent.event import Event
from gevent.pool import Pool as GreenPool
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import FastHttpSession, ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser

from passcode.domain.identity import mint_dev_token
from passcode.domain.passfmt import b45decode, b45encode
from passcode.service.verify import ScanIds
from passcode.store.keyring import load_or_create_ed25519
from passcode.testing import auth, full_name

log = logging.getLogger("loadtest")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SEED_FILE = Path("loadtest/data/seed.json")
COLORS = ("green", "yellow", "red")
TOKEN_TTL = 6 * 3600
_B45_ALPHABET = string.digits + string.ascii_uppercase + " $%*+-./:"


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the seed file ------------------------------------------------------------------------------


class SeedFileError(RuntimeError):
    """The seed file is missing or does not fit these scenarios."""


@dataclass(frozen=True, slots=True)
class SeedData:
    """What ``passcode seed`` wrote; ``citizens`` excludes those reserved for the authority."""

    path: Path
    run_id: str
    settings: dict[str, Any]
    declarations: dict[str, dict[str, Any]]
    citizens: dict[str, list[str]]
    authority: list[str]
    terminals: list[str]

    @classmethod
    def load(cls, path: Path) -> SeedData:
        if not path.is_absolute() and not path.exists() and (REPO / path).exists():
            path = REPO / path
        if not path.exists():
            raise SeedFileError(
                f"no seed file at {path}: run `passcode seed --out {path}` against the service's"
                " stores first (see loadtest/README.md)"
            )
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != 1:
            raise SeedFileError(f"{path}: unknown seed file format {doc.get('format')!r}")
        reserved = set(doc["authority"])
        citizens = {
            color: [uid for uid in doc["citizens"].get(color, []) if uid not in reserved]
            for color in COLORS
        }
        return cls(
            path=path,
            run_id=doc["run_id"],
            settings=doc["settings"],
            declarations=doc["declarations"],
            citizens=citizens,
            authority=list(doc["authority"]),
            terminals=[t["key"] for t in doc["terminals"]],
        )

    def everyone(self) -> list[tuple[str, str]]:
        """(user id, colour) of every citizen the terminals and phones may use."""
        return [(uid, color) for color in COLORS for uid in self.citizens[color]]


class Tokens:
    """Dev ID tokens minted in-process (the dev identity provider's key), cached per user."""

    def __init__(self, seed: SeedData) -> None:
        override = os.environ.get("LOADTEST_DEV_KEY")
        raw_path = override or seed.settings.get("dev_key_path")
        if not raw_path:
            raise SeedFileError(
                "the seed file names no dev identity key: seed and serve with PASSCODE_DEV_MODE=1"
            )
        path = Path(raw_path)
        if not path.exists():  # never create one here: the service would not know it
            raise SeedFileError(
                f"dev identity key {path} not found: copy it from the service's key folder and"
                " set LOADTEST_DEV_KEY"
            )
        self.key = load_or_create_ed25519(path)
        self.settings = seed.settings
        self._cache: dict[str, tuple[str, float]] = {}

    def for_user(self, user_id: str) -> str:
        now = time.time()
        hit = self._cache.get(user_id)
        if hit is not None and hit[1] - now > 600:
            return hit[0]
        token = mint_dev_token(
            self.key,
            kid=self.settings["dev_idp_kid"],
            issuer=self.settings["idp_issuer"],
            audience=self.settings["idp_audience"],
            user_id=user_id,
            name=full_name(user_id),
            now=int(now),
            ttl=TOKEN_TTL,
        )
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[user_id] = (token, now + TOKEN_TTL)
        return token


_seed: SeedData | None = None
_tokens: Tokens | None = None


def seed_data(environment: Environment) -> SeedData:
    """The seed file named by ``--seed-file`` (or ``LOADTEST_SEED_FILE``), loaded once."""
    global _seed  # noqa: PLW0603  # one per process, shared by every user
    if _seed is None:
        options = environment.parsed_options
        name = getattr(options, "seed_file", None) or os.environ.get("LOADTEST_SEED_FILE")
        _seed = SeedData.load(Path(name) if name else DEFAULT_SEED_FILE)
        log.info("seed %s: run %s, %d terminals", _seed.path, _seed.run_id, len(_seed.terminals))
    return _seed


def tokens(environment: Environment) -> Tokens:
    global _tokens  # noqa: PLW0603  # one per process, shared by every user
    if _tokens is None:
        _tokens = Tokens(seed_data(environment))
    return _tokens


# --- the pool of passes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Code:
    text: str
    color: str
    expires_at: float


class PassPool:
    """Real passes of a random sample of seeded citizens, fetched anew every ``interval``.

    A code counts as fresh while it has more than ``fresh_margin`` seconds to live, and as
    expired once it is past its expiry plus the service's clock-skew allowance plus a margin;
    codes in between are never sent, so every expectation is unambiguous. Expired codes are the
    pool's own old passes, kept past their expiry.
    """

    def __init__(self, environment: Environment, seed: SeedData, minted: Tokens) -> None:
        pass_ttl = float(seed.settings["pass_ttl"])
        self.seed = seed
        self.tokens = minted
        self.interval = env_float("LOADTEST_POOL_REFRESH", min(20.0, pass_ttl / 3))
        self.fresh_margin = min(10.0, pass_ttl / 4)
        skew = env_float("LOADTEST_CLOCK_SKEW", float(seed.settings["clock_skew"]))
        self.expired_after = skew + 10.0
        self.sizes = {
            "green": env_int("LOADTEST_POOL_GREEN", 200),
            "yellow": env_int("LOADTEST_POOL_YELLOW", 50),
            "red": env_int("LOADTEST_POOL_RED", 50),
        }
        self.concurrency = env_int("LOADTEST_POOL_CONCURRENCY", 10)
        self.session = FastHttpSession(
            base_url=environment.host,
            request_event=environment.events.request,
            user=None,
            concurrency=self.concurrency,
            network_timeout=30.0,
            connection_timeout=10.0,
        )
        self.fresh: dict[str, list[Code]] = {color: [] for color in COLORS}
        self.older: list[Code] = []
        self.expired: deque[Code] = deque(maxlen=2000)
        self.ready = Event()
        self._greenlet: gevent.Greenlet[Any, None] | None = None

    def start(self) -> None:
        """Fill the pool in the background, then keep it fresh; idempotent."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("refreshing the pass pool failed; keeping the old codes")
            self.ready.set()
            gevent.sleep(self.interval)

    def refresh(self) -> None:
        sample = [
            (uid, color)
            for color in COLORS
            for uid in random.sample(
                self.seed.citizens[color], min(self.sizes[color], len(self.seed.citizens[color]))
            )
        ]
        fresh: dict[str, list[Code]] = {color: [] for color in COLORS}
        for code in GreenPool(self.concurrency).imap_unordered(self._fetch, sample):
            if code is not None:
                fresh[code.color].append(code)
        now = time.time()
        kept = []
        for code in itertools.chain(self.older, *self.fresh.values()):
            if now > code.expires_at + self.expired_after:
                self.expired.append(code)
            else:
                kept.append(code)
        self.older = kept
        self.fresh = fresh
        log.debug("pass pool: %s fresh", {c: len(v) for c, v in fresh.items()})

    def _fetch(self, item: tuple[str, str]) -> Code | None:
        user_id, color = item
        with self.session.get(
            "/v1/pass",
            headers=auth(self.tokens.for_user(user_id)),
            name="/v1/pass [pool]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                return None
            body = resp.json()
            if body["color"] != color:
                resp.failure(f"a seeded {color} citizen got a {body['color']} pass")
                return None
            expires = datetime.fromisoformat(body["expires_at"]).timestamp()
            return Code(body["code"], color, expires)

    def pick(self, color: str) -> Code | None:
        """A fresh code of this colour, or None when the pool has none left."""
        codes = self.fresh[color]
        deadline = time.time() + self.fresh_margin
        for _ in range(8):
            if not codes:
                return None
            code = random.choice(codes)
            if code.expires_at > deadline:
                return code
        return next((c for c in codes if c.expires_at > deadline), None)

    def pick_expired(self) -> Code | None:
        return random.choice(self.expired) if self.expired else None


_pool: PassPool | None = None


def pass_pool(environment: Environment) -> PassPool:
    global _pool  # noqa: PLW0603  # one per process, shared by every terminal
    if _pool is None:
        _pool = PassPool(environment, seed_data(environment), tokens(environment))
    return _pool


@events.quitting.add_listener
def _stop_pool(environment: Environment, **_kwargs: Any) -> None:
    if _pool is not None:
        _pool.stop()


# --- what a terminal sends and expects ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the service must answer for one kind of code."""

    decision: str
    color: str | None = None
    reasons: frozenset[str] | None = None  # None: any reason


EXPECT: dict[str, Expectation] = {
    "green": Expectation("admit", "green", frozenset({"ok"})),
    "yellow": Expectation("deny", "yellow", frozenset({"status_yellow"})),
    "red": Expectation("deny", "red", frozenset({"status_red"})),
    "expired": Expectation("invalid", None, frozenset({"expired"})),
    "tampered": Expectation("invalid"),
    "garbage": Expectation("invalid"),
}


def verify_name(kind: str) -> str:
    return f"/v1/verify [{kind} -> {EXPECT[kind].decision}]"


def tamper(code: str) -> str:
    """The same pass with one bit flipped in its signature, or one character changed in its
    signed payload: either way no longer a valid pass."""
    raw = bytearray(b45decode(code[4:]))
    if random.random() < 0.75:
        raw[len(raw) - 1 - random.randrange(min(64, len(raw)))] ^= 1 << random.randrange(8)
        return code[:4] + b45encode(bytes(raw))
    text = code[4:]
    pos = random.randrange(int(len(text) * 0.3), int(len(text) * 0.8))
    swapped = random.choice([c for c in _B45_ALPHABET if c != text[pos]])
    return code[:4] + text[:pos] + swapped + text[pos + 1 :]


def garbage() -> str:
    """Something a scanner may read that is not a pass at all."""
    roll = random.random()
    if roll < 0.4:  # right prefix, random Base45
        return "PC1:" + "".join(random.choices(_B45_ALPHABET, k=random.randrange(30, 400)))
    if roll < 0.7:  # right prefix, valid Base45 of random bytes (not a COSE message)
        return "PC1:" + b45encode(os.urandom(random.randrange(20, 200)))
    if roll < 0.85:  # another kind of health code
        return "HC1:" + "".join(random.choices(_B45_ALPHABET, k=120))
    return "https://example.com/?q=" + uuid.uuid4().hex  # a URL QR code


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of each kind of code a terminal sends; green fresh passes take the rest."""

    shares: tuple[tuple[str, float], ...]

    @classmethod
    def from_env(cls) -> Mix:
        shares = (
            ("yellow", env_float("LOADTEST_SHARE_YELLOW", 0.05)),
            ("red", env_float("LOADTEST_SHARE_RED", 0.03)),
            ("expired", env_float("LOADTEST_SHARE_EXPIRED", 0.03)),
            ("tampered", env_float("LOADTEST_SHARE_TAMPERED", 0.02)),
            ("garbage", env_float("LOADTEST_SHARE_GARBAGE", 0.02)),
        )
        if sum(share for _, share in shares) > 1 or any(share < 0 for _, share in shares):
            raise ValueError("LOADTEST_SHARE_* must be between 0 and 1 and add up to at most 1")
        return cls(shares)

    def draw(self) -> str:
        roll = random.random()
        for kind, share in self.shares:
            if roll < share:
                return kind
            roll -= share
        return "green"


def check_verify(resp: ResponseContextManager, kind: str) -> None:
    """Fail the request when the answer contradicts what this kind of code must get."""
    if resp.status_code != 200:
        resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
        return
    body = resp.json()
    want = EXPECT[kind]
    if body.get("decision") != want.decision:
        resp.failure(f"{kind} code: decision {body.get('decision')!r} ({body.get('reason')})")
    elif want.color is not None and body.get("color") != want.color:
        resp.failure(f"{kind} code: colour {body.get('color')!r}")
    elif want.reasons is not None and body.get("reason") not in want.reasons:
        resp.failure(f"{kind} code: reason {body.get('reason')!r}")


def _fail_locally(environment: Environment, name: str, message: str) -> None:
    """Count a problem of the load generator itself as a failed request, so it shows."""
    environment.events.request.fire(
        request_type="LOADTEST",
        name=name,
        response_time=0,
        response_length=0,
        exception=RuntimeError(message),
        context={},
    )


_terminal_numbers = itertools.count(random.randrange(1_000_000))


class ScanLog:
    """Every verify's outcome, one line each (``<unix time> <status> <scan id>``, status 0 when
    no answer came), in ``LOADTEST_SCAN_LOG/scans-<pid>.log``: what a run acknowledged (a 200)
    can then be looked up in PostgreSQL's scan log, and failures placed in time. Off unless set.
    """

    def __init__(self, folder: str) -> None:
        self.handle: TextIO | None = None
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            path = Path(folder) / f"scans-{os.getpid()}.log"
            self.handle = path.open("a", encoding="ascii", buffering=1)

    def write(self, status: int, scan_id: str) -> None:
        if self.handle is not None:
            self.handle.write(f"{time.time():.3f} {status} {scan_id}\n")


_scan_log: ScanLog | None = None


def scan_log() -> ScanLog:
    global _scan_log  # noqa: PLW0603  # one per process, shared by every terminal
    if _scan_log is None:
        _scan_log = ScanLog(os.environ.get("LOADTEST_SCAN_LOG", "").strip())
    return _scan_log


class TerminalUser(FastHttpUser):
    """A scanner terminal: one terminal key per user, scanning every 0.5-2 s by default."""

    weight = 10
    wait_time = between(
        env_float("LOADTEST_TERMINAL_WAIT_MIN", 0.5), env_float("LOADTEST_TERMINAL_WAIT_MAX", 2.0)
    )

    def on_start(self) -> None:
        seed = seed_data(self.environment)
        if not seed.terminals:
            log.error("the seed file has no terminals: seed with --terminals N")
            raise StopUser
        self.key = seed.terminals[next(_terminal_numbers) % len(seed.terminals)]
        self.mix = Mix.from_env()
        self.pool = pass_pool(self.environment)
        self.scan_ids = ScanIds()  # time-ordered (version 7), as the API asks of terminals
        self.pool.start()
        self.pool.ready.wait(timeout=120)

    def _code(self, kind: str) -> tuple[str, str] | None:
        """(kind, code text) to send; falls back to a green pass when a kind has none yet."""
        if kind == "garbage":
            return kind, garbage()
        if kind == "expired":
            old = self.pool.pick_expired()
            if old is not None:
                return kind, old.text
            kind = "green"  # none expired yet: early in a run
        if kind in {"yellow", "red"}:
            code = self.pool.pick(kind)
            if code is not None:
                return kind, code.text
            kind = "green"
        code = self.pool.pick("green")
        if code is None:
            return None
        return (kind, tamper(code.text)) if kind == "tampered" else (kind, code.text)

    @task
    def scan(self) -> None:
        chosen = self._code(self.mix.draw())
        if chosen is None:
            _fail_locally(self.environment, "pass pool [empty]", "the pass pool is empty")
            return
        kind, code = chosen
        scan_id = self.scan_ids.next(time.time())
        body = {"code": code, "scan_id": scan_id, "scanned_at": rfc3339_now()}
        with self.client.post(
            "/v1/verify",
            json=body,
            headers=auth(self.key),
            name=verify_name(kind),
            catch_response=True,
        ) as resp:
            check_verify(resp, kind)
            scan_log().write(resp.status_code or 0, scan_id)


class CitizenUser(FastHttpUser):
    """Phones: show a random seeded citizen's pass (JSON, PNG), re-declare now and then."""

    weight = 3
    wait_time = between(
        env_float("LOADTEST_CITIZEN_WAIT_MIN", 1.0), env_float("LOADTEST_CITIZEN_WAIT_MAX", 5.0)
    )

    def on_start(self) -> None:
        seed = seed_data(self.environment)
        self.people = seed.everyone()
        self.bodies = seed.declarations
        self.tokens = tokens(self.environment)
        if not self.people:
            log.error("the seed file has no citizens")
            raise StopUser

    def _someone(self) -> tuple[str, str, dict[str, str]]:
        user_id, color = random.choice(self.people)
        return user_id, color, auth(self.tokens.for_user(user_id))

    @task(6)
    def show_pass(self) -> None:
        _, color, headers = self._someone()
        with self.client.get(
            "/v1/pass", headers=headers, name="/v1/pass", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                return
            body = resp.json()
            if body.get("color") != color or not str(body.get("code", "")).startswith("PC1:"):
                resp.failure(f"a seeded {color} citizen got {body.get('color')!r}")

    @task(3)
    def show_png(self) -> None:
        _, _, headers = self._someone()
        with self.client.get(
            "/v1/pass.png", headers=headers, name="/v1/pass.png", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
            elif not (resp.content or b"").startswith(b"\x89PNG\r\n\x1a\n"):
                resp.failure("not a PNG")

    @task(1)
    def redeclare(self) -> None:
        """The same kind of declaration again (the colour stays), sometimes retried."""
        _, color, headers = self._someone()
        headers["Idempotency-Key"] = str(uuid.uuid4())
        body = self.bodies[color]
        self._declare(body, headers, color, name="/v1/declarations", replay=False)
        if random.random() < 0.2:  # a retry after a lost response: the stored answer comes back
            self._declare(body, headers, color, name="/v1/declarations [retry]", replay=True)

    def _declare(
        self, body: dict[str, Any], headers: dict[str, str], color: str, *, name: str, replay: bool
    ) -> None:
        with self.client.post(
            "/v1/declarations", json=body, headers=headers, name=name, catch_response=True
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                return
            got = resp.json()["status"]["color"]
            replayed = resp.headers.get("Idempotent-Replayed") == "true"
            if got != color:
                resp.failure(f"re-declaring a {color} citizen gave {got!r}")
            elif replayed is not replay:
                resp.failure(f"Idempotent-Replayed {'missing' if replay else 'on a first try'}")


OVERRIDES: tuple[tuple[str, str], ...] = (
    ("red", "positive_test"),
    ("yellow", "manual_review"),
    ("green", "quarantine_release"),
)


class AuthorityUser(FastHttpUser):
    """Rare overrides (转码), only on the citizens the seed reserved for the authority."""

    fixed_count = 1
    wait_time = between(
        env_float("LOADTEST_AUTHORITY_WAIT_MIN", 5.0),
        env_float("LOADTEST_AUTHORITY_WAIT_MAX", 15.0),
    )

    def on_start(self) -> None:
        seed = seed_data(self.environment)
        self.admin_key = os.environ.get("PASSCODE_ADMIN_KEY", "")
        self.subjects = seed.authority
        if not self.admin_key or not self.subjects:
            log.warning(
                "AuthorityUser idle: %s",
                "set PASSCODE_ADMIN_KEY" if not self.admin_key else "no reserved citizens",
            )
            raise StopUser

    @task
    def override(self) -> None:
        color, reason = random.choice(OVERRIDES)
        until = datetime.now(UTC) + timedelta(seconds=env_float("LOADTEST_OVERRIDE_TTL", 300))
        body = {
            "user_id": random.choice(self.subjects),
            "color": color,
            "reason": reason,
            "valid_until": until.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        with self.client.post(
            "/v1/admin/overrides",
            json=body,
            headers=auth(self.admin_key),
            name=f"/v1/admin/overrides [{color}]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
            elif resp.json()["status"]["color"] != color:
                resp.failure(f"override to {color} left {resp.json()['status']['color']!r}")
