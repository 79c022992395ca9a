"""Place policies (DESIGN §1): which kinds of code a place accepts, and the rules a foreign
certificate must satisfy there, written in CertLogic (the EU DCC business-rule language).

CertLogic is evaluated by a library (``panzi-json-logic``'s CertLogic mode), never by hand: this
module only checks an operator's policy before it is stored (its shape, its size, and that every
operation is one CertLogic defines) and builds the data the rules read, in the EU business
rules' shape (``{"payload": …, "external": {"validationClock": …, "valueSets": …}}``), so the
EU's published rules can be used as they are. The library predates CertLogic 1.3's partial
dates: ``plusTime`` of ``YYYY`` / ``YYYY-MM`` and ``dccDateOfBirth`` are added to its operation
table as the specification defines them (the end of that year or month), which is what the
CertLogic test suite checks (``conformance/certlogic.py``).

Pure: no I/O; the scan time and the value sets are passed in.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from json_logic.cert_logic import builtins as _certlogic
from json_logic.cert_logic.apply import apply as _apply

from passcode.domain import fields
from passcode.domain.foreign import CertType, ForeignCertificate
from passcode.domain.model import Kind

MAX_RULES: Final = 64
MAX_NODES: Final = 2_000  # values in one rule's expression (operations, arguments, literals)
MAX_DEPTH: Final = 32  # nesting of one rule's expression
MAX_DESCRIPTION: Final = 500
MAX_STRING: Final = 200  # a string literal in an expression
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_YEAR = re.compile(r"(\d{4})")
_YEAR_MONTH = re.compile(r"(\d{4})-(\d{2})")
_UNITS = frozenset({"year", "month", "day", "hour"})
_CALENDAR_UNITS = frozenset({"year", "month"})
_SAFE_DAY = 28  # every month has this day
_POLICY_KEYS = frozenset({"accepts", "rules"})
_RULE_KEYS = frozenset({"id", "description", "certificate_types", "logic"})

Json = Any  # a JSON value as json.loads returns it


def _end_of_partial(value: object) -> object:
    """A partial date (``YYYY``, ``YYYY-MM``) as the last day it may mean (CertLogic 1.3)."""
    if not isinstance(value, str):
        return value
    if _YEAR.fullmatch(value):
        return f"{value}-12-31"
    month = _YEAR_MONTH.fullmatch(value)
    if month and 1 <= int(month[2]) <= 12:
        last = calendar.monthrange(int(month[1]), int(month[2]))[1]
        return f"{value}-{last:02d}"
    return value


def _plus_time(
    data: Json = None, when: Json = None, amount: Json = None, unit: Json = None, *_: Json
) -> datetime:
    """The library's ``plusTime``, reading partial dates as CertLogic 1.3 does; a day past the
    end of the target month rolls over into the next, as the reference implementation's
    JavaScript ``Date`` does (the library raises on 29 February plus a year)."""
    when = _end_of_partial(when)
    if unit in _CALENDAR_UNITS:
        start = _certlogic.parse_time(when)
        if start.day > _SAFE_DAY:
            shifted: datetime = _certlogic.op_plus_time(data, start.replace(day=1), amount, unit)
            return shifted + timedelta(days=start.day - 1)
    result: datetime = _certlogic.op_plus_time(data, when, amount, unit)
    return result


def _dcc_date_of_birth(data: Json = None, dob: Json = None, *_: Json) -> datetime:
    """CertLogic 1.3's ``dccDateOfBirth``: a DCC's (possibly partial) birth date as a date-time."""
    result: datetime = _certlogic.parse_time(_end_of_partial(dob))
    return result


OPERATIONS: Final[Mapping[str, Any]] = {
    **_certlogic.BUILTINS,
    "plusTime": _plus_time,
    "dccDateOfBirth": _dcc_date_of_birth,
}
SPECIAL_FORMS: Final = frozenset({"if", "and", "reduce"})  # the library's apply handles these
KNOWN_OPERATIONS: Final = frozenset(OPERATIONS) | SPECIAL_FORMS

# Errors the library raises on data a rule did not expect (a missing date, a bad number): the
# rule fails, the certificate is not accepted; the scan never fails for it.
_EVAL_ERRORS = (ValueError, TypeError, ReferenceError, ArithmeticError, LookupError)


def certlogic(expression: Json, data: Json) -> Json:
    """``expression`` evaluated on ``data`` by the library, with CertLogic 1.3's operations."""
    return _apply(expression, data, OPERATIONS)


