"""The OpenAPI 3.1 document, built from the same schemas and enums the handlers use."""

from __future__ import annotations

import functools
from typing import Any

from passcode.api import deadletters as dl
from passcode.api import schemas as s
from passcode.domain.model import Reason
from passcode.errors import ALL_ERRORS

PROBLEM_CT = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


_NO_STORE = {
    "Cache-Control": {
        "description": "Always `no-store`",
        "required": True,
        "schema": {"const": "no-store"},
    }
}


def _no_store_json(status: str, description: str, schema: str) -> dict[str, Any]:
    """A JSON answer sent with ``Cache-Control: no-store`` (it holds a pass, a key or scans)."""
    return {status: {"description": description, "content": _json(schema), "headers": _NO_STORE}}


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "Always `Bearer`",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _problem(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CT: {"schema": schema or _ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request: not JSON, a key twice in one object, unknown fields, fails"
        " the schema, or a value its kind's rule refuses (a time out of range, a text with"
        " control characters)",
        401: "Missing or unknown credential",
        403: "Credential not allowed (revoked terminal, citizen token on admin API)",
        404: "Not found",
        408: "The body did not arrive within PASSCODE_BODY_TIMEOUT (30 s); nothing applied",
        409: "Conflict (Idempotency-Key reused with another body)",
        413: "Body too large",
        415: "Body is not application/json (UTF-8), or is compressed (a Content-Encoding"
        " other than identity)",
        429: "Rate limited (per terminal or per citizen); see Retry-After",
        503: "A backing service is unavailable, or the process is overloaded and sheds this"
        " request (type overloaded); see Retry-After",
    }
    headers = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}
    return {str(code): _problem(text[code], headers=headers.get(code)) for code in codes}


