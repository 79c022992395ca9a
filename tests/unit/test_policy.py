"""Place policies: the default policy's edges, CertLogic evaluated by the library, and the
checks an operator's policy passes before it is stored."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from passcode.domain.foreign import CertType, ForeignCertificate
from passcode.domain.model import Kind
from passcode.domain.policy import (
    DEFAULT_POLICY,
    DETECTED,
    MAX_DEPTH,
    MAX_NODES,
    MAX_RULES,
    RAPID_ANTIGEN,
    VALUE_SETS,
    PlacePolicy,
    certlogic,
    evaluate,
    parse_policy,
    policy_json,
    value_set_codes,
)

NAME = {"fn": "Musterfrau", "gn": "Erika", "fnt": "MUSTERFRAU", "gnt": "ERIKA"}


def _vaccination(**entry: Any) -> dict[str, Any]:
    v = {
        "tg": "840539006",
        "vp": "1119349007",
        "mp": "EU/1/20/1528",
        "ma": "ORG-100030215",
        "dn": 2,
        "sd": 2,
        "dt": "2021-06-01",
        "co": "AT",
        "is": "Ministry of Health, Austria",
        "ci": "URN:UVCI:01:AT:10807843F94AEE0EE5093FBC254BD813#B",
    }
    v.update(entry)
    return {"ver": "1.3.0", "nam": NAME, "dob": "1964-08-12", "v": [v]}


SAMPLED = datetime(2021, 6, 1, 10, 0, tzinfo=UTC)


def _test(**entry: Any) -> dict[str, Any]:
    t = {
        "tg": "840539006",
        "tt": "LP6464-4",
        "sc": "2021-06-01T10:00:00Z",
        "tr": "260415000",
        "tc": "Testing centre Vienna 1",
        "co": "AT",
        "is": "Ministry of Health, Austria",
        "ci": "URN:UVCI:01:AT:71EE2559DE38C6BF7304FB65A1A451EC#3",
    }
    t.update(entry)
    return {"ver": "1.3.0", "nam": NAME, "dob": "1964-08-12", "t": [t]}


FIRST_POSITIVE = datetime(2021, 1, 1, tzinfo=UTC)


def _recovery(**entry: Any) -> dict[str, Any]:
    r = {
        "tg": "840539006",
        "fr": "2021-01-01",
        "co": "AT",
        "is": "Ministry of Health, Austria",
        "df": "2021-01-12",
        "du": "2021-12-31",
        "ci": "URN:UVCI:01:AT:858CC18CFCF5965EF82F60E493349AA5#K",
    }
    r.update(entry)
    return {"ver": "1.3.0", "nam": NAME, "dob": "1964-08-12", "r": [r]}


def _cert(payload: dict[str, Any], kind: Kind = Kind.EU_DCC) -> ForeignCertificate:
    types = frozenset(CertType(t) for t in ("v", "t", "r") if t in payload)
    return ForeignCertificate(
        kind=kind,
        issuer="AT",
        certificate_id="URN:UVCI:01:AT:X",
        holder_name="Erika Musterfrau",
        types=types,
        issued_at=1_600_000_000,
        expires_at=1_700_000_000,
        payload=payload,
    )


def _judge(payload: dict[str, Any], now: datetime, policy: PlacePolicy = DEFAULT_POLICY) -> Any:
    return evaluate(policy, _cert(payload), value_sets=VALUE_SETS, now=now)


# --- the default policy, rule by rule ------------------------------------------------------


def test_vaccination_13_days_after_the_last_dose_is_refused_14_days_accepted() -> None:
    """VR-14DAYS: the last dose at least 14 days before the scan (dt 1 June)."""
    early = _judge(_vaccination(), datetime(2021, 6, 14, 23, 59, tzinfo=UTC))
    assert not early.accepted
    assert early.failed == ("VR-14DAYS",)
    assert _judge(_vaccination(), datetime(2021, 6, 15, 0, 0, tzinfo=UTC)).accepted


def test_incomplete_vaccination_course_is_refused() -> None:
    """VR-COURSE: dose 1 of 2 is not accepted however long ago it was given."""
    outcome = _judge(_vaccination(dn=1, sd=2), datetime(2021, 9, 1, tzinfo=UTC))
    assert outcome.failed == ("VR-COURSE",)
    assert _judge(_vaccination(dn=3, sd=2), datetime(2021, 9, 1, tzinfo=UTC)).accepted


@pytest.mark.parametrize(
    ("test_type", "inside", "outside"),
    [("LP6464-4", 71, 73), (RAPID_ANTIGEN, 47, 49)],
    ids=["pcr-72h", "rapid-48h"],
)
def test_test_sampled_within_its_window_is_accepted_past_it_refused(
    test_type: str, inside: int, outside: int
) -> None:
    """TR-PCR-72H / TR-RAT-48H: a PCR 71 h old passes and 73 h fails; a rapid test 47 h / 49 h."""
    payload = _test(tt=test_type)
    assert _judge(payload, SAMPLED + timedelta(hours=inside)).accepted
    late = _judge(payload, SAMPLED + timedelta(hours=outside))
    assert not late.accepted
    assert late.failed == ("TR-PCR-72H" if test_type == "LP6464-4" else "TR-RAT-48H",)


def test_rapid_test_49h_old_fails_though_a_pcr_that_old_passes() -> None:
    """The window follows the test type: 49 h is inside PCR's 72 h."""
    now = SAMPLED + timedelta(hours=49)
    assert _judge(_test(tt="LP6464-4"), now).accepted
    assert not _judge(_test(tt=RAPID_ANTIGEN), now).accepted