@dataclass(frozen=True, slots=True)
class Rule:
    """One CertLogic rule: passes when ``logic`` evaluates to exactly ``true``."""

    id: str
    description: str
    types: frozenset[CertType]  # the certificate types it applies to
    logic: Json


@dataclass(frozen=True, slots=True)
class PlacePolicy:
    """What a place accepts. ``version`` is the stored version (0: not stored, the default)."""

    accepts: frozenset[Kind]
    rules: tuple[Rule, ...]
    version: int = 0

    def accepts_kind(self, kind: Kind) -> bool:
        """Whether a code of ``kind`` may be admitted here at all (our own passes and cards are
        judged by this alone; foreign certificates by :func:`evaluate` too)."""
        return kind in self.accepts


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """A policy's answer for one certificate: ``failed`` names the rules that did not pass;
    ``why`` says it for logs (rule ids and types only, nothing of the holder)."""

    accepted: bool
    failed: tuple[str, ...] = ()
    why: str = ""


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("the scan time must carry a time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unix_rfc3339(seconds: int | None) -> str | None:
    return None if seconds is None else _rfc3339(datetime.fromtimestamp(seconds, UTC))


def evaluate(
    policy: PlacePolicy,
    cert: ForeignCertificate,
    *,
    value_sets: Mapping[str, Sequence[str]],
    now: datetime,
    country_code: str | None = None,
) -> PolicyOutcome:
    """Judge ``cert`` by ``policy`` at ``now`` (the scan time, time-zone aware).

    Not accepted: a kind the policy does not accept, a certificate of a type (v/t/r) it has no
    rule for, or any rule that applies to one of its types not evaluating to ``true`` (an error
    while evaluating is a failure, never an exception).
    """
    if cert.kind not in policy.accepts:
        return PolicyOutcome(False, why=f"kind {cert.kind.value} not accepted")
    if not cert.types:
        return PolicyOutcome(False, why="the certificate attests nothing")
    applicable = [rule for rule in policy.rules if rule.types & cert.types]
    covered = frozenset().union(*(rule.types for rule in applicable)) & cert.types
    if covered != cert.types:
        missing = ",".join(sorted(t.value for t in cert.types - covered))
        return PolicyOutcome(False, why=f"no rule for certificate type {missing}")
    data = {
        "payload": cert.payload if isinstance(cert.payload, dict) else dict(cert.payload),
        "external": {
            "validationClock": _rfc3339(now),
            "valueSets": value_sets,
            "countryCode": country_code,
            "issuerCountryCode": cert.issuer if cert.kind is Kind.EU_DCC else None,
            "iat": _unix_rfc3339(cert.issued_at),
            "exp": _unix_rfc3339(cert.expires_at),
        },
    }
    failed = []
    for rule in applicable:
        try:
            passed = _apply(rule.logic, data, OPERATIONS) is True
        except _EVAL_ERRORS:
            passed = False
        if not passed:
            failed.append(rule.id)
    if failed:
        return PolicyOutcome(False, tuple(failed), "rules failed: " + ", ".join(failed))
    return PolicyOutcome(True)


# --- an operator's policy, checked before it is stored ----------------------------------------


def _check_expression(expr: Json, where: str) -> None:
    """Refuse what CertLogic does not define, and expressions past the size limits."""
    nodes = 0
    stack: list[tuple[Json, str, int]] = [(expr, where, 1)]
    while stack:
        value, at, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"{where}: expression has more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise ValueError(f"{at}: expression nested deeper than {MAX_DEPTH}")
        if isinstance(value, list):
            stack.extend((item, f"{at}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, dict):
            if len(value) != 1:
                raise ValueError(
                    f"{at}: an object must hold exactly one operation, not {len(value)} keys"
                )
            ((op, args),) = value.items()
            if op not in KNOWN_OPERATIONS:
                raise ValueError(f"{at}: unknown CertLogic operation {op!r}")
            _check_arguments(op, args, at)
            items = args if isinstance(args, list) else [args]
            stack.extend((item, f"{at}.{op}[{i}]", depth + 1) for i, item in enumerate(items))
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                raise ValueError(f"{at}: string longer than {MAX_STRING} characters")
            try:  # no certificate field holds them; PostgreSQL's jsonb cannot store a NUL
                fields.characters(value)
            except fields.FieldError as exc:
                raise ValueError(f"{at}: string {exc}") from exc
        elif value is not None and not isinstance(value, bool | int | float):
            raise ValueError(f"{at}: not a JSON value")


def _check_arguments(op: str, args: Json, at: str) -> None:
    """The few argument shapes the library would silently misread."""
    if (
        op == "var"
        and not isinstance(args, str | int)
        and not (isinstance(args, list) and args and isinstance(args[0], str | int))
    ):
        raise ValueError(f"{at}: var takes a path (a string or an index)")
    if op == "plusTime":
        unit = args[2] if isinstance(args, list) and len(args) == 3 else None
        if not isinstance(unit, str) or unit not in _UNITS:
            raise ValueError(
                f"{at}: plusTime takes [date-time, amount, unit] with unit one of "
                + ", ".join(sorted(_UNITS))
            )


def _parse_rule(obj: Json, where: str) -> Rule:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a rule is an object")
    unknown = set(obj) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    missing = _RULE_KEYS - set(obj)
    if missing:
        raise ValueError(f"{where}: missing field {sorted(missing)[0]!r}")
    rule_id = obj["id"]
    if not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
        raise ValueError(f"{where}.id: 1 to 64 letters, digits, '.', '_' or '-'")
    description = obj["description"]
    if not isinstance(description, str) or not 0 < len(description) <= MAX_DESCRIPTION:
        raise ValueError(f"{where}.description: text of 1 to {MAX_DESCRIPTION} characters")
    types = obj["certificate_types"]
    allowed = {t.value for t in CertType}
    if (
        not isinstance(types, list)
        or not types
        or any(not isinstance(t, str) or t not in allowed for t in types)
        or len(set(types)) != len(types)
    ):
        raise ValueError(f"{where}.certificate_types: a non-empty list of distinct v, t, r")
    _check_expression(obj["logic"], f"{where}.logic")
    return Rule(rule_id, description, frozenset(CertType(t) for t in types), obj["logic"])


def parse_policy(obj: Json, *, version: int = 0) -> PlacePolicy:
    """An operator's policy JSON (``{"accepts": [kinds], "rules": [rules]}``), checked whole;
    ValueError naming the first thing wrong (its path, e.g. ``rules[2].logic.and[1]``)."""
    if not isinstance(obj, dict):
        raise ValueError("policy: an object with accepts and rules")
    unknown = set(obj) - _POLICY_KEYS
    if unknown:
        raise ValueError(f"policy: unknown field {sorted(unknown)[0]!r}")
    accepts, rules = obj.get("accepts"), obj.get("rules")
    kinds = {k.value for k in Kind}
    if not isinstance(accepts, list) or any(
        not isinstance(k, str) or k not in kinds for k in accepts
    ):
        raise ValueError("accepts: a list of kinds among " + ", ".join(sorted(kinds)))
    if len(set(accepts)) != len(accepts):
        raise ValueError("accepts: a kind is named twice")
    if not isinstance(rules, list):
        raise ValueError("rules: a list of rules")
    if len(rules) > MAX_RULES:
        raise ValueError(f"rules: at most {MAX_RULES}")
    parsed = tuple(_parse_rule(rule, f"rules[{i}]") for i, rule in enumerate(rules))
    ids = [rule.id for rule in parsed]
    for i, rule_id in enumerate(ids):
        if rule_id in ids[:i]:
            raise ValueError(f"rules[{i}].id: {rule_id!r} is used twice")
    return PlacePolicy(frozenset(Kind(k) for k in accepts), parsed, version)


def policy_json(policy: PlacePolicy) -> dict[str, Json]:
    """``policy`` as the JSON :func:`parse_policy` reads (stored, and shown to operators)."""
    return {
        "accepts": sorted(k.value for k in policy.accepts),
        "rules": [
            {
                "id": rule.id,
                "description": rule.description,
                "certificate_types": sorted(t.value for t in rule.types),
                "logic": rule.logic,
            }
            for rule in policy.rules
        ],
    }


# --- value sets --------------------------------------------------------------------------------


def value_set_codes(document: Mapping[str, Json]) -> tuple[str, list[str]]:
    """One eu-dcc-valuesets document (``valueSetId``, ``valueSetValues``) as the rules read it:
    its id and its codes. ValueError for a document of another shape."""
    set_id, values = document.get("valueSetId"), document.get("valueSetValues")
    if not isinstance(set_id, str) or not isinstance(values, dict):
        raise ValueError("a value set has a valueSetId and valueSetValues")
    return set_id, sorted(values)


# What the default policy needs when an operator has imported none (eu-dcc-valuesets' codes).
PCR: Final = "LP6464-4"  # nucleic acid amplification
RAPID_ANTIGEN: Final = "LP217198-3"  # rapid immunoassay
NOT_DETECTED: Final = "260415000"
DETECTED: Final = "260373001"
COVID_19: Final = "840539006"
VALUE_SETS: Final[Mapping[str, list[str]]] = {
    "covid-19-lab-test-type": [PCR, RAPID_ANTIGEN],
    "covid-19-lab-result": [NOT_DETECTED, DETECTED],
    "disease-agent-targeted": [COVID_19],
}


# --- the default policy ------------------------------------------------------------------------

_CLOCK: Final = {"plusTime": [{"var": "external.validationClock"}, 0, "day"]}


def _at(path: str, amount: int = 0, unit: str = "day") -> dict[str, Json]:
    return {"plusTime": [{"var": path}, amount, unit]}


def _within(path: str, hours: int) -> Json:
    """Sampled no later than the scan and at most ``hours`` before it."""
    return {"not-after": [_at(path, 0, "hour"), _CLOCK, _at(path, hours, "hour")]}


def _test_window(test_type: str, hours: int) -> Json:
    return {
        "if": [
            {"===": [{"var": "payload.t.0.tt"}, test_type]},
            _within("payload.t.0.sc", hours),
            True,
        ]
    }


_DEFAULT_POLICY_JSON: Final[dict[str, Json]] = {
    "accepts": [k.value for k in Kind],
    "rules": [
        {
            "id": "GR-TARGET",
            "description": "The certificate is about COVID-19.",
            "certificate_types": ["v", "t", "r"],
            "logic": {
                "in": [
                    {
                        "if": [
                            {"var": "payload.v.0"},
                            {"var": "payload.v.0.tg"},
                            {
                                "if": [
                                    {"var": "payload.t.0"},
                                    {"var": "payload.t.0.tg"},
                                    {"var": "payload.r.0.tg"},
                                ]
                            },
                        ]
                    },
                    {"var": "external.valueSets.disease-agent-targeted"},
                ]
            },
        },
        {
            "id": "VR-COURSE",
            "description": "The vaccination course is complete (dose number at least the"
            " series' doses).",
            "certificate_types": ["v"],
            "logic": {
                "and": [
                    {"var": "payload.v.0.dn"},
                    {"var": "payload.v.0.sd"},
                    {">=": [{"var": "payload.v.0.dn"}, {"var": "payload.v.0.sd"}]},
                ]
            },
        },
        {
            "id": "VR-14DAYS",
            "description": "The last dose was given at least 14 days before the scan.",
            "certificate_types": ["v"],
            "logic": {"not-before": [_CLOCK, _at("payload.v.0.dt", 14)]},
        },
        {
            "id": "TR-TYPE",
            "description": "The test is a PCR or a rapid antigen test.",
            "certificate_types": ["t"],
            "logic": {
                "in": [
                    {"var": "payload.t.0.tt"},
                    {"var": "external.valueSets.covid-19-lab-test-type"},
                ]
            },
        },
        {
            "id": "TR-RESULT",
            "description": "The test result is 'not detected'.",
            "certificate_types": ["t"],
            "logic": {"===": [{"var": "payload.t.0.tr"}, NOT_DETECTED]},
        },
        {
            "id": "TR-PCR-72H",
            "description": "A PCR test was sampled at most 72 hours before the scan.",
            "certificate_types": ["t"],
            "logic": _test_window(PCR, 72),
        },
        {
            "id": "TR-RAT-48H",
            "description": "A rapid antigen test was sampled at most 48 hours before the scan.",
            "certificate_types": ["t"],
            "logic": _test_window(RAPID_ANTIGEN, 48),
        },
        {
            "id": "RR-180DAYS",
            "description": "The first positive test was at most 180 days before the scan.",
            "certificate_types": ["r"],
            "logic": {"not-after": [_at("payload.r.0.fr"), _CLOCK, _at("payload.r.0.fr", 180)]},
        },
        {
            "id": "RR-VALIDITY",
            "description": "The scan falls within the certificate's validity (df to du,"
            " both days included).",
            "certificate_types": ["r"],
            "logic": {
                "and": [
                    {"not-before": [_CLOCK, _at("payload.r.0.df")]},
                    {"before": [_CLOCK, _at("payload.r.0.du", 1)]},
                ]
            },
        },
    ],
}

DEFAULT_POLICY: Final = parse_policy(_DEFAULT_POLICY_JSON)
