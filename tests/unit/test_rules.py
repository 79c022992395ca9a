"""Pure domain pieces: status rules, the live verdict, name masking, rate limits and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from passcode.config import Settings, SettingsError, mask_url
from passcode.domain.masking import mask_name
from passcode.domain.model import Color, Decision, Reason, StatusReason, Symptom
from passcode.domain.ratelimit import TokenBuckets
from passcode.domain.rules import Declaration, Derived, Policy, Ruling, derive_status
from passcode.domain.verdict import Verdict, invalid, judge_live

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
POLICY = Policy(risk_regions=frozenset({"Region-X"}))
DECL_TTL = POLICY.declaration_ttl


def decl(
    *,
    ago: timedelta = HOUR,
    temperature_c: float = 36.6,
    symptoms: frozenset[Symptom] = frozenset(),
    regions: frozenset[str] = frozenset(),
    close_contact: bool = False,
) -> Declaration:
    return Declaration(
        declared_at=NOW - ago,
        temperature_c=temperature_c,
        symptoms=symptoms,
        regions=regions,
        close_contact=close_contact,
    )


def ruling(
    color: Color,
    reason: StatusReason,
    *,
    created_ago: timedelta,
    starts_in: timedelta | None = None,
    ends_in: timedelta | None = None,
) -> Ruling:
    """A ruling created ``created_ago`` before NOW, in force from creation (or ``starts_in``)."""
    created = NOW - created_ago
    return Ruling(
        color=color,
        reason=reason,
        valid_from=NOW + starts_in if starts_in is not None else created,
        valid_until=NOW + ends_in if ends_in is not None else None,
        created_at=created,
    )


@dataclass(frozen=True)
class Case:
    proves: str
    declaration: Declaration | None
    expected: tuple[Color, StatusReason, datetime] | None
    overrides: tuple[Ruling, ...] = ()
    exposures: tuple[Ruling, ...] = ()
    policy: Policy = field(default=POLICY)


GREEN_OK = (Color.GREEN, StatusReason.DECLARED_HEALTHY)
HEALTHY_UNTIL = NOW - HOUR + DECL_TTL  # when the default declaration (1 h ago) lapses

CASES = {
    "no-declaration": Case("no declaration means no status, hence no pass", None, None),
    "no-declaration-even-with-override": Case(
        "an override alone gives no status without a declaration",
        None,
        None,
        overrides=(ruling(Color.RED, StatusReason.POSITIVE_TEST, created_ago=HOUR),),
    ),
    "expired-declaration": Case(
        "a declaration older than declaration_ttl is no longer valid",
        decl(ago=DECL_TTL + HOUR),
        None,
    ),
    "declaration-expires-exactly-now": Case(
        "the declaration window is half-open: at declared_at + ttl it has lapsed",
        decl(ago=DECL_TTL),
        None,
    ),
    "declaration-from-the-future": Case(
        "a declaration dated beyond the 5 minute clock tolerance is not valid yet",
        decl(ago=-timedelta(minutes=6)),
        None,
    ),
    "healthy": Case(
        "a healthy declaration is green, valid until the declaration lapses",
        decl(),
        (*GREEN_OK, HEALTHY_UNTIL),
    ),
    "just-below-fever": Case(
        "a temperature just under the threshold is not fever",
        decl(temperature_c=37.2),
        (*GREEN_OK, HEALTHY_UNTIL),
    ),
    "fever-at-threshold": Case(
        "a temperature at the threshold is fever: yellow",
        decl(temperature_c=37.3),
        (Color.YELLOW, StatusReason.FEVER, HEALTHY_UNTIL),
    ),
    "fever-high": Case(
        "a high temperature is yellow fever",
        decl(temperature_c=39.0),
        (Color.YELLOW, StatusReason.FEVER, HEALTHY_UNTIL),
    ),
    "symptoms": Case(
        "any declared symptom is yellow",
        decl(symptoms=frozenset({Symptom.COUGH})),
        (Color.YELLOW, StatusReason.SYMPTOMS, HEALTHY_UNTIL),
    ),
    "risk-region": Case(
        "a visit to a region in Policy.risk_regions is yellow",
        decl(regions=frozenset({"Region-Y", "Region-X"})),
        (Color.YELLOW, StatusReason.RISK_REGION, HEALTHY_UNTIL),
    ),
    "region-not-risky": Case(
        "a visit to a region not listed as risky stays green",
        decl(regions=frozenset({"Region-X"})),
        (*GREEN_OK, HEALTHY_UNTIL),
        policy=Policy(),
    ),
    "close-contact": Case(
        "a declared close contact is red",
        decl(close_contact=True),
        (Color.RED, StatusReason.CLOSE_CONTACT, HEALTHY_UNTIL),
    ),
    "close-contact-beats-fever": Case(
        "within one declaration the most severe finding wins",
        decl(close_contact=True, temperature_c=39.0, symptoms=frozenset({Symptom.COUGH})),
        (Color.RED, StatusReason.CLOSE_CONTACT, HEALTHY_UNTIL),
    ),
    "exposure-beats-healthy-declaration": Case(
        "an active exposure more severe than the declaration wins",
        decl(),
        (Color.RED, StatusReason.RISK_PLACE, HEALTHY_UNTIL),
        exposures=(ruling(Color.RED, StatusReason.RISK_PLACE, created_ago=HOUR / 2),),
    ),
    "declaration-beats-milder-exposure": Case(
        "a declaration more severe than an exposure wins over it",
        decl(close_contact=True),
        (Color.RED, StatusReason.CLOSE_CONTACT, HEALTHY_UNTIL),
        exposures=(ruling(Color.YELLOW, StatusReason.RISK_PLACE, created_ago=HOUR / 2),),
    ),
    "exposure-after-ruling-combines": Case(
        "an exposure newer than the ruling combines with it: most severe wins",
        decl(ago=DAY),
        (Color.RED, StatusReason.RISK_PLACE, NOW - DAY + DECL_TTL),
        overrides=(ruling(Color.YELLOW, StatusReason.MANUAL_REVIEW, created_ago=2 * HOUR),),
        exposures=(ruling(Color.RED, StatusReason.RISK_PLACE, created_ago=HOUR),),
    ),
    "declaration-after-ruling-combines": Case(
        "a declaration newer than the ruling combines with it: most severe wins",
        decl(ago=HOUR, temperature_c=38.5),
        (Color.YELLOW, StatusReason.FEVER, HEALTHY_UNTIL),
        overrides=(ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=DAY),),
    ),
    "red-ruling-beats-newer-healthy-declaration": Case(
        "a newer healthy declaration cannot lift a red ruling still in force",
        decl(ago=HOUR),
        (Color.RED, StatusReason.POSITIVE_TEST, HEALTHY_UNTIL),
        overrides=(ruling(Color.RED, StatusReason.POSITIVE_TEST, created_ago=DAY),),
    ),
    "release-settles-older-close-contact": Case(
        "the latest override settles older facts: green release after a red declaration is green",
        decl(ago=2 * DAY, close_contact=True),
        (Color.GREEN, StatusReason.QUARANTINE_RELEASE, NOW - 2 * DAY + DECL_TTL),
        overrides=(ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=DAY),),
    ),
    "release-settles-older-exposure": Case(
        "an exposure older than the latest ruling is settled by it",
        decl(ago=3 * DAY),
        (Color.GREEN, StatusReason.QUARANTINE_RELEASE, NOW - 3 * DAY + DECL_TTL),
        overrides=(ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=DAY),),
        exposures=(ruling(Color.RED, StatusReason.RISK_PLACE, created_ago=2 * DAY),),
    ),
    "latest-override-wins-release": Case(
        "of two active overrides the later one rules (release after positive test)",
        decl(ago=3 * DAY),
        (Color.GREEN, StatusReason.QUARANTINE_RELEASE, NOW - 3 * DAY + DECL_TTL),
        overrides=(
            ruling(Color.RED, StatusReason.POSITIVE_TEST, created_ago=2 * DAY),
            ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=DAY),
        ),
    ),
    "latest-override-wins-positive": Case(
        "of two active overrides the later one rules, whatever order they are given in",
        decl(ago=3 * DAY),
        (Color.RED, StatusReason.POSITIVE_TEST, NOW - 3 * DAY + DECL_TTL),
        overrides=(
            ruling(Color.RED, StatusReason.POSITIVE_TEST, created_ago=DAY),
            ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=2 * DAY),
        ),
    ),
    "override-not-started": Case(
        "an override whose window has not started is ignored, but its start bounds valid_until",
        decl(),
        (*GREEN_OK, NOW + 2 * HOUR),
        overrides=(
            ruling(Color.RED, StatusReason.QUARANTINE, created_ago=HOUR / 2, starts_in=2 * HOUR),
        ),
    ),
    "override-ended": Case(
        "an override whose window has ended is ignored",
        decl(),
        (*GREEN_OK, HEALTHY_UNTIL),
        overrides=(ruling(Color.RED, StatusReason.QUARANTINE, created_ago=DAY, ends_in=-HOUR),),
    ),
    "override-ends-exactly-now": Case(
        "an override window is half-open: at valid_until it no longer applies",
        decl(),
        (*GREEN_OK, HEALTHY_UNTIL),
        overrides=(
            ruling(Color.RED, StatusReason.QUARANTINE, created_ago=DAY, ends_in=timedelta(0)),
        ),
    ),
    "ended-release-does-not-settle": Case(
        "an ended ruling settles nothing: the older close contact counts again",
        decl(ago=2 * DAY, close_contact=True),
        (Color.RED, StatusReason.CLOSE_CONTACT, NOW - 2 * DAY + DECL_TTL),
        overrides=(
            ruling(Color.GREEN, StatusReason.QUARANTINE_RELEASE, created_ago=DAY, ends_in=-HOUR),
        ),
    ),
    "exposure-not-started-and-ended": Case(
        "exposures outside their window are ignored; an upcoming one bounds valid_until",
        decl(),
        (*GREEN_OK, NOW + 3 * HOUR),
        exposures=(
            ruling(Color.RED, StatusReason.RISK_PLACE, created_ago=HOUR, starts_in=3 * HOUR),
            ruling(Color.RED, StatusReason.RISK_PLACE, created_ago=DAY, ends_in=-HOUR),
        ),
    ),
    "valid-until-override-end": Case(
        "valid_until is the earliest horizon: here the ruling's end",
        decl(ago=DAY),
        (Color.RED, StatusReason.QUARANTINE, NOW + 5 * HOUR),
        overrides=(
            ruling(Color.RED, StatusReason.QUARANTINE, created_ago=2 * HOUR, ends_in=5 * HOUR),
        ),
        exposures=(
            ruling(Color.YELLOW, StatusReason.RISK_PLACE, created_ago=HOUR, ends_in=9 * HOUR),
        ),
    ),
    "valid-until-exposure-end": Case(
        "valid_until is the earliest horizon: here an exposure's end",
        decl(ago=DAY),
        (Color.RED, StatusReason.QUARANTINE, NOW + 4 * HOUR),
        overrides=(
            ruling(Color.RED, StatusReason.QUARANTINE, created_ago=2 * HOUR, ends_in=5 * HOUR),
        ),
        exposures=(
            ruling(Color.YELLOW, StatusReason.RISK_PLACE, created_ago=HOUR, ends_in=4 * HOUR),
        ),
    ),
    "valid-until-declaration-lapse": Case(
        "valid_until is the earliest horizon: here the declaration lapsing",
        decl(ago=DECL_TTL - HOUR),
        (Color.RED, StatusReason.QUARANTINE, NOW + HOUR),
        overrides=(
            ruling(Color.RED, StatusReason.QUARANTINE, created_ago=2 * HOUR, ends_in=5 * HOUR),
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_derive_status_table(case: Case) -> None:
    """derive_status gives each case's colour, reason and valid_until (see each case's proves)."""
    derived = derive_status(
        case.declaration, case.overrides, case.exposures, now=NOW, policy=case.policy
    )
    if case.expected is None:
        assert derived is None, case.proves
    else:
        color, reason, valid_until = case.expected
        assert derived == Derived(color, reason, valid_until), case.proves


def test_derive_status_accepts_one_shot_iterables() -> None:
    """Overrides and exposures may be generators: the rules read each only as often as safe."""
    overrides = [ruling(Color.RED, StatusReason.QUARANTINE, created_ago=HOUR, starts_in=HOUR)]
    exposures = [ruling(Color.YELLOW, StatusReason.RISK_PLACE, created_ago=HOUR / 2)]
    expected = derive_status(decl(ago=2 * HOUR), overrides, exposures, now=NOW, policy=POLICY)
    got = derive_status(
        decl(ago=2 * HOUR), iter(overrides), iter(exposures), now=NOW, policy=POLICY
    )
    assert expected == Derived(Color.YELLOW, StatusReason.RISK_PLACE, NOW + HOUR)
    assert got == expected


# --- verdict -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pass_version", "live_color", "live_version", "expected"),
    [
        (3, None, 3, Verdict(Decision.DENY, Reason.SUPERSEDED, None)),
        (3, Color.YELLOW, 3, Verdict(Decision.DENY, Reason.STATUS_YELLOW, Color.YELLOW)),
        (3, Color.RED, 3, Verdict(Decision.DENY, Reason.STATUS_RED, Color.RED)),
        (2, Color.RED, 3, Verdict(Decision.DENY, Reason.STATUS_RED, Color.RED)),
        (2, Color.GREEN, 3, Verdict(Decision.DENY, Reason.SUPERSEDED, Color.GREEN)),
        (3, Color.GREEN, 3, Verdict(Decision.ADMIT, Reason.OK, Color.GREEN)),
        (4, Color.GREEN, 3, Verdict(Decision.ADMIT, Reason.OK, Color.GREEN)),
    ],
    ids=[
        "no-live-status",
        "yellow-now",
        "red-now",
        "red-beats-superseded",
        "green-but-pass-older-than-status",
        "green-same-version",
        "green-pass-newer-than-copy",
    ],
)
def test_judge_live(
    pass_version: int, live_color: Color | None, live_version: int, expected: Verdict
) -> None:
    """Admit only a subject green now with a pass not older than the status; else deny, with
    the live colour's reason first, then superseded; no live status never admits."""
    assert judge_live(pass_version, live_color, live_version) == expected


