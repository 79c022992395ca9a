"""JSON Schemas of every body: validation and the OpenAPI document both read these.

They use only keywords that mean the same in JSON Schema draft 7 (what fastjsonschema compiles)
and 2020-12 (what OpenAPI 3.1 speaks).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fastjsonschema

from passcode.domain import fields
from passcode.domain.fields import DATETIME_PATTERN
from passcode.domain.model import Color, Decision, Kind, Reason, StatusReason, Symptom

Schema = dict[str, Any]

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _enum(values: type[Any]) -> Schema:
    return {"type": "string", "enum": [v.value for v in values]}


# The schemas check the shape; each value's kind is then checked by its rule in
# passcode.domain.fields (the range of a time, the characters of a text), which these
# descriptions state for the document's readers.
_TIME_RANGE = "from 2000-01-01 to 2199-12-31 (UTC)"
DATETIME: Schema = {
    "type": "string",
    "pattern": DATETIME_PATTERN,
    "maxLength": fields.MAX_TIME_TEXT,
    "description": f"RFC 3339 with an offset; {_TIME_RANGE}",
}
_LINE = (
    "no control characters (NUL, CR, LF, tab…), line separators or invisible format"
    " characters (bidirectional controls); surrounding white space is trimmed; not blank"
)


def _line(max_length: int, what: str) -> Schema:
    """A line of text (passcode.domain.fields.line)."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "description": f"{what}; {_LINE}",
    }


PLACE: Schema = _line(
    fields.MAX_PLACE,
    "A place name, the same rule for terminals, risk places and tracing",
)
USER_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": fields.MAX_USER_ID,
    "description": "The identity provider's user id (an ID token's sub), exactly: printable"
    " characters, no surrounding white space",
}
UUID: Schema = {"type": "string", "pattern": UUID_PATTERN}

VERIFY_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code"],
    "properties": {
        # a QR code holds at most 4,296 characters in alphanumeric mode (our passes, EU DCCs)
        "code": {"type": "string", "minLength": 1, "maxLength": 4296},
        "scan_id": UUID,
        "scanned_at": {
            **DATETIME,
            "description": "The terminal's clock at the scan (kept beside the server's): RFC"
            " 3339 with an offset, at most the scan retention (PASSCODE_SCAN_RETENTION_DAYS,"
            f" 28 days) before and {fields.TERMINAL_AHEAD // timedelta(minutes=1)} minutes"
            " after the server's time",
        },
    },
}

VERIFY_BATCH_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scans"],
    "properties": {
        "scans": {"type": "array", "minItems": 1, "maxItems": 500, "items": VERIFY_REQUEST}
    },
}

HOLDER: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string"}},
}

VERIFY_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision", "color", "reason", "holder", "scan_id", "server_time", "kind"],
    "properties": {
        "decision": {
            "type": "string",
            "enum": [d.value for d in Decision if d is not Decision.UNVERIFIED],
        },
        "color": {"oneOf": [_enum(Color), {"type": "null"}]},
        "reason": _enum(Reason),
        "holder": {"oneOf": [HOLDER, {"type": "null"}]},
        "scan_id": UUID,
        "server_time": DATETIME,
        # DESIGN §3 (一码通用): what the code was; null for a text of no known kind
        "kind": {"oneOf": [_enum(Kind), {"type": "null"}]},
    },
}

VERIFY_BATCH_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["results"],
    "properties": {"results": {"type": "array", "items": VERIFY_RESPONSE}},
}

REGION = _line(fields.MAX_REGION, "A region")

DECLARATION_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["temperature_c", "symptoms", "regions_visited", "close_contact"],
    "properties": {
        "temperature_c": {"type": "number", "minimum": 30, "maximum": 45},
        "symptoms": {"type": "array", "maxItems": 16, "uniqueItems": True, "items": _enum(Symptom)},
        "regions_visited": {"type": "array", "maxItems": 32, "uniqueItems": True, "items": REGION},
        "close_contact": {"type": "boolean"},
    },
}

STATUS: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["color", "valid_until", "version"],
    "properties": {
        "color": {"oneOf": [_enum(Color), {"type": "null"}]},
        "valid_until": DATETIME,
        "version": {"type": "integer", "minimum": 0},
    },
}

DECLARATION_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["declaration_id", "declared_at", "status"],
    "properties": {
        "declaration_id": {"type": "integer"},
        "declared_at": DATETIME,
        "status": STATUS,
    },
}