def test_detected_result_is_refused() -> None:
    """TR-RESULT: a positive ('detected') test admits no one."""
    outcome = _judge(_test(tr=DETECTED), SAMPLED + timedelta(hours=1))
    assert outcome.failed == ("TR-RESULT",)


def test_sample_taken_after_the_scan_is_refused() -> None:
    """A sample time in the future (a forged or mis-set clock) is outside the window."""
    assert not _judge(_test(), SAMPLED - timedelta(hours=1)).accepted


def test_unknown_test_type_is_refused() -> None:
    """TR-TYPE: only the value set's test types (PCR, rapid antigen)."""
    outcome = _judge(_test(tt="LP1234-5"), SAMPLED + timedelta(hours=1))
    assert outcome.failed == ("TR-TYPE",)


def test_recovery_179_days_after_first_positive_accepted_181_refused() -> None:
    """RR-180DAYS: first positive at most 180 days before the scan."""
    assert _judge(_recovery(), FIRST_POSITIVE + timedelta(days=179)).accepted
    late = _judge(_recovery(), FIRST_POSITIVE + timedelta(days=181))
    assert late.failed == ("RR-180DAYS",)


def test_recovery_outside_its_validity_is_refused_its_last_day_included() -> None:
    """RR-VALIDITY: df <= scan <= du, du's whole day included."""
    payload = _recovery(df="2021-02-01", du="2021-03-01")
    assert _judge(payload, datetime(2021, 1, 31, 23, 0, tzinfo=UTC)).failed == ("RR-VALIDITY",)
    assert _judge(payload, datetime(2021, 3, 1, 23, 0, tzinfo=UTC)).accepted
    assert _judge(payload, datetime(2021, 3, 2, 0, 0, tzinfo=UTC)).failed == ("RR-VALIDITY",)


def test_other_disease_is_refused() -> None:
    """GR-TARGET: a certificate about another disease than COVID-19."""
    outcome = _judge(_vaccination(tg="123456789"), datetime(2021, 9, 1, tzinfo=UTC))
    assert outcome.failed == ("GR-TARGET",)


def test_malformed_payload_fails_its_rules_without_an_exception() -> None:
    """A missing or unparsable date makes the library raise: the rule fails, no error escapes."""
    outcome = _judge(_vaccination(dt="not a date"), datetime(2021, 9, 1, tzinfo=UTC))
    assert outcome.failed == ("VR-14DAYS",)
    payload = _test()
    del payload["t"][0]["sc"]
    assert not _judge(payload, SAMPLED).accepted


