"""JSON Schemas of every body: validation and the OpenAPI document both read these.

They use only keywords that mean the same in JSON Schema draft 7 (what fastjsonschema compiles)
and 2020-12 (what OpenAPI 3.1 speaks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema

from passcode.domain.model import Color, Decision, Reason, StatusReason, Symptom

Schema = dict[str, Any]

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# RFC 3339 date-time with an explicit offset; parsed again by datetime.fromisoformat.
DATETIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _enum(values: type[Any]) -> Schema:
    return {"type": "string", "enum": [v.value for v in values]}


DATETIME: Schema = {"type": "string", "pattern": DATETIME_PATTERN, "maxLength": 40}
UUID: Schema = {"type": "string", "pattern": UUID_PATTERN}

VERIFY_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code"],
    "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": 1024},
        "scan_id": UUID,
        "scanned_at": DATETIME,
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
    "required": ["decision", "color", "reason", "holder", "scan_id", "server_time"],
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
    },
}

VERIFY_BATCH_RESPONSE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["results"],
    "properties": {"results": {"type": "array", "items": VERIFY_RESPONSE}},
}

REGION = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000-\\u001f]+$"}

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
        "user_id": {"type": "string", "minLength": 1, "maxLength": 128},
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
    "properties": {"place": {"type": "string", "minLength": 1, "maxLength": 200}},
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
    },
}


def compile_schema(schema: Schema) -> Callable[[Any], Any]:
    """A fast validator; raises ``fastjsonschema.JsonSchemaValueException``."""
    validate: Callable[[Any], Any] = fastjsonschema.compile(schema)
    return validate