PASS_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code", "color", "issued_at", "expires_at", "refresh_in", "holder"],
    "properties": {
        "code": {"type": "string", "pattern": "^PC1:[0-9A-Z $%*+\\-./:]+$"},
        "color": _enum(Color),
        "issued_at": DATETIME,
        "expires_at": DATETIME,
        "refresh_in": {"type": "integer", "minimum": 1},
        "holder": HOLDER,
    },
}

OVERRIDE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id", "color", "reason"],
    "properties": {
        "user_id": USER_ID,
        "color": _enum(Color),
        "reason": _enum(StatusReason),
        "valid_from": DATETIME,
        "valid_until": DATETIME,
    },
}

OVERRIDE_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["override_id", "status"],
    "properties": {"override_id": {"type": "integer"}, "status": STATUS},
}

TERMINAL_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["place"],
    "properties": {"place": PLACE},
}

TERMINAL_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "place", "created_at"],
    "properties": {
        "id": UUID,
        "place": {"type": "string"},
        "key": {"type": "string", "description": "shown once, at creation; stored only hashed"},
        "created_at": DATETIME,
        "revoked": {"type": "boolean"},
    },
}

REPLAY_COUNT_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["since", "until", "replays", "by_place"],
    "properties": {
        "since": DATETIME,
        "until": DATETIME,
        "replays": {"type": "integer", "minimum": 0},
        "by_place": {
            "type": "array",
            "maxItems": 50,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["place", "replays"],
                "properties": {
                    "place": {"type": "string"},
                    "replays": {"type": "integer", "minimum": 1},
                },
            },
        },
    },
}

AUDIT_PAGE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entries", "next_cursor"],
    "properties": {
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "at", "actor", "action", "outcome", "target", "rows"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "at": DATETIME,
                    "actor": {"type": "string"},
                    "action": {"type": "string"},
                    "outcome": {"enum": ["ok", "denied"]},
                    "target": {"type": "object"},
                    "rows": {"type": ["integer", "null"], "minimum": 0},
                },
            },
        },
        "next_cursor": {
            "type": ["integer", "null"],
            "description": "Pass as `cursor` for the next page; null on the last page",
        },
    },
}

DEAD_LETTERS_PAGE_MAX = 1000  # dead letters a page of GET /v1/admin/dead-letters holds

DEAD_LETTER: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "stream", "entry_id", "fields", "reason", "first_seen", "last_tried"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "stream": {"type": "string", "description": "The Redis stream shard it was read from"},
        "entry_id": {"type": "string", "description": "Its stream entry id"},
        "fields": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The entry's fields as Redis held them (name, value, …), UTF-8 with"
            " any other byte as a \\xNN escape; ids, times and enum values, never a name",
        },
        "reason": {"type": "string", "description": "Why it could not be stored"},
        "first_seen": {"type": "string", "format": "date-time"},
        "last_tried": {
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            "description": "The last replay that could not store it",
        },
    },
}

DEAD_LETTER_PAGE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["total", "entries", "next_cursor"],
    "properties": {
        "total": {"type": "integer", "minimum": 0, "description": "Dead letters kept in all"},
        "entries": {"type": "array", "maxItems": DEAD_LETTERS_PAGE_MAX, "items": DEAD_LETTER},
        "next_cursor": {
            "type": ["integer", "null"],
            "description": "Pass as cursor for the next page; null on the last page",
        },
    },
}

DEAD_LETTER_REPLAY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["replayed", "failed", "remaining"],
    "properties": {
        "replayed": {"type": "integer", "minimum": 0, "description": "Now in the scan log"},
        "failed": {"type": "integer", "minimum": 0, "description": "Still not storable"},
        "remaining": {"type": "integer", "minimum": 0, "description": "Dead letters left"},
    },
}

TRACE_CURSOR: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": "^[A-Za-z0-9_-]+$",
    "description": "Opaque; the next_cursor of the previous page of the same query",
}

TRACE_CITIZEN_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id", "since", "until"],
    "properties": {
        "user_id": USER_ID,
        "since": DATETIME,
        "until": DATETIME,
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        "cursor": TRACE_CURSOR,
    },
}