def test_kind_not_accepted_is_refused_before_any_rule() -> None:
    """A place that accepts only our own passes refuses a perfectly valid DCC."""
    own_only = PlacePolicy(frozenset({Kind.PASSCODE, Kind.CARD}), DEFAULT_POLICY.rules)
    outcome = _judge(_vaccination(), datetime(2021, 9, 1, tzinfo=UTC), own_only)
    assert not outcome.accepted
    assert outcome.failed == ()
    assert "eu-dcc" in outcome.why
    assert not own_only.accepts_kind(Kind.SHC)
    assert own_only.accepts_kind(Kind.CARD)


def test_certificate_type_without_a_rule_is_refused() -> None:
    """A policy with rules for vaccinations only does not accept a test certificate."""
    vaccinations = parse_policy(
        {
            "accepts": ["eu-dcc"],
            "rules": [r for r in policy_json(DEFAULT_POLICY)["rules"] if r["id"].startswith("VR")],
        }
    )
    assert _judge(_vaccination(), datetime(2021, 9, 1, tzinfo=UTC), vaccinations).accepted
    outcome = _judge(_test(), SAMPLED + timedelta(hours=1), vaccinations)
    assert not outcome.accepted
    assert "type t" in outcome.why


def test_shc_judged_by_the_same_rules() -> None:
    """A SMART Health Card mapped onto the DCC shape meets the same rules."""
    cert = _cert(_vaccination(), kind=Kind.SHC)
    early = evaluate(
        DEFAULT_POLICY, cert, value_sets=VALUE_SETS, now=datetime(2021, 6, 2, tzinfo=UTC)
    )
    assert early.failed == ("VR-14DAYS",)


def test_scan_time_without_a_time_zone_is_refused() -> None:
    """A naive datetime would be read in the machine's zone: refused."""
    with pytest.raises(ValueError, match="time zone"):
        _judge(_vaccination(), datetime(2021, 9, 1))


def test_rules_read_value_sets_they_are_given() -> None:
    """The value sets are data: an operator's import without rapid tests refuses them."""
    pcr_only = {**VALUE_SETS, "covid-19-lab-test-type": ["LP6464-4"]}
    outcome = evaluate(
        DEFAULT_POLICY,
        _cert(_test(tt=RAPID_ANTIGEN)),
        value_sets=pcr_only,
        now=SAMPLED + timedelta(hours=1),
    )
    assert outcome.failed == ("TR-TYPE",)


def test_partial_birth_dates_read_as_certlogic_13_says() -> None:
    """dccDateOfBirth and plusTime read YYYY-MM as that month's last day (spec 1.3)."""
    adult = {
        "after": [
            {"plusTime": [{"dccDateOfBirth": [{"var": "dob"}]}, 18, "year"]},
            {"var": "now"},
        ]
    }
    assert certlogic(adult, {"dob": "2004-02", "now": "2022-02-28T23:00:00Z"}) is True
    assert certlogic(adult, {"dob": "2004-02", "now": "2022-03-01T00:00:00Z"}) is False
    assert certlogic(adult, {"dob": "2004", "now": "2022-12-30T00:00:00Z"}) is True


def test_plus_time_rolls_a_missing_day_over_like_the_reference_implementation() -> None:
    """29 February plus a year is 1 March, 31 January plus a month 3 March (JavaScript's Date);
    the library alone raises on the first."""
    year = certlogic({"plusTime": ["2020-02-29", 1, "year"]}, None)
    assert year == datetime(2021, 3, 1, tzinfo=UTC)
    month = certlogic({"plusTime": ["2021-01-31T10:00:00Z", 1, "month"]}, None)
    assert month == datetime(2021, 3, 3, 10, tzinfo=UTC)
    assert certlogic({"plusTime": ["2021-01-15", -13, "month"]}, None) == datetime(
        2019, 12, 15, tzinfo=UTC
    )