@pytest.mark.parametrize("reason", [Reason.EXPIRED, Reason.BAD_SIGNATURE, Reason.MALFORMED])
def test_invalid_has_no_colour(reason: Reason) -> None:
    """Anything that is not a valid pass is 'invalid' with its reason and no colour."""
    assert invalid(reason) == Verdict(Decision.INVALID, reason, None)


# --- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("张小三", "张*三"),
        ("欧阳小明", "欧**明"),
        ("John Smith", "J*** S****"),
        ("  John   Smith ", "J*** S****"),
        ("Madonna", "M******"),
        ("张", "*"),
        ("", "*"),
        ("   ", "*"),
    ],
)
def test_mask_name(name: str, masked: str) -> None:
    """Chinese names keep the first (and last, from three characters) character; Latin names
    keep each word's initial; an empty name becomes a single '*'."""
    assert mask_name(name) == masked


@pytest.mark.parametrize("name", ["张 三", "J Smith", "A B", "X", "欧阳 小明"])
def test_mask_name_never_shows_a_whole_word(name: str) -> None:
    """No word of the full name appears whole in the mask (a one-letter word is hidden too)."""
    masked = mask_name(name)
    assert "*" in masked
    for word in name.split():
        assert word not in masked.split(), (name, masked)


# --- token buckets -----------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_limits() -> None:
    """A fresh key may spend the whole burst at once; the next request must wait 1/rate."""
    buckets = TokenBuckets(rate=2.0, burst=3.0)
    assert [buckets.take("t", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("t", now=100.0)
    assert wait == pytest.approx(0.5)
    assert buckets.take("other", now=100.0) == 0.0  # keys are independent


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    """Tokens come back at ``rate`` per second, never above ``burst``; a refusal costs nothing."""
    buckets = TokenBuckets(rate=2.0, burst=3.0)
    for _ in range(3):
        buckets.take("t", now=0.0)
    assert buckets.take("t", now=0.25) == pytest.approx(0.25)  # half a token there
    assert buckets.take("t", now=0.5) == 0.0  # the refused request did not spend it
    assert buckets.take("t", now=0.5) > 0
    # A long idle time refills to the burst, not beyond it.
    assert [buckets.take("t", now=1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("t", now=1000.0) > 0


def test_token_bucket_cost_above_tokens_reports_the_wait() -> None:
    """A batch costing more than what is left waits for the shortfall at the refill rate."""
    buckets = TokenBuckets(rate=10.0, burst=100.0)
    assert buckets.take("t", now=0.0, cost=60) == 0.0
    assert buckets.take("t", now=0.0, cost=60) == pytest.approx(2.0)
    assert buckets.take("t", now=2.0, cost=60) == 0.0


def test_token_bucket_bounds_its_memory() -> None:
    """Past max_keys the table is reset rather than growing without bound."""
    buckets = TokenBuckets(rate=1.0, burst=1.0, max_keys=2)
    for key in ("a", "b", "c", "d"):
        assert buckets.take(key, now=0.0) == 0.0
    # private: the table's size is the bound under test
    assert len(buckets._state) <= 2


@pytest.mark.parametrize(
    ("wait", "seconds"), [(0.0001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.5, 3), (30.0, 30)]
)
def test_retry_after_is_whole_seconds_at_least_one(wait: float, seconds: int) -> None:
    """Retry-After rounds the wait up to whole seconds and is never 0."""
    assert TokenBuckets.retry_after(wait) == seconds


# --- settings ----------------------------------------------------------------------------------


def test_settings_from_env_parses_each_type() -> None:
    """from_env parses PASSCODE_<FIELD> by the field's type: bool, int, float, tuple, path, str."""
    settings = Settings.from_env(
        {
            "PASSCODE_DEV_MODE": "yes",
            "PASSCODE_DRAIN_ENABLED": "off",
            "PASSCODE_PORT": "9090",
            "PASSCODE_REDIS_TIMEOUT": "0.25",
            "PASSCODE_FEVER_THRESHOLD": "37.5",
            "PASSCODE_RISK_REGIONS": " Region-X, Region-Y ,, ",
            "PASSCODE_DATA_DIR": "/var/lib/passcode",
            "PASSCODE_KEYS_DIR": "/run/secrets/keys",
            "PASSCODE_IDP_JWKS_FILE": "/etc/passcode/idp.json",
            "PASSCODE_ISSUER": "city-passcode",
            "PASSCODE_DATABASE_URL": "postgresql://pc@db/passcode",
            "PASSCODE_PASS_TTL": "",  # empty: the default
            "HOME": "/root",  # not ours: ignored
        }
    )
    assert settings.dev_mode is True
    assert settings.drain_enabled is False
    assert settings.port == 9090
    assert settings.redis_timeout == 0.25
    assert settings.fever_threshold == 37.5
    assert settings.risk_regions == ("Region-X", "Region-Y")
    assert settings.policy().risk_regions == frozenset({"Region-X", "Region-Y"})
    assert settings.data_dir == Path("/var/lib/passcode")
    assert settings.keys_dir == Path("/run/secrets/keys")
    assert settings.key_dir == Path("/run/secrets/keys")
    assert settings.idp_jwks_file == Path("/etc/passcode/idp.json")
    assert settings.issuer == "city-passcode"
    assert settings.database_url == "postgresql://pc@db/passcode"
    assert settings.pass_ttl == Settings().pass_ttl
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("TRUE", True), ("on", True), ("0", False), ("No", False)],
)
def test_settings_bool_spellings(raw: str, value: bool) -> None:
    """The usual boolean spellings are accepted, case-insensitively."""
    assert Settings.from_env({"PASSCODE_DEV_MODE": raw}).dev_mode is value


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PASSCODE_DEV_MODE", "maybe"),
        ("PASSCODE_PORT", "80.5"),
        ("PASSCODE_PORT", "eighty"),
        ("PASSCODE_PG_TIMEOUT", "2s"),
    ],
)
def test_settings_malformed_value_is_rejected(name: str, raw: str) -> None:
    """A value that does not parse as its field's type is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def test_settings_unknown_variable_is_rejected() -> None:
    """A misspelt PASSCODE_ variable is an error, not silently ignored."""
    with pytest.raises(SettingsError, match="PASSCODE_PASS_TTL_SECONDS"):
        Settings.from_env({"PASSCODE_PASS_TTL_SECONDS": "60", "PASSCODE_PORT": "1"})


def test_settings_repr_masks_secrets() -> None:
    """repr (what gets logged) hides the secret, the admin key and database/Redis passwords."""
    settings = Settings(
        database_url="postgresql://pc:pg-pass-4711@db.internal:5432/passcode",
        redis_url="redis://:redis-pass-4712@cache.internal:6379/0",
        secret="server-secret-4713",
        admin_key="admin-key-4714",
    )
    shown = repr(settings)
    for secret in ("pg-pass-4711", "redis-pass-4712", "server-secret-4713", "admin-key-4714"):
        assert secret not in shown
        assert secret not in str(settings)
    assert "postgresql://pc:***@db.internal:5432/passcode" in shown
    assert "redis://:***@cache.internal:6379/0" in shown
    assert "secret='***'" in shown
    assert "admin_key='***'" in shown
    assert "port=8080" in shown  # the rest is shown as usual
    unset = repr(Settings())
    assert "secret=None" in unset
    assert "admin_key=None" in unset


def test_mask_url_hides_a_password_given_as_a_query_parameter() -> None:
    """libpq/asyncpg also take the password as ?password=…; that spelling is masked too."""
    masked = mask_url("postgresql://pc@db/passcode?sslmode=require&password=q-pass-4715")
    assert masked is not None
    assert "q-pass-4715" not in masked
    assert masked.startswith("postgresql://pc@db/passcode?")
    assert "sslmode=require" in masked
    assert mask_url("postgresql://pc@db/passcode") == "postgresql://pc@db/passcode"
    assert mask_url(None) is None


def test_cluster_nodes_are_parsed_once_into_host_and_port_pairs() -> None:
    """PASSCODE_REDIS_CLUSTER_NODES has one parser (Settings.cluster_seeds): spaces around an
    entry are ignored and an IPv6 host loses its brackets; the first node seeds redis_url."""
    settings = Settings.from_env(
        {"PASSCODE_REDIS_CLUSTER_NODES": "10.0.0.1:7000, [::1]:7001,redis-2.svc:7002"}
    )
    assert settings.cluster_seeds() == [("10.0.0.1", 7000), ("::1", 7001), ("redis-2.svc", 7002)]
    assert settings.redis_url == "redis://10.0.0.1:7000/0"


@pytest.mark.parametrize("node", ["7000", "host:", ":7000", "host:70000", "host:port"])
def test_a_cluster_node_that_is_not_host_and_port_is_refused(node: str) -> None:
    with pytest.raises(SettingsError, match="is not host:port"):
        Settings.from_env({"PASSCODE_REDIS_CLUSTER_NODES": f"127.0.0.1:7000,{node}"})