_TRACE_SCAN: Schema = {
    "scanned_at": DATETIME,
    "scan_id": UUID,
    "terminal_id": UUID,
    "decision": {"type": "string", "enum": [d.value for d in Decision]},
    "color": {"oneOf": [_enum(Color), {"type": "null"}]},
}

TRACE_SUBJECT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["subject_id", "user_id", "name"],
    "properties": {
        "subject_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "user_id": {
            "type": ["string", "null"],
            "description": "The identity provider's user id, unsealed for this audited query;"
            " null if it cannot be read (unknown subject, or sealed under another secret)",
        },
        "name": {"type": ["string", "null"], "description": "Masked, as stored"},
    },
}


def _trace_page(entry: Schema) -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["entries", "next_cursor"],
        "properties": {
            "entries": {"type": "array", "maxItems": 1000, "items": entry},
            "next_cursor": {
                "oneOf": [TRACE_CURSOR, {"type": "null"}],
                "description": "Pass as cursor for the next page; null on the last page",
            },
        },
    }


TRACE_PLACE_PAGE: Schema = _trace_page(
    {
        "type": "object",
        "additionalProperties": False,
        "required": [*_TRACE_SCAN, "subject"],
        "properties": {
            **_TRACE_SCAN,
            "subject": {
                "oneOf": [TRACE_SUBJECT, {"type": "null"}],
                "description": "Who was scanned; null for a code that named no one (invalid)",
            },
        },
    }
)

TRACE_CITIZEN_PAGE: Schema = _trace_page(
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["place", *_TRACE_SCAN],
        "properties": {"place": {"type": "string"}, **_TRACE_SCAN},
    }
)

_COUNT: Schema = {"type": "integer", "minimum": 0}

TEST_RESULTS_CSV: Schema = {
    "type": "string",
    "description": "UTF-8 CSV (RFC 4180 quoting; LF or CRLF; a leading BOM is ignored; blank"
    " lines are skipped). Line 1 is the header `user_id,result,tested_at`; each other line is"
    " one record: user_id (1-128 printable characters, no surrounding space), result (`positive`"
    " or `negative`, any case), tested_at (RFC 3339 with an offset; not in the future beyond"
    " PASSCODE_CLOCK_SKEW, not more than a year ago). At most PASSCODE_MAX_CSV_BODY bytes"
    " (8 MiB) and PASSCODE_MAX_CSV_ROWS records (100,000).",
}

TEST_RESULTS_UPLOAD: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "rows",
        "applied",
        "duplicates",
        "rejected",
        "positives",
        "errors",
        "errors_truncated",
    ],
    "properties": {
        "rows": {**_COUNT, "description": "Records in the file (non-blank lines after line 1)"},
        "applied": {**_COUNT, "description": "Results newly recorded"},
        "duplicates": {
            **_COUNT,
            "description": "Good records already on file (an earlier upload, or repeated in"
            " this one): nothing applied",
        },
        "rejected": {**_COUNT, "description": "Bad records, none applied"},
        "positives": {**_COUNT, "description": "Of the applied, positive: now red"},
        "errors": {
            "type": "array",
            "maxItems": 1000,
            "description": "The first 1000 bad records: line number in the file (line 1 is the"
            " header) and what is wrong",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["line", "error"],
                "properties": {
                    "line": {"type": "integer", "minimum": 2},
                    "error": {"type": "string"},
                },
            },
        },
        "errors_truncated": {"type": "boolean", "description": "More than 1000 bad records"},
    },
}

RISK_COLORS = [Color.YELLOW.value, Color.RED.value]

RISK_PLACE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["place", "since", "until", "note"],
    "properties": {
        "place": {
            **PLACE,
            "description": "As terminals there are registered (scans carry their place); " + _LINE,
        },
        "since": {
            **DATETIME,
            "description": "Start of the window, inclusive; within the scan retention (plus a"
            " day) of now",
        },
        "until": {
            **DATETIME,
            "description": "End of the window, exclusive; not in the future, and at most the"
            " scan retention (28 days) after since",
        },
        "color": {"type": "string", "enum": RISK_COLORS, "default": Color.YELLOW.value},
        "note": _line(fields.MAX_NOTE, "Reason"),
        "exposure_until": {
            **DATETIME,
            "description": "When the exposure ends, at most 366 days ahead; omitted: when an"
            " authority's override (given after the marking) releases the subject",
        },
    },
}