# --- an operator's policy -----------------------------------------------------------------


def _one_rule(logic: Any, **rule: Any) -> dict[str, Any]:
    base = {"id": "R-1", "description": "a rule", "certificate_types": ["v"], "logic": logic}
    base.update(rule)
    return {"accepts": ["eu-dcc"], "rules": [base]}


def test_default_policy_round_trips_through_its_json() -> None:
    """What is stored (policy_json) parses back to the same policy."""
    again = parse_policy(copy.deepcopy(policy_json(DEFAULT_POLICY)))
    assert again == DEFAULT_POLICY
    assert again.accepts == frozenset(Kind)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ([], "policy: an object"),
        ({"accepts": [], "rules": [], "extra": 1}, "unknown field 'extra'"),
        ({"accepts": ["hc1"], "rules": []}, "accepts: a list of kinds"),
        ({"accepts": ["shc", "shc"], "rules": []}, "named twice"),
        ({"accepts": [], "rules": {}}, "rules: a list"),
        (_one_rule({"eval": ["x"]}), "rules[0].logic: unknown CertLogic operation 'eval'"),
        (
            _one_rule({"and": [True, {"or": [True, False]}]}),
            "rules[0].logic.and[1]: unknown CertLogic operation 'or'",
        ),
        (_one_rule({"===": [1, 1], "!": [1]}), "exactly one operation"),
        (_one_rule({"var": {"x": 1}}), "var takes a path"),
        (_one_rule({"plusTime": ["2021-01-01", 1, "week"]}), "plusTime takes"),
        (_one_rule("x" * 300), "string longer than"),
        (_one_rule(True, certificate_types=["x"]), "certificate_types"),
        (_one_rule(True, certificate_types=[]), "certificate_types"),
        (_one_rule(True, id="has space"), "rules[0].id"),
        (_one_rule(True, description=""), "rules[0].description"),
        ({"accepts": [], "rules": [{"id": "R"}]}, "missing field"),
    ],
)
def test_policy_refused_with_a_message_naming_what_is_wrong(policy: Any, message: str) -> None:
    """Each malformed policy is refused at parse time with the path of the fault."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_policy(policy)


def test_expression_nested_too_deep_is_refused() -> None:
    """Depth is capped (the library evaluates recursively)."""
    deep: Any = True
    for _ in range(MAX_DEPTH):
        deep = {"!": [deep]}
    with pytest.raises(ValueError, match="nested deeper"):
        parse_policy(_one_rule(deep))
    shallow: Any = True
    for _ in range(MAX_DEPTH - 2):
        shallow = {"!": [shallow]}
    parse_policy(_one_rule(shallow))


def test_expression_too_large_is_refused() -> None:
    """The number of values in one rule is capped."""
    wide = {"in": [1, list(range(MAX_NODES))]}
    with pytest.raises(ValueError, match="more than"):
        parse_policy(_one_rule(wide))


def test_too_many_rules_are_refused_and_ids_must_be_unique() -> None:
    """At most MAX_RULES rules, each id once."""
    rule = _one_rule(True)["rules"][0]
    many = [{**rule, "id": f"R-{i}"} for i in range(MAX_RULES + 1)]
    with pytest.raises(ValueError, match="at most"):
        parse_policy({"accepts": [], "rules": many})
    with pytest.raises(ValueError, match="used twice"):
        parse_policy({"accepts": [], "rules": [rule, rule]})


def test_value_set_document_read_as_its_codes() -> None:
    """An eu-dcc-valuesets document gives its id and codes; another shape is refused."""
    doc = {
        "valueSetId": "covid-19-lab-result",
        "valueSetValues": {"260415000": {}, "260373001": {}},
    }
    assert value_set_codes(doc) == ("covid-19-lab-result", ["260373001", "260415000"])
    with pytest.raises(ValueError, match="valueSetId"):
        value_set_codes({"values": []})
