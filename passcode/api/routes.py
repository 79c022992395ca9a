"""The route table: each endpoint once, with everything that is said about it.

An entry names the method, the path, the handler, the OpenAPI operation (written with
:mod:`passcode.api.operations`, its schemas in :mod:`passcode.api.schemas`), the shedding class
(:mod:`passcode.service.shedding`; none: never shed) and, for the admin API, the role a caller
needs and the audit action of the request (checked before the handler by
:func:`passcode.api.auth.requires`; an admin entry is written with :func:`_admin`, which
documents it behind the admin key). ``app.py`` routes every entry, the shedder takes each
route's class from it at registration, and :mod:`passcode.api.openapi` documents the entries in
this order. A new endpoint is one entry here, its handler and its schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.typedefs import Handler

from passcode.api import (
    admin,
    auditlog,
    cards,
    checkins,
    citizen,
    deadletters,
    devidp,
    me,
    metrics,
    pages,
    places,
    public,
    riskplaces,
    signin,
    terminal,
    testresults,
    tracing,
    trust,
)
from passcode.api import deadletters as dl
from passcode.api import schemas as s
from passcode.api.operations import (
    NO_STORE,
    RETRY_AFTER,
    json_content,
    no_store_json,
    operation,
    problem,
    query,
    ref,
)
from passcode.api.pages import page_operation
from passcode.domain.model import Role
from passcode.domain.testresults import ACTION as TEST_RESULTS_UPLOAD
from passcode.service.shedding import ISSUE, VERIFY
from passcode.service.trust import IMPORT_DCC, IMPORT_SHC, REMOVE_DCC, REMOVE_SHC


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``shed`` is its shedding class (``None``: never shed); ``role`` the admin
    role a caller needs (``None``: not an admin endpoint) and ``action`` what the audit log
    calls the request, both checked before the handler runs (``passcode.api.auth.requires``)."""

    method: str
    path: str
    handler: Handler
    operation: dict[str, Any]
    shed: int | None = None
    role: Role | None = None
    action: str | None = None