RISK_PLACE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "place",
        "since",
        "until",
        "color",
        "note",
        "exposure_until",
        "created_by",
        "created_at",
        "state",
        "affected",
        "processed",
        "started_at",
        "finished_at",
        "error",
        "links",
    ],
    "properties": {
        "id": UUID,
        "place": {"type": "string"},
        "since": DATETIME,
        "until": DATETIME,
        "color": {"type": "string", "enum": RISK_COLORS},
        "note": {"type": "string"},
        "exposure_until": {"oneOf": [DATETIME, {"type": "null"}]},
        "created_by": {"type": "string"},
        "created_at": DATETIME,
        "state": {"type": "string", "enum": ["pending", "running", "done", "failed"]},
        "affected": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Citizens who scanned there in the window; null until the job looked",
        },
        "processed": {
            "type": "integer",
            "minimum": 0,
            "description": "Of those, how many have their exposure and new status",
        },
        "started_at": {"oneOf": [DATETIME, {"type": "null"}]},
        "finished_at": {"oneOf": [DATETIME, {"type": "null"}]},
        "error": {"type": ["string", "null"], "description": "Why the job failed"},
        "links": {
            "type": "object",
            "additionalProperties": False,
            "required": ["self"],
            "properties": {"self": {"type": "string"}},
        },
    },
}

# The trust store (issue 14). Limits match passcode.service.trust (MAX_SIGNERS, MAX_CRLS).
ISSUER_URL: Schema = {
    "type": "string",
    "pattern": "^https://[\\x21-\\x7e]*[\\x21-\\x2e\\x30-\\x7e]$",
    "maxLength": 512,
    "description": "A SMART Health Card issuer's URL (iss): https, no trailing slash",
}
_CERTIFICATE_LIST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["certificates"],
    "properties": {
        "certificates": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20_000,
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": 24_000,
                "description": "A document signer certificate, base64 DER",
            },
        }
    },
}
TRUST_DCC_REQUEST: Schema = {
    "description": "EU DCC document signer certificates: the EU gateway's trust-list JSON as it"
    " serves it, or {certificates: [<base64 DER>, …]}",
    "anyOf": [
        _CERTIFICATE_LIST,
        {
            "type": ["array", "object"],
            "not": {"type": "object", "required": ["certificates"]},
            "description": "A trust list as the EU DCC gateway serves it",
        },
    ],
}
TRUST_DCC_IMPORTED: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "source", "certificates", "added", "updated", "removed", "kids"],
    "properties": {
        "version": {"type": "integer", "minimum": 1, "description": "The trust store's"},
        "source": {"type": "string", "enum": ["trust-list", "certificates", "der-list"]},
        "certificates": {"type": "integer", "minimum": 1, "description": "Distinct kids"},
        "added": {"type": "integer", "minimum": 0},
        "updated": {"type": "integer", "minimum": 0},
        "removed": {"type": "integer", "minimum": 0, "description": "By replace=true"},
        "kids": {"type": "array", "items": {"type": "string"}},
    },
}
TRUST_SHC_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["iss", "jwks"],
    "properties": {
        "iss": ISSUER_URL,
        "name": _line(fields.MAX_PLACE, "The issuer's display name"),
        "jwks": {
            "type": "object",
            "required": ["keys"],
            "properties": {"keys": {"type": "array", "minItems": 1, "maxItems": 100}},
            "description": "The issuer's JWK Set (its /.well-known/jwks.json): EC P-256"
            " signing keys (use sig, alg ES256); public keys only",
        },
        "crls": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "object"},
            "description": "Revocation lists (its /.well-known/crl/<kid>.json), one per kid",
        },
    },
}
TRUST_SHC_IMPORTED: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "iss", "new", "keys", "crls"],
    "properties": {
        "version": {"type": "integer", "minimum": 1},
        "iss": {"type": "string"},
        "new": {"type": "boolean", "description": "Not trusted before this import"},
        "keys": {"type": "integer", "minimum": 1},
        "crls": {"type": "integer", "minimum": 0},
    },
}
TRUST_DOCUMENT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "dcc", "shc"],
    "properties": {
        "version": {"type": "integer", "minimum": 0, "description": "The trust store's"},
        "dcc": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kid", "country", "certificate"],
                "properties": {
                    "kid": {"type": "string", "description": "base64, 8 bytes"},
                    "country": {"type": ["string", "null"]},
                    "certificate": {"type": "string", "description": "base64 DER"},
                },
            },
        },
        "shc": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["iss", "name", "keys", "crl"],
                "properties": {
                    "iss": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "keys": {"type": "object", "description": "The issuer's JWK Set"},
                    "crl": {
                        "type": "object",
                        "description": "Its revocation lists by kid, as the spec writes them",
                        "additionalProperties": {"type": "object"},
                    },
                },
            },
        },
    },
}