def _op(
    summary: str,
    *,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    body: str | None = None,
    security: str | None = None,
    tag: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if body is not None:  # read_json gives every body a deadline
        errors = tuple(sorted({*errors, 408}))
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {**ok, **_errors(*errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if security is not None:
        op["security"] = [{security: []}]
    if extra:
        op.update(extra)
    return op


def _query(
    name: str, schema: dict[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    """A query parameter (optional unless ``required``)."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """Built once; every response the service gives is described here (tests check that)."""
    verify_errors = (400, 401, 403, 413, 415, 429)
    unverified = {
        "503": _problem(
            "Live status unavailable: never admitted blind (`Unverified`); or the terminal"
            " credential could not be checked (a plain `Problem`, type store-unavailable); or"
            " the process is overloaded and sheds the request (a plain `Problem`, type"
            " overloaded; pass issuance is shed long before verify)",
            {"anyOf": [_ref("Unverified"), _ref("Problem")]},
            RETRY_AFTER,
        )
    }
    etag = {
        "ETag": {
            "description": "Version of the key set",
            "required": True,
            "schema": {"type": "string"},
        },
        "Cache-Control": {"required": True, "schema": {"type": "string"}},
    }
    idem_header = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
        "description": "A retry with the same key and body returns the stored declaration.",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "passcode",
            "version": "1",
            "description": (
                "Signed short-lived QR passes (亮码) verified live at scanner terminals (扫码). "
                "Errors are RFC 9457 problem bodies; problem types: "
                + ", ".join(sorted({e.slug for e in ALL_ERRORS}))
                + f". Verify reason codes: {', '.join(r.value for r in Reason)}."
            ),
        },
        "components": {
            "securitySchemes": {
                "terminalKey": {"type": "http", "scheme": "bearer", "description": "terminal key"},
                "idToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "admin key"},
            },
            "schemas": {
                "VerifyRequest": s.VERIFY_REQUEST,
                "VerifyBatchRequest": s.VERIFY_BATCH_REQUEST,
                "VerifyResponse": s.VERIFY_RESPONSE,
                "VerifyBatchResponse": s.VERIFY_BATCH_RESPONSE,
                "DeclarationRequest": s.DECLARATION_REQUEST,
                "DeclarationResponse": s.DECLARATION_RESPONSE,
                "PassResponse": s.PASS_RESPONSE,
                "OverrideRequest": s.OVERRIDE_REQUEST,
                "OverrideResponse": s.OVERRIDE_RESPONSE,
                "TerminalRequest": s.TERMINAL_REQUEST,
                "TerminalResponse": s.TERMINAL_RESPONSE,
                "ReplayCount": s.REPLAY_COUNT_RESPONSE,
                "AuditPage": s.AUDIT_PAGE,
                "DeadLetterPage": dl.DEAD_LETTER_PAGE,
                "DeadLetterReplay": dl.DEAD_LETTER_REPLAY,
                "TraceCitizenRequest": s.TRACE_CITIZEN_REQUEST,
                "TracePlacePage": s.TRACE_PLACE_PAGE,
                "TraceCitizenPage": s.TRACE_CITIZEN_PAGE,
                "KeySet": s.KEY_SET,
                "Health": s.HEALTH,
                "TestResultsCsv": s.TEST_RESULTS_CSV,
                "TestResultsUpload": s.TEST_RESULTS_UPLOAD,
                "RiskPlaceRequest": s.RISK_PLACE_REQUEST,
                "RiskPlace": s.RISK_PLACE,
                "Problem": s.PROBLEM,
                "Unverified": s.UNVERIFIED,
            },
        },
        "paths": {
            "/v1/verify": {
                "post": _op(
                    "Verify one scanned code (扫码)",
                    ok={
                        "200": {"description": "A decision", "content": _json("VerifyResponse")},
                        **unverified,
                    },
                    errors=verify_errors,
                    body="VerifyRequest",
                    security="terminalKey",
                    tag="terminal",
                )
            },
            "/v1/verify/batch": {
                "post": _op(
                    "Verify up to 500 scans a terminal kept while offline, in order",
                    ok={
                        "200": {
                            "description": "Decisions",
                            "content": _json("VerifyBatchResponse"),
                        },
                        **unverified,
                    },
                    errors=verify_errors,
                    body="VerifyBatchRequest",
                    security="terminalKey",
                    tag="terminal",
                )
            },
            "/v1/keys": {
                "get": _op(
                    "Published verification keys (JWK Set), for verifying passes offline",
                    ok={
                        "200": {"description": "Keys", "content": _json("KeySet"), "headers": etag},
                        "304": {"description": "Not modified (If-None-Match)", "headers": etag},
                    },
                    errors=(),
                    tag="public",
                )
            },
            "/v1/declarations": {
                "post": _op(
                    "File a health declaration (申报)",
                    ok={
                        "201": {
                            "description": "Stored; the new status",
                            "content": _json("DeclarationResponse"),
                            "headers": {
                                **_NO_STORE,
                                "Idempotent-Replayed": {
                                    "description": "`true` when this answers a retry (same"
                                    " Idempotency-Key and body) from the stored declaration",
                                    "required": False,
                                    "schema": {"const": "true"},
                                },
                            },
                        }
                    },
                    errors=(400, 401, 409, 413, 415, 429, 503),
                    body="DeclarationRequest",
                    security="idToken",
                    tag="citizen",
                    extra={"parameters": [idem_header]},
                )
            },
            "/v1/pass": {
                "get": _op(
                    "The citizen's current pass (亮码) as JSON",
                    ok=_no_store_json("200", "A freshly signed pass", "PassResponse"),
                    errors=(401, 404, 429, 503),
                    security="idToken",
                    tag="citizen",
                )
            },
            "/v1/pass.png": {
                "get": _op(
                    "The pass as a QR image coloured by status",
                    ok={
                        "200": {
                            "description": "PNG",
                            "headers": _NO_STORE,
                            "content": {
                                "image/png": {
                                    "schema": {"type": "string", "contentMediaType": "image/png"}
                                }
                            },
                        }
                    },
                    errors=(401, 404, 429, 503),
                    security="idToken",
                    tag="citizen",
                )
            },
            "/v1/pass.svg": {
                "get": _op(
                    "The pass as an SVG QR code coloured by status",
                    ok={
                        "200": {
                            "description": "SVG",
                            "headers": _NO_STORE,
                            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                        }
                    },
                    errors=(401, 404, 429, 503),
                    security="idToken",
                    tag="citizen",
                )
            },
            "/v1/admin/overrides": {
                "post": _op(
                    "Set a citizen's colour by ruling (转码); reaches verify at once",
                    ok={
                        "201": {
                            "description": "Recorded; the new status",
                            "content": _json("OverrideResponse"),
                        }
                    },
                    errors=(400, 401, 403, 413, 415, 503),
                    body="OverrideRequest",
                    security="adminKey",
                    tag="admin",
                )
            },
            "/v1/admin/terminals": {
                "post": _op(
                    "Register a terminal; its key is shown once",
                    ok=_no_store_json("201", "Created", "TerminalResponse"),
                    errors=(400, 401, 403, 413, 415, 503),
                    body="TerminalRequest",
                    security="adminKey",
                    tag="admin",
                )
            },
            "/v1/admin/terminals/{terminal_id}/revoke": {
                "post": _op(
                    "Revoke a terminal",
                    ok={"204": {"description": "Revoked"}},
                    errors=(401, 403, 404, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            {
                                "name": "terminal_id",
                                "in": "path",
                                "required": True,
                                "schema": s.UUID,
                            }
                        ]
                    },
                )
            },
            "/v1/admin/replays": {
                "get": _op(
                    "Count replays: scans of one pass at another place within the replay"
                    " window (admitted, flagged in the scan record)",
                    ok={"200": {"description": "Counts", "content": _json("ReplayCount")}},
                    errors=(400, 401, 403, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            _query(
                                "since",
                                s.DATETIME,
                                "Start, inclusive (RFC 3339); default: until - 24 h",
                            ),
                            _query(
                                "until",
                                s.DATETIME,
                                "End, exclusive (RFC 3339); default: now, or since + 24 h;"
                                " at most 31 days after since",
                            ),
                        ]
                    },
                )
            },
            "/v1/admin/audit": {
                "get": _op(
                    "Read the audit log (role auditor): every admin action and tracing query,"
                    " and every refusal for want of a role; oldest first, paginated. The read is"
                    " itself recorded",
                    ok={"200": {"description": "A page of entries", "content": _json("AuditPage")}},
                    errors=(400, 401, 403, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            _query(
                                "since", s.DATETIME, "Start, inclusive; default: until - 7 days"
                            ),
                            _query("until", s.DATETIME, "End, exclusive; default: now"),
                            _query(
                                "actor", {"type": "string", "maxLength": 200}, "Only this actor"
                            ),
                            _query(
                                "action",
                                {"type": "string", "pattern": "^[a-z_]{1,40}(\\.[a-z_]{1,40})?$"},
                                "Only this action, e.g. trace.place",
                            ),
                            _query(
                                "limit",
                                {"type": "integer", "minimum": 1, "maximum": 1000},
                                "Entries per page (default 100)",
                            ),
                            _query(
                                "cursor",
                                {"type": "integer", "minimum": 0},
                                "next_cursor of the previous page",
                            ),
                        ]
                    },
                )
            },
            "/v1/admin/dead-letters": {
                "get": _op(
                    "Scan entries the drain could not store (role operator): kept with the"
                    " reason instead of stopping the drain; oldest first, paginated. The read is"
                    " recorded in the audit log (dead_letters.read)",
                    ok={
                        "200": {
                            "description": "A page of dead letters",
                            "content": _json("DeadLetterPage"),
                        }
                    },
                    errors=(400, 401, 403, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            _query(
                                "limit",
                                {"type": "integer", "minimum": 1, "maximum": dl.MAX_LIMIT},
                                f"Entries per page (default {dl.DEFAULT_LIMIT})",
                            ),
                            _query(
                                "cursor",
                                {"type": "integer", "minimum": 0},
                                "next_cursor of the previous page",
                            ),
                        ]
                    },
                )
            },
            "/v1/admin/dead-letters/replay": {
                "post": _op(
                    "Replay dead letters (role operator): store the oldest that can be stored"
                    " now (after a fix), forget those; the others stay with their new reason."
                    " Idempotent. Recorded in the audit log (dead_letters.replay)",
                    ok={"200": {"description": "Counts", "content": _json("DeadLetterReplay")}},
                    errors=(400, 401, 403, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            _query(
                                "limit",
                                {"type": "integer", "minimum": 1, "maximum": dl.REPLAY_MAX},
                                f"At most this many (default {dl.REPLAY_DEFAULT})",
                            )
                        ]
                    },
                )
            },
            "/v1/admin/trace/place": {
                "get": _op(
                    "Contact tracing (role health_officer): who scanned at a place in [since,"
                    " until), oldest first, paginated, with each subject's unsealed user id and"
                    " masked name. Every page is recorded in the audit log (trace.place) with the"
                    " rows it returned",
                    ok=_no_store_json("200", "A page of scans", "TracePlacePage"),
                    errors=(400, 401, 403, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            _query(
                                "place",
                                s.PLACE,
                                "The place, as its terminals record it (trimmed, by the rule"
                                " terminals and risk places are checked by)",
                                required=True,
                            ),
                            _query(
                                "since", s.DATETIME, "Start, inclusive (RFC 3339)", required=True
                            ),
                            _query(
                                "until",
                                s.DATETIME,
                                "End, exclusive (RFC 3339); at most the scan retention"
                                " period (default 28 days) after since",
                                required=True,
                            ),
                            _query(
                                "limit",
                                {"type": "integer", "minimum": 1, "maximum": 1000},
                                "Scans per page (default 100)",
                            ),
                            _query("cursor", s.TRACE_CURSOR, "next_cursor of the previous page"),
                        ]
                    },
                )
            },
            "/v1/admin/trace/citizen": {
                "post": _op(
                    "Contact tracing (role health_officer): where a citizen scanned in [since,"
                    " until), oldest first, paginated. The user id is sent in the body, never in"
                    " a URL. Every page is recorded in the audit log (trace.citizen, naming the"
                    " subject by its pseudonymous id) with the rows it returned; an unknown user"
                    " gets an empty page",
                    ok=_no_store_json("200", "A page of scans", "TraceCitizenPage"),
                    errors=(400, 401, 403, 413, 415, 503),
                    body="TraceCitizenRequest",
                    security="adminKey",
                    tag="admin",
                )
            },
            "/v1/admin/test-results": {
                "post": _op(
                    "Upload test results as CSV (role health_officer): each record is checked on"
                    " its own; good ones apply even when others are bad, bad ones are reported"
                    " with their line. A positive turns its subject red (reason positive_test)"
                    " until an override settles it; a negative is only recorded. A record already"
                    " on file is a duplicate and applies nothing, so re-uploading a file is safe"
                    " and completes an upload cut short. Recorded in the audit log"
                    " (test_results.upload) with counts only, one entry per chunk of 1000 records"
                    " committed with it",
                    ok={
                        "200": {
                            "description": "Counts, and the bad records' lines and errors",
                            "content": _json("TestResultsUpload"),
                        },
                        "400": _problem(
                            "The body is not UTF-8, or line 1 is not the header"
                            " user_id,result,tested_at; nothing applied"
                        ),
                        "413": _problem(
                            "Body above PASSCODE_MAX_CSV_BODY bytes (`limit` says how many), or"
                            " more than PASSCODE_MAX_CSV_ROWS records; nothing applied"
                        ),
                        "415": _problem(
                            "Body is not text/csv (UTF-8), or is compressed (a"
                            " Content-Encoding other than identity)"
                        ),
                    },
                    errors=(401, 403, 408, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "requestBody": {
                            "required": True,
                            "content": {"text/csv": {"schema": _ref("TestResultsCsv")}},
                        }
                    },
                )
            },
            "/v1/admin/risk-places": {
                "post": _op(
                    "Mark a place risky for a window (时空伴随; role health_officer): every"
                    " citizen who scanned there in [since, until) gets an exposure of that colour"
                    " (yellow by default) and a new status, in a background job that survives a"
                    " restart. The same place, window and colour again changes nothing: 200 and"
                    " the first marking. Recorded in the audit log (risk_place.mark)",
                    ok={
                        "202": {
                            "description": "Marked; the job has started (follow Location)",
                            "content": _json("RiskPlace"),
                            "headers": {
                                "Location": {
                                    "description": "The marking, with the job's progress",
                                    "required": True,
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        "200": {
                            "description": "Already marked: the existing marking, no new work"
                            " (one that failed is set back to pending and runs again)",
                            "content": _json("RiskPlace"),
                        },
                    },
                    errors=(400, 401, 403, 413, 415, 503),
                    body="RiskPlaceRequest",
                    security="adminKey",
                    tag="admin",
                )
            },
            "/v1/admin/risk-places/{marking_id}": {
                "get": _op(
                    "A risk place marking and its job's progress (role health_officer; recorded"
                    " in the audit log as risk_place.read)",
                    ok={"200": {"description": "The marking", "content": _json("RiskPlace")}},
                    errors=(401, 403, 404, 503),
                    security="adminKey",
                    tag="admin",
                    extra={
                        "parameters": [
                            {"name": "marking_id", "in": "path", "required": True, "schema": s.UUID}
                        ]
                    },
                )
            },
            "/healthz": {
                "get": _op(
                    "Liveness",
                    ok={"200": {"description": "Up", "content": _json("Health")}},
                    errors=(),
                    tag="ops",
                )
            },
            "/readyz": {
                "get": _op(
                    "Readiness: PostgreSQL and Redis answer (else 503). The body also lists the"
                    " background tasks (`tasks`: state running, restarting or failing) and this"
                    " process's dead-letter count; a failing task makes the status degraded,"
                    " the answer still 200",
                    ok={
                        "200": {"description": "Ready", "content": _json("Health")},
                        "503": {"description": "Not ready", "content": _json("Health")},
                    },
                    errors=(),
                    tag="ops",
                )
            },
            "/openapi.json": {
                "get": _op(
                    "This document",
                    ok={
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["openapi", "info", "paths"],
                                    }
                                }
                            },
                        }
                    },
                    errors=(),
                    tag="ops",
                )
            },
        },
    }