def _admin(
    method: str,
    path: str,
    handler: Handler,
    role: Role,
    summary: str,
    *,
    action: str,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    body: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Route:
    """An admin endpoint: only a caller holding ``role`` reaches its handler (a refusal audited
    as ``action``), so the document puts it behind the admin key, under the admin tag."""
    described = operation(
        summary, ok=ok, errors=errors, body=body, security="adminKey", tag="admin", extra=extra
    )
    return Route(method, path, handler, described, role=role, action=action)


_VERIFY_ERRORS = (400, 401, 403, 413, 415, 429)
_UNVERIFIED = {
    "503": problem(
        "Live status unavailable: never admitted blind (`Unverified`); or the terminal"
        " credential could not be checked (a plain `Problem`, type store-unavailable); or"
        " the process is overloaded and sheds the request (a plain `Problem`, type"
        " overloaded; pass issuance is shed long before verify)",
        {"anyOf": [ref("Unverified"), ref("Problem")]},
        RETRY_AFTER,
    )
}
_ETAG = {
    "ETag": {
        "description": "Version of the key set",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Control": {"required": True, "schema": {"type": "string"}},
}
_TRUST_ETAG = {
    "ETag": {
        "description": "Version of the trust store document",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Control": {"required": True, "schema": {"type": "string"}},
}
_PLACE_PATH = {
    "name": "place",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The place, as its terminals carry it",
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
    "description": "A retry with the same key and body returns the stored declaration.",
}

_CARD_SERIAL = {"name": "serial", "in": "path", "required": True, "schema": s.CARD_SERIAL}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/verify",
        terminal.verify,
        shed=VERIFY,
        operation=operation(
            "Verify one scanned code (扫码)",
            ok={
                "200": {"description": "A decision", "content": json_content("VerifyResponse")},
                **_UNVERIFIED,
            },
            errors=_VERIFY_ERRORS,
            body="VerifyRequest",
            security="terminalKey",
            tag="terminal",
        ),
    ),
    Route(
        "POST",
        "/v1/verify/batch",
        terminal.verify_batch,
        shed=VERIFY,
        operation=operation(
            "Verify up to 500 scans a terminal kept while offline, in order",
            ok={
                "200": {
                    "description": "Decisions",
                    "content": json_content("VerifyBatchResponse"),
                },
                **_UNVERIFIED,
            },
            errors=_VERIFY_ERRORS,
            body="VerifyBatchRequest",
            security="terminalKey",
            tag="terminal",
        ),
    ),
    Route(
        "GET",
        "/v1/keys",
        public.get_keys,
        operation=operation(
            "Published verification keys (JWK Set), for verifying passes offline",
            ok={
                "200": {"description": "Keys", "content": json_content("KeySet"), "headers": _ETAG},
                "304": {"description": "Not modified (If-None-Match)", "headers": _ETAG},
            },
            errors=(),
            tag="public",
        ),
    ),
    Route(
        "GET",
        "/v1/trust",
        trust.get_trust,
        operation=operation(
            "The trust store, for verifying foreign certificates offline: EU DCC document"
            " signer certificates by kid, SMART Health Card issuers with their keys and"
            " revocation lists",
            ok={
                "200": {
                    "description": "The trust store",
                    "content": json_content("TrustDocument"),
                    "headers": _TRUST_ETAG,
                },
                "304": {"description": "Not modified (If-None-Match)", "headers": _TRUST_ETAG},
            },
            errors=(),
            tag="public",
        ),
    ),
    Route(
        "POST",
        "/v1/declarations",
        citizen.declare,
        shed=ISSUE,
        operation=operation(
            "File a health declaration (申报)",
            ok={
                "201": {
                    "description": "Stored; the new status",
                    "content": json_content("DeclarationResponse"),
                    "headers": {
                        **NO_STORE,
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
            extra={"parameters": [_IDEMPOTENCY_KEY]},
        ),
    ),
    Route(
        "GET",
        "/v1/pass",
        citizen.get_pass,
        shed=ISSUE,
        operation=operation(
            "The citizen's current pass (亮码) as JSON",
            ok=no_store_json("200", "A freshly signed pass", "PassResponse"),
            errors=(401, 404, 429, 503),
            security="idToken",
            tag="citizen",
        ),
    ),
    Route(
        "GET",
        "/v1/pass.png",
        citizen.get_pass_png,
        shed=ISSUE,
        operation=operation(
            "The pass as a QR image coloured by status",
            ok={
                "200": {
                    "description": "PNG",
                    "headers": NO_STORE,
                    "content": {
                        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}
                    },
                }
            },
            errors=(401, 404, 429, 503),
            security="idToken",
            tag="citizen",
        ),
    ),
    Route(
        "GET",
        "/v1/pass.svg",
        citizen.get_pass_svg,
        shed=ISSUE,
        operation=operation(
            "The pass as an SVG QR code coloured by status",
            ok={
                "200": {
                    "description": "SVG",
                    "headers": NO_STORE,
                    "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                }
            },
            errors=(401, 404, 429, 503),
            security="idToken",
            tag="citizen",
        ),
    ),
    Route(
        "POST",
        "/v1/checkins",
        checkins.post_checkin,
        shed=ISSUE,
        operation=operation(
            "Check in at a venue (场所码): the phone read a place's poster. Records a scan at"
            " that place for the citizen in the scan log (tracing and risk places see it;"
            " the same checkin_id twice is recorded once) and answers with what the staff at"
            " the door look at: the live colour, the masked name, the place, the time."
            " Nothing is recorded for a forged (400), unknown (404) or revoked (410) code",
            ok={
                "200": {
                    "description": "Checked in (or a retry of one: Idempotent-Replayed)",
                    "content": json_content("CheckinResponse"),
                    "headers": {
                        **NO_STORE,
                        "Idempotent-Replayed": {
                            "description": "`true` when this checkin_id was already recorded",
                            "required": False,
                            "schema": {"const": "true"},
                        },
                    },
                },
                "400": problem(
                    "Malformed request (not JSON, fails the schema), or the place code is not"
                    " a genuine venue code (type venue-code-invalid; `reason`: malformed,"
                    " unsupported, unknown_key, bad_signature, not_yet_valid)"
                ),
                "404": problem(
                    "A genuine venue code of a place or issue this service does not know"
                    " (type unknown-venue), or no valid declaration yet (type no-declaration)"
                ),
                "410": problem(
                    "A venue code no longer in force (type venue-code-revoked): the place's"
                    " poster was replaced by a newer one (`reason` revoked), or it expired"
                    " (`reason` expired)"
                ),
            },
            errors=(401, 413, 415, 429, 503),
            body="CheckinRequest",
            security="idToken",
            tag="citizen",
        ),
    ),
    Route(
        "GET",
        "/v1/me/data",
        me.get_my_data,
        operation=operation(
            "The citizen's copy of everything held about them (PIPL Art. 45): their"
            " declarations, current status and its reason, overrides and exposures (reason"
            " codes; an exposure's place and window), test results, printed cards (serial and"
            " state) and their scans within the scan retention period (place, time, decision,"
            " kind). Empty lists when nothing is held",
            ok=no_store_json("200", "Everything held about the caller", "MyData"),
            errors=(401, 429, 503),
            security="idToken",
            tag="citizen",
        ),
    ),
    Route(
        "DELETE",
        "/v1/me",
        me.delete_me,
        operation=operation(
            "Delete the citizen's data on request (PIPL Art. 47): every record and scan of"
            " theirs in PostgreSQL and Redis, except an authority's open ruling (a yellow or red"
            " override, an exposure, not yet ended: kept with the subject record and its status"
            " until it ends, listed in `kept`). Needs an ID token issued within the last"
            " PASSCODE_ERASURE_SIGNIN_WINDOW seconds (default 300), else 401 sign-in-again."
            " Idempotent: a second call answers the same. Audited (subject.erase) with a random"
            " erasure id, never the user id. Afterwards GET /v1/pass answers no-declaration",
            ok=no_store_json("200", "Erased; what stays and until when", "Erasure"),
            errors=(401, 429, 503),
            security="idToken",
            tag="citizen",
        ),
    ),
    _admin(
        "POST",
        "/v1/admin/erasures",
        me.post_erasure,
        Role.HEALTH_OFFICER,
        "Delete a citizen's data on a request made in person (role health_officer, who"
        " checked who they are): the same erasure as DELETE /v1/me, audited (subject.erase)"
        " with the officer and a random erasure id, never the user id",
        action="subject.erase",
        ok=no_store_json("200", "Erased; what stays and until when", "Erasure"),
        errors=(400, 401, 403, 413, 415, 503),
        body="ErasureRequest",
    ),
    _admin(
        "POST",
        "/v1/admin/overrides",
        admin.post_override,
        Role.HEALTH_OFFICER,
        "Set a citizen's colour by ruling (转码); reaches verify at once",
        action="override.add",
        ok={
            "201": {
                "description": "Recorded; the new status",
                "content": json_content("OverrideResponse"),
            }
        },
        errors=(400, 401, 403, 413, 415, 503),
        body="OverrideRequest",
    ),
    _admin(
        "POST",
        "/v1/admin/terminals",
        admin.post_terminal,
        Role.OPERATOR,
        "Register a terminal; its key is shown once",
        action="terminal.add",
        ok=no_store_json("201", "Created", "TerminalResponse"),
        errors=(400, 401, 403, 413, 415, 503),
        body="TerminalRequest",
    ),
    _admin(
        "POST",
        "/v1/admin/terminals/{terminal_id}/revoke",
        admin.revoke,
        Role.OPERATOR,
        "Revoke a terminal",
        action="terminal.revoke",
        ok={"204": {"description": "Revoked"}},
        errors=(401, 403, 404, 503),
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
    ),
    _admin(
        "PUT",
        "/v1/admin/places/{place}",
        places.put_place,
        Role.OPERATOR,
        "Create or describe a place (role operator): its type picks its policy when it has none"
        " of its own. Recorded in the audit log (place.set); in force at the next scan",
        action="place.set",
        ok={
            "201": {"description": "Created", "content": json_content("Place")},
            "200": {"description": "Changed", "content": json_content("Place")},
        },
        errors=(400, 401, 403, 413, 415, 503),
        body="PlaceRequest",
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "GET",
        "/v1/admin/places/{place}",
        places.get_place,
        Role.OPERATOR,
        "A place, and the policy its scans are judged by as this replica holds it (its own,"
        " its type's or the default), with its version",
        action="place.read",
        ok={"200": {"description": "The place", "content": json_content("Place")}},
        errors=(400, 401, 403, 503),
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "PUT",
        "/v1/admin/place-types/{type}/policy",
        places.put_type_policy,
        Role.HEALTH_OFFICER,
        "Set a place type's policy (role health_officer): a new version, the old ones kept;"
        " every place of the type without a policy of its own is judged by it from the next"
        " scan (on every replica within about a second). Recorded in the audit log"
        " (place_policy.set)",
        action="place_policy.set",
        ok={"200": {"description": "Stored", "content": json_content("PlacePolicySet")}},
        errors=(400, 401, 403, 413, 415, 503),
        body="PlacePolicyRequest",
        extra={
            "parameters": [
                {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        },
    ),
    _admin(
        "PUT",
        "/v1/admin/places/{place}/policy",
        places.put_place_policy,
        Role.HEALTH_OFFICER,
        "Set one place's own policy (role health_officer): a new version, the old ones kept;"
        " in force from the next scan (on every replica within about a second). The place"
        " must exist (404). Recorded in the audit log (place_policy.set)",
        action="place_policy.set",
        ok={"200": {"description": "Stored", "content": json_content("PlacePolicySet")}},
        errors=(400, 401, 403, 404, 413, 415, 503),
        body="PlacePolicyRequest",
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "GET",
        "/v1/admin/replays",
        admin.get_replays,
        Role.HEALTH_OFFICER,
        "Count replays: scans of one pass at another place within the replay"
        " window (admitted, flagged in the scan record)",
        action="replays.count",
        ok={"200": {"description": "Counts", "content": json_content("ReplayCount")}},
        errors=(400, 401, 403, 503),
        extra={
            "parameters": [
                query(
                    "since",
                    s.DATETIME,
                    "Start, inclusive (RFC 3339); default: until - 24 h",
                ),
                query(
                    "until",
                    s.DATETIME,
                    "End, exclusive (RFC 3339); default: now, or since + 24 h;"
                    " at most 31 days after since",
                ),
            ]
        },
    ),
    _admin(
        "GET",
        "/v1/admin/audit",
        auditlog.get_audit,
        Role.AUDITOR,
        "Read the audit log (role auditor): every admin action and tracing query,"
        " and every refusal for want of a role; oldest first, paginated. The read is"
        " itself recorded",
        action="audit.read",
        ok={"200": {"description": "A page of entries", "content": json_content("AuditPage")}},
        errors=(400, 401, 403, 503),
        extra={
            "parameters": [
                query("since", s.DATETIME, "Start, inclusive; default: until - 7 days"),
                query("until", s.DATETIME, "End, exclusive; default: now"),
                query("actor", {"type": "string", "maxLength": 200}, "Only this actor"),
                query(
                    "action",
                    {"type": "string", "pattern": "^[a-z_]{1,40}(\\.[a-z_]{1,40})?$"},
                    "Only this action, e.g. trace.place",
                ),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                    "Entries per page (default 100)",
                ),
                query(
                    "cursor",
                    {"type": "integer", "minimum": 0},
                    "next_cursor of the previous page",
                ),
            ]
        },
    ),
    _admin(
        "GET",
        "/v1/admin/dead-letters",
        deadletters.get_dead_letters,
        Role.OPERATOR,
        "Scan entries the drain could not store (role operator): kept with the"
        " reason instead of stopping the drain; oldest first, paginated. The read is"
        " recorded in the audit log (dead_letters.read)",
        action="dead_letters.read",
        ok={
            "200": {
                "description": "A page of dead letters",
                "content": json_content("DeadLetterPage"),
            }
        },
        errors=(400, 401, 403, 503),
        extra={
            "parameters": [
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": dl.MAX_LIMIT},
                    f"Entries per page (default {dl.DEFAULT_LIMIT})",
                ),
                query(
                    "cursor",
                    {"type": "integer", "minimum": 0},
                    "next_cursor of the previous page",
                ),
            ]
        },
    ),
    _admin(
        "POST",
        "/v1/admin/dead-letters/replay",
        deadletters.post_replay,
        Role.OPERATOR,
        "Replay dead letters (role operator): store the oldest that can be stored"
        " now (after a fix), forget those; the others stay with their new reason."
        " Idempotent. Recorded in the audit log (dead_letters.replay)",
        action="dead_letters.replay",
        ok={"200": {"description": "Counts", "content": json_content("DeadLetterReplay")}},
        errors=(400, 401, 403, 503),
        extra={
            "parameters": [
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": dl.REPLAY_MAX},
                    f"At most this many (default {dl.REPLAY_DEFAULT})",
                )
            ]
        },
    ),
    _admin(
        "GET",
        "/v1/admin/trace/place",
        tracing.trace_place,
        Role.HEALTH_OFFICER,
        "Contact tracing (role health_officer): who scanned at a place in [since,"
        " until), oldest first, paginated, with each subject's unsealed user id and"
        " masked name. Every page is recorded in the audit log (trace.place) with the"
        " rows it returned",
        action="trace.place",
        ok=no_store_json("200", "A page of scans", "TracePlacePage"),
        errors=(400, 401, 403, 503),
        extra={
            "parameters": [
                query(
                    "place",
                    s.PLACE,
                    "The place, as its terminals record it (trimmed, by the rule"
                    " terminals and risk places are checked by)",
                    required=True,
                ),
                query("since", s.DATETIME, "Start, inclusive (RFC 3339)", required=True),
                query(
                    "until",
                    s.DATETIME,
                    "End, exclusive (RFC 3339); at most the scan retention"
                    " period (default 28 days) after since",
                    required=True,
                ),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                    "Scans per page (default 100)",
                ),
                query("cursor", s.TRACE_CURSOR, "next_cursor of the previous page"),
            ]
        },
    ),
    _admin(
        "POST",
        "/v1/admin/trace/citizen",
        tracing.trace_citizen,
        Role.HEALTH_OFFICER,
        "Contact tracing (role health_officer): where a citizen scanned in [since,"
        " until), oldest first, paginated. The user id is sent in the body, never in"
        " a URL. Every page is recorded in the audit log (trace.citizen, naming the"
        " subject by its pseudonymous id) with the rows it returned; an unknown user"
        " gets an empty page",
        action="trace.citizen",
        ok=no_store_json("200", "A page of scans", "TraceCitizenPage"),
        errors=(400, 401, 403, 413, 415, 503),
        body="TraceCitizenRequest",
    ),
    _admin(
        "POST",
        "/v1/admin/test-results",
        testresults.post_test_results,
        Role.HEALTH_OFFICER,
        "Upload test results as CSV (role health_officer): each record is checked on"
        " its own; good ones apply even when others are bad, bad ones are reported"
        " with their line. A positive turns its subject red (reason positive_test)"
        " until an override settles it; a negative is only recorded. A record already"
        " on file is a duplicate and applies nothing, so re-uploading a file is safe"
        " and completes an upload cut short. Recorded in the audit log"
        " (test_results.upload) with counts only, one entry per chunk of 1000 records"
        " committed with it",
        action=TEST_RESULTS_UPLOAD,
        ok={
            "200": {
                "description": "Counts, and the bad records' lines and errors",
                "content": json_content("TestResultsUpload"),
            },
            "400": problem(
                "The body is not UTF-8, or line 1 is not the header"
                " user_id,result,tested_at; nothing applied"
            ),
            "413": problem(
                "Body above PASSCODE_MAX_CSV_BODY bytes (`limit` says how many), or"
                " more than PASSCODE_MAX_CSV_ROWS records; nothing applied"
            ),
            "415": problem(
                "Body is not text/csv (UTF-8), or is compressed (a"
                " Content-Encoding other than identity)"
            ),
        },
        errors=(401, 403, 408, 503),
        extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": ref("TestResultsCsv")}},
            }
        },
    ),
    _admin(
        "POST",
        "/v1/admin/risk-places",
        riskplaces.post_risk_place,
        Role.HEALTH_OFFICER,
        "Mark a place risky for a window (时空伴随; role health_officer): every"
        " citizen who scanned there in [since, until) gets an exposure of that colour"
        " (yellow by default) and a new status, in a background job that survives a"
        " restart. The same place, window and colour again changes nothing: 200 and"
        " the first marking. Recorded in the audit log (risk_place.mark)",
        action="risk_place.mark",
        ok={
            "202": {
                "description": "Marked; the job has started (follow Location)",
                "content": json_content("RiskPlace"),
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
                "content": json_content("RiskPlace"),
            },
        },
        errors=(400, 401, 403, 413, 415, 503),
        body="RiskPlaceRequest",
    ),
    _admin(
        "GET",
        "/v1/admin/risk-places/{marking_id}",
        riskplaces.get_risk_place,
        Role.HEALTH_OFFICER,
        "A risk place marking and its job's progress (role health_officer; recorded"
        " in the audit log as risk_place.read)",
        action="risk_place.read",
        ok={"200": {"description": "The marking", "content": json_content("RiskPlace")}},
        errors=(401, 403, 404, 503),
        extra={
            "parameters": [{"name": "marking_id", "in": "path", "required": True, "schema": s.UUID}]
        },
    ),
    _admin(
        "POST",
        "/v1/admin/places/{place}/poster",
        checkins.post_poster,
        Role.OPERATOR,
        "Issue a place's poster (场所码; role operator): a new venue code for the place,"
        " living a year (re-issue it yearly); every older poster of the place is refused"
        " from then on (on every replica within about 5 s). Recorded in the audit log"
        " (venue.issue) with the issue it revokes. 404 for a place not created yet",
        action="venue.issue",
        ok=no_store_json("201", "Issued: the code and where to print it", "VenuePoster"),
        errors=(400, 401, 403, 404, 503),
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "GET",
        "/v1/admin/places/{place}/poster.png",
        checkins.get_poster_png,
        Role.OPERATOR,
        "The place's current poster as an A4 PNG (150 dpi): its name, the venue code's QR"
        " and how to check in, in Chinese and English",
        action="venue.print",
        ok={
            "200": {
                "description": "PNG",
                "headers": NO_STORE,
                "content": {
                    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}
                },
            }
        },
        errors=(400, 401, 403, 404, 503),
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "GET",
        "/v1/admin/places/{place}/poster.svg",
        checkins.get_poster_svg,
        Role.OPERATOR,
        "The place's current poster as an A4 SVG (prints sharp at any size)",
        action="venue.print",
        ok={
            "200": {
                "description": "SVG",
                "headers": NO_STORE,
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
            }
        },
        errors=(400, 401, 403, 404, 503),
        extra={"parameters": [_PLACE_PATH]},
    ),
    _admin(
        "POST",
        "/v1/admin/cards",
        cards.post_card,
        Role.COMMUNITY_WORKER,
        "Issue a printed card (纸质码; role community_worker) for a person without a"
        " smartphone, named by the identity provider's user id the city holds for them"
        " (never an ID-card number); only the name's mask is stored and printed. The"
        " card is a pass with the card claim (docs/pass-format.md) that lives `days`"
        " (default PASSCODE_CARD_DAYS, at most 365); verify judges it by the holder's"
        " live colour. Recorded in the audit log (card.issue)",
        action="card.issue",
        ok=no_store_json("201", "Issued: the code, its PNG (base64) and where to print it", "Card"),
        errors=(400, 401, 403, 413, 415, 503),
        body="CardRequest",
    ),
    _admin(
        "GET",
        "/v1/admin/cards/{serial}/sheet.svg",
        cards.get_card_sheet,
        Role.COMMUNITY_WORKER,
        "A card's printable A6 sheet (SVG): the QR, the masked name, the issue and"
        " expiry dates, the serial; no ID number, no full name",
        action="card.print",
        ok={
            "200": {
                "description": "SVG",
                "headers": NO_STORE,
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
            }
        },
        errors=(401, 403, 404, 503),
        extra={"parameters": [_CARD_SERIAL]},
    ),
    _admin(
        "GET",
        "/v1/admin/cards/{serial}/card.png",
        cards.get_card_png,
        Role.COMMUNITY_WORKER,
        "A card's QR as a black-on-white PNG",
        action="card.print",
        ok={
            "200": {
                "description": "PNG",
                "headers": NO_STORE,
                "content": {
                    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}
                },
            }
        },
        errors=(401, 403, 404, 503),
        extra={"parameters": [_CARD_SERIAL]},
    ),
    _admin(
        "POST",
        "/v1/admin/cards/{serial}/revoke",
        cards.revoke_card,
        Role.COMMUNITY_WORKER,
        "Revoke a lost card by its serial: every replica refuses it within about a"
        " second (verify: invalid, revoked). Revoking it again changes nothing (200, the"
        " first revocation). Recorded in the audit log (card.revoke)",
        action="card.revoke",
        ok={"200": {"description": "Revoked", "content": json_content("Card")}},
        errors=(400, 401, 403, 404, 413, 415, 503),
        body="CardRevokeRequest",
        extra={"parameters": [_CARD_SERIAL]},
    ),
    _admin(
        "POST",
        "/v1/admin/cards/{serial}/declarations",
        cards.declare_for_holder,
        Role.COMMUNITY_WORKER,
        "File a health declaration (申报) for a card's holder, as a citizen files their"
        " own (durable, idempotent with Idempotency-Key, the status derived at once)."
        " 409 for a revoked or expired card. Recorded in the audit log (card.declare)"
        " with the worker as actor",
        action="card.declare",
        ok={
            "201": {
                "description": "Stored; the holder's new status",
                "content": json_content("DeclarationResponse"),
                "headers": NO_STORE,
            }
        },
        errors=(400, 401, 403, 404, 409, 413, 415, 503),
        body="DeclarationRequest",
        extra={"parameters": [_CARD_SERIAL, _IDEMPOTENCY_KEY]},
    ),
    _admin(
        "POST",
        "/v1/admin/trust/dcc",
        trust.post_dcc,
        Role.OPERATOR,
        "Import EU DCC document signer certificates into the trust store (role"
        " operator): the EU gateway's trust-list JSON, or {certificates: [<base64 DER>,"
        " …]}. Each certificate is checked (an unknown critical extension, a key that"
        " cannot sign a DCC, a kid that does not match: 400, nothing stored); a kid"
        " already trusted takes the new certificate; replace=true trusts only these."
        " Reaches this replica at once and every other within about a second. Recorded"
        " in the audit log (trust.import_dcc) with the kids and counts",
        action=IMPORT_DCC,
        ok={
            "200": {
                "description": "Imported; the trust store's new version",
                "content": json_content("TrustDccImported"),
            },
            "400": problem("Not a trust list or certificate list, or a certificate refused"),
            "413": problem("Body above PASSCODE_MAX_TRUST_BODY bytes (`limit` says how many)"),
        },
        errors=(401, 403, 408, 415, 503),
        body="TrustDccRequest",
        extra={
            "parameters": [
                query(
                    "replace",
                    {"type": "string", "enum": ["true", "false"]},
                    "true: remove every trusted signer not in this import (default false)",
                )
            ]
        },
    ),
    _admin(
        "DELETE",
        "/v1/admin/trust/dcc/{kid}",
        trust.delete_dcc,
        Role.OPERATOR,
        "Stop trusting one DCC document signer (role operator); recorded in the audit"
        " log (trust.remove_dcc)",
        action=REMOVE_DCC,
        ok={"204": {"description": "Removed"}},
        errors=(400, 401, 403, 404, 503),
        extra={
            "parameters": [
                {
                    "name": "kid",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "maxLength": 64},
                    "description": "The signer's kid in base64 or base64url (8 bytes)",
                }
            ]
        },
    ),
    _admin(
        "POST",
        "/v1/admin/trust/shc",
        trust.post_shc,
        Role.OPERATOR,
        "Trust a SMART Health Card issuer (role operator): its URL, JWKS and CRLs,"
        " replacing what was trusted for that URL. Keys must be EC P-256 signing keys"
        " (use sig, alg ES256), public only; a CRL per kid of the JWKS (else 400, nothing"
        " stored). Reaches every replica within about a second. Recorded in the audit log"
        " (trust.import_shc) with the URL, kids and counts",
        action=IMPORT_SHC,
        ok={
            "200": {
                "description": "Imported; the trust store's new version",
                "content": json_content("TrustShcImported"),
            },
            "400": problem("A bad JWKS entry (kty, curve, use) or CRL, or a bad URL"),
            "413": problem("Body above PASSCODE_MAX_TRUST_BODY bytes (`limit` says how many)"),
        },
        errors=(401, 403, 408, 415, 503),
        body="TrustShcRequest",
    ),
    _admin(
        "DELETE",
        "/v1/admin/trust/shc",
        trust.delete_shc,
        Role.OPERATOR,
        "Stop trusting one SMART Health Card issuer (role operator); recorded in the"
        " audit log (trust.remove_shc)",
        action=REMOVE_SHC,
        ok={"204": {"description": "Removed"}},
        errors=(400, 401, 403, 404, 503),
        extra={"parameters": [query("iss", s.ISSUER_URL, "The issuer's URL", required=True)]},
    ),
    Route("GET", "/v1/web-config", signin.web_config, operation=signin.OPERATION),
    # Dev mode's identity provider (passcode.api.devidp): 404 outside dev mode.
    Route(
        "GET",
        "/dev-idp/.well-known/openid-configuration",
        devidp.discovery,
        operation=devidp.OPERATIONS["discovery"],
    ),
    Route(
        "GET",
        "/dev-idp/authorize",
        devidp.authorize_page,
        operation=devidp.OPERATIONS["authorize_page"],
    ),
    Route(
        "POST",
        "/dev-idp/authorize",
        devidp.authorize_submit,
        operation=devidp.OPERATIONS["authorize_submit"],
    ),
    Route("POST", "/dev-idp/token", devidp.token, operation=devidp.OPERATIONS["token"]),
    Route("GET", "/dev-idp/jwks", devidp.jwks, operation=devidp.OPERATIONS["jwks"]),
    Route(
        "GET",
        "/healthz",
        public.healthz,
        operation=operation(
            "Liveness",
            ok={"200": {"description": "Up", "content": json_content("Health")}},
            errors=(),
            tag="ops",
        ),
    ),
    Route(
        "GET",
        "/readyz",
        public.readyz,
        operation=operation(
            "Readiness: PostgreSQL and Redis answer (else 503). The body also lists the"
            " background tasks (`tasks`: state running, restarting or failing) and this"
            " process's dead-letter count; a failing task makes the status degraded,"
            " the answer still 200",
            ok={
                "200": {"description": "Ready", "content": json_content("Health")},
                "503": {"description": "Not ready", "content": json_content("Health")},
            },
            errors=(),
            tag="ops",
        ),
    ),
    Route(
        "GET",
        "/metrics",
        metrics.get_metrics,
        operation=operation(
            "Metrics in Prometheus's text format, every worker's: requests, verify decisions,"
            " latencies, Redis batches, the scan-stream backlog, the drain, the PostgreSQL"
            " pool, shed and rate-limited requests, signing keys. Unauthenticated and never"
            " shed: scrape it on the internal network only",
            ok={
                "200": {
                    "description": "The exposition (text format 0.0.4)",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            errors=(),
            tag="ops",
        ),
    ),
    Route(
        "GET",
        "/openapi.json",
        public.get_openapi,
        operation=operation(
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
        ),
    ),
    # The pages the service serves itself (passcode.api.pages), each answer with a strict CSP.
    Route(
        "GET",
        "/app/",
        pages.app_index,
        operation=page_operation(
            "The citizen page (sign in, declare, show the code), zh-CN and en", "text/html"
        ),
    ),
    Route(
        "GET",
        "/app/{name}",
        pages.app_file,
        operation=page_operation("A file of the citizen page", named=True),
    ),
    Route(
        "GET",
        "/scan/",
        pages.scan_index,
        operation=page_operation(
            "The scanner page, for a phone or tablet at a door, zh-CN and en", "text/html"
        ),
    ),
    Route(
        "GET",
        "/scan/{name}",
        pages.scan_file,
        operation=page_operation("A file of the scanner page", named=True),
    ),
    Route(
        "GET",
        "/common/{name}",
        pages.common_file,
        operation=page_operation("A module the pages share", "text/javascript", named=True),
    ),
    Route(
        "GET",
        "/i18n/{name}",
        pages.catalogue,
        operation=page_operation(
            "A message catalogue of the pages (zh-CN.json, en.json)", "application/json", named=True
        ),
    ),
    Route(
        "GET",
        "/docs",
        pages.docs_index,
        operation=page_operation(
            "The API reference: Swagger UI reading this document", "text/html"
        ),
    ),
    Route(
        "GET",
        "/docs/{name}",
        pages.docs_file,
        operation=page_operation("A file of the API reference page", "text/javascript", named=True),
    ),
    Route(
        "GET",
        "/vendor/{name}",
        pages.vendor_file,
        operation=page_operation(
            "A file of an npm package the pages load (Swagger UI, the QR encoder, a QR"
            " decoder), installed by `make install` (npm ci); 404 when it is not installed",
            "text/javascript",
            "text/css",
            named=True,
        ),
    ),
)