PROBLEM: Schema = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "string"}},
        "limit": {"type": "integer", "description": "413 only: the body limit in bytes"},
    },
}

UNVERIFIED: Schema = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "decision", "reason"],
    "properties": {
        **PROBLEM["properties"],
        "decision": {"const": Decision.UNVERIFIED.value},
        "reason": {"const": Reason.STATUS_UNAVAILABLE.value},
        "scan_id": UUID,
        "server_time": DATETIME,
    },
}

JWK: Schema = {
    "type": "object",
    "required": ["kty", "crv", "x", "kid", "alg", "use", "not_before"],
    "properties": {
        "kty": {"const": "OKP"},
        "crv": {"const": "Ed25519"},
        "x": {"type": "string"},
        "kid": {"type": "string"},
        "alg": {"const": "EdDSA"},
        "use": {"const": "sig"},
        "not_before": DATETIME,
        "not_after": {"oneOf": [DATETIME, {"type": "null"}]},
    },
}

KEY_SET: Schema = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": JWK}},
}

HEALTH: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        "tasks": {
            "type": "object",
            "description": "each background task under the supervisor, by name",
            "additionalProperties": {
                "type": "object",
                "required": ["state", "failures", "restarts", "last_error"],
                "properties": {
                    "state": {"type": "string", "description": "running, restarting or failing"},
                    "failures": {"type": "integer", "minimum": 0},
                    "restarts": {"type": "integer", "minimum": 0},
                    "last_error": {
                        "type": ["string", "null"],
                        "description": "the class of the last failure, never its message",
                    },
                },
            },
        },
        "dead_letters": {
            "type": "integer",
            "minimum": 0,
            "description": "scan entries this process's drain kept as dead letters",
        },
    },
}


CARD_SERIAL: Schema = {
    "type": "string",
    "pattern": "^(?:[0-9a-f]{2}){8,32}$",
    "description": "A printed card's serial: 8 to 32 bytes (16 in practice) in lower-case hex",
}
CARD_DAYS_MAX = 365  # a printed card lives at most a year (passcode.domain.cardsheet.MAX_DAYS)

CARD_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id", "name"],
    "properties": {
        "user_id": {
            **USER_ID,
            "description": "The identity provider's user id the city holds for the person"
            " (found or created by its keyed hash; never an ID-card number)",
        },
        "name": _line(100, "The person's name: only its mask (张*三) is stored or printed"),
        "days": {
            "type": "integer",
            "minimum": 1,
            "maximum": CARD_DAYS_MAX,
            "description": "Lifetime in days (default PASSCODE_CARD_DAYS, 180)",
        },
    },
}

CARD: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["serial", "holder", "issued_at", "expires_at", "revoked_at", "sheet_url"],
    "properties": {
        "serial": CARD_SERIAL,
        "code": {
            "type": "string",
            "pattern": "^PC1:[0-9A-Z $%*+\\-./:]+$",
            "description": "The printed code (a pass with the card claim, docs/pass-format.md)",
        },
        "holder": HOLDER,
        "issued_at": DATETIME,
        "expires_at": DATETIME,
        "revoked_at": {"oneOf": [DATETIME, {"type": "null"}]},
        "png_url": {"type": "string"},
        "sheet_url": {"type": "string"},
        "png_base64": {"type": "string", "description": "The card's QR as a PNG, base64"},
    },
}

CARD_REVOKE_REASONS = ["lost", "stolen", "damaged", "replaced"]
CARD_REVOKE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "enum": CARD_REVOKE_REASONS}},
}


# --- places and their policies (passcode.api.places) ---
_PLACE_TYPE = _line(64, "A place type (metro, hospital, mall, office, …)")
PLACE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "name"],
    "properties": {"type": _PLACE_TYPE, "name": _line(fields.MAX_PLACE, "The place's name")},
}
PLACE_POLICY_REQUEST: Schema = {
    "type": "object",
    "required": ["accepts", "rules"],
    "description": "Which kinds a place accepts, and CertLogic rules (the EU DCC business-rule"
    " language) a foreign certificate must all pass; each rule applies to the certificate types"
    " it names (v, t, r) and a type no rule names is not accepted. Rules read"
    " {payload: <the DCC payload>, external: {validationClock, valueSets, countryCode,"
    " issuerCountryCode, iat, exp}}. At most 64 rules, 2000 values and 32 levels per"
    " expression; an unknown CertLogic operation is refused",
    "properties": {
        "accepts": {"type": "array", "items": _enum(Kind), "uniqueItems": True},
        "rules": {
            "type": "array",
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["id", "description", "certificate_types", "logic"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                    "description": {"type": "string", "minLength": 1, "maxLength": 500},
                    "certificate_types": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": "string", "enum": ["v", "t", "r"]},
                    },
                    "logic": {"description": "A CertLogic expression"},
                },
            },
        },
    },
}
PLACE_POLICY: Schema = {
    "type": "object",
    "required": ["source", "version", "accepts", "rules"],
    "properties": {
        "source": {
            "type": "string",
            "enum": ["place", "type", "default"],
            "description": "The place's own policy, its type's, or the default policy",
        },
        "version": {"type": "integer", "minimum": 0, "description": "0: the default policy"},
        "accepts": {"type": "array", "items": _enum(Kind)},
        "rules": {"type": "array", "items": {"type": "object"}},
    },
}
PLACE_VIEW: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["place", "name", "type", "policy"],
    "properties": {
        "place": {"type": "string", "description": "As its terminals carry it"},
        "name": {"type": ["string", "null"], "description": "null: not described yet"},
        "type": {"type": ["string", "null"]},
        "policy": PLACE_POLICY,
    },
}
PLACE_POLICY_SET: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scope", "target", "version", "policy"],
    "properties": {
        "scope": {"type": "string", "enum": ["type", "place"]},
        "target": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "policy": PLACE_POLICY_REQUEST,
    },
}


# --- venue check-in (场所码; passcode.api.checkins) ---
VENUE_CODE_PATTERN = "^PP1:[0-9A-Z $%*+\\-./:]+$"
CHECKIN_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["place_code"],
    "properties": {
        "place_code": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4296,  # whatever a QR code held; a venue code is under 800
            "description": "The text of the venue code (PP1:...) the phone read from the poster",
        },
        "checkin_id": {
            **UUID,
            "description": "The check-in's id (its scan id), made by the page: a retry with"
            " the same id is recorded once",
        },
    },
}
CHECKIN_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["color", "reason", "holder", "place", "server_time", "checkin_id"],
    "properties": {
        "color": _enum(Color),
        "reason": {
            "type": "string",
            "enum": [Reason.OK.value, Reason.STATUS_YELLOW.value, Reason.STATUS_RED.value],
            "description": "As verify says it: ok (green), status_yellow, status_red",
        },
        "holder": HOLDER,
        "place": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "name"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
        },
        "server_time": DATETIME,
        "checkin_id": UUID,
    },
}
VENUE_POSTER: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["place", "name", "issue", "code", "issued_at", "expires_at", "png_url", "svg_url"],
    "properties": {
        "place": {"type": "string"},
        "name": {"type": "string"},
        "issue": {
            "type": "integer",
            "minimum": 1,
            "description": "Grows with every poster of the place; older issues are refused",
        },
        "code": {"type": "string", "pattern": VENUE_CODE_PATTERN},
        "issued_at": DATETIME,
        "expires_at": DATETIME,
        "png_url": {"type": "string"},
        "svg_url": {"type": "string"},
    },
}


# --- a citizen's own data: their copy and its deletion (passcode.api.me) ---

_NULLABLE_TIME: Schema = {"oneOf": [DATETIME, {"type": "null"}]}
_RULING_VIEW: dict[str, Schema] = {
    "color": _enum(Color),
    "reason": {"type": "string", "description": "A reason code (positive_test, …)"},
    "valid_from": DATETIME,
    "valid_until": {**_NULLABLE_TIME, "description": "null: until an authority ends it"},
}
_COPY_LISTS: dict[str, Schema] = {
    "declarations": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "declaration_id",
                "declared_at",
                "temperature_c",
                "symptoms",
                "regions_visited",
                "close_contact",
                "idempotency_key",
            ],
            "properties": {
                "declaration_id": {"type": "integer"},
                "declared_at": DATETIME,
                "temperature_c": {"type": "number"},
                "symptoms": {"type": "array", "items": {"type": "string"}},
                "regions_visited": {"type": "array", "items": {"type": "string"}},
                "close_contact": {"type": "boolean"},
                "idempotency_key": {"type": ["string", "null"]},
            },
        },
    },
    "overrides": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [*_RULING_VIEW, "created_at"],
            "properties": {**_RULING_VIEW, "created_at": DATETIME},
        },
    },
    "exposures": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [*_RULING_VIEW, "place", "window_start", "window_end"],
            "properties": {
                **_RULING_VIEW,
                "place": {
                    "type": ["string", "null"],
                    "description": "The risk place (null: an exposure from a test result)",
                },
                "window_start": _NULLABLE_TIME,
                "window_end": _NULLABLE_TIME,
            },
        },
    },
    "test_results": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tested_at", "result", "uploaded_at"],
            "properties": {
                "tested_at": DATETIME,
                "result": {"type": "string", "enum": ["positive", "negative"]},
                "uploaded_at": DATETIME,
            },
        },
    },
    "cards": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "serial",
                "issued_at",
                "expires_at",
                "state",
                "revoked_at",
                "revoke_reason",
            ],
            "properties": {
                "serial": {"type": "string", "pattern": "^[0-9a-f]{16,64}$"},
                "issued_at": DATETIME,
                "expires_at": DATETIME,
                "state": {"type": "string", "enum": ["active", "revoked", "expired"]},
                "revoked_at": _NULLABLE_TIME,
                "revoke_reason": {"type": ["string", "null"]},
            },
        },
    },
    "scans": {
        "type": "array",
        "description": "Scans within the retention period (since scans_since)",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scan_id", "scanned_at", "place", "decision", "reason", "color", "kind"],
            "properties": {
                "scan_id": UUID,
                "scanned_at": DATETIME,
                "place": {"type": "string"},
                "decision": _enum(Decision),
                "reason": _enum(Reason),
                "color": {"oneOf": [_enum(Color), {"type": "null"}]},
                "kind": {"oneOf": [_enum(Kind), {"type": "null"}]},
            },
        },
    },
}
MY_DATA: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["subject", "status", *_COPY_LISTS, "scans_since", "scans_truncated"],
    "properties": {
        "subject": {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name_masked", "created_at"],
                    "properties": {"name_masked": {"type": "string"}, "created_at": DATETIME},
                },
                {"type": "null", "description": "Nothing is held about the caller"},
            ]
        },
        "status": {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["color", "reason", "valid_until", "version", "updated_at"],
                    "properties": {
                        "color": {"oneOf": [_enum(Color), {"type": "null"}]},
                        "reason": {"oneOf": [_enum(StatusReason), {"type": "null"}]},
                        "valid_until": DATETIME,
                        "version": {"type": "integer", "minimum": 0},
                        "updated_at": DATETIME,
                    },
                },
                {"type": "null"},
            ]
        },
        **_COPY_LISTS,
        "scans_since": DATETIME,
        "scans_truncated": {"type": "boolean"},
    },
}
ERASURE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id"],
    "properties": {"user_id": USER_ID},
}
ERASURE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["erased", "kept"],
    "properties": {
        "erased": {
            "type": "boolean",
            "description": "true: nothing of the citizen is held any more; false: an"
            " authority's open ruling keeps what `kept` says",
        },
        "kept": {
            "type": "array",
            "description": "An authority's open rulings, kept with the subject record (keyed"
            " hash and sealed user id, the name blanked) and its status until they end, so the"
            " ruling still applies when the citizen declares again; everything else is gone",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind", "color", "reason", "until"],
                "properties": {
                    "kind": {"type": "string", "enum": ["override", "exposure"]},
                    "color": _enum(Color),
                    "reason": {"type": "string"},
                    "until": {**_NULLABLE_TIME, "description": "null: until an authority ends it"},
                },
            },
        },
    },
}


def compile_schema(schema: Schema) -> Callable[[Any], Any]:
    """A fast validator; raises ``fastjsonschema.JsonSchemaValueException``."""
    validate: Callable[[Any], Any] = fastjsonschema.compile(schema)
    return validate
