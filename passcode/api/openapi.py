"""The OpenAPI 3.1 document, built from the route table and the schemas the handlers use."""

from __future__ import annotations

import functools
from typing import Any

from passcode.api import devidp
from passcode.api import schemas as s
from passcode.api.routes import ROUTES
from passcode.domain.model import Reason
from passcode.errors import ALL_ERRORS


@functools.cache
def openapi_document() -> dict[str, Any]:
    """Built once; every response the service gives is described here (tests check that).
    Its paths are the route table's entries, in the table's order."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation
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
                "PlaceRequest": s.PLACE_REQUEST,
                "Place": s.PLACE_VIEW,
                "PlacePolicyRequest": s.PLACE_POLICY_REQUEST,
                "PlacePolicySet": s.PLACE_POLICY_SET,
                "CardRequest": s.CARD_REQUEST,
                "Card": s.CARD,
                "CardRevokeRequest": s.CARD_REVOKE_REQUEST,
                "ReplayCount": s.REPLAY_COUNT_RESPONSE,
                "AuditPage": s.AUDIT_PAGE,
                "DeadLetterPage": s.DEAD_LETTER_PAGE,
                "DeadLetterReplay": s.DEAD_LETTER_REPLAY,
                "TraceCitizenRequest": s.TRACE_CITIZEN_REQUEST,
                "TracePlacePage": s.TRACE_PLACE_PAGE,
                "TraceCitizenPage": s.TRACE_CITIZEN_PAGE,
                "KeySet": s.KEY_SET,
                "Health": s.HEALTH,
                "TestResultsCsv": s.TEST_RESULTS_CSV,
                "TestResultsUpload": s.TEST_RESULTS_UPLOAD,
                "RiskPlaceRequest": s.RISK_PLACE_REQUEST,
                "RiskPlace": s.RISK_PLACE,
                "TrustDccRequest": s.TRUST_DCC_REQUEST,
                "TrustDccImported": s.TRUST_DCC_IMPORTED,
                "TrustShcRequest": s.TRUST_SHC_REQUEST,
                "TrustShcImported": s.TRUST_SHC_IMPORTED,
                "TrustDocument": s.TRUST_DOCUMENT,
                "CheckinRequest": s.CHECKIN_REQUEST,
                "CheckinResponse": s.CHECKIN_RESPONSE,
                "VenuePoster": s.VENUE_POSTER,
                "MyData": s.MY_DATA,
                "Erasure": s.ERASURE,
                "ErasureRequest": s.ERASURE_REQUEST,
                "Problem": s.PROBLEM,
                "Unverified": s.UNVERIFIED,
                **devidp.SCHEMAS,  # the dev identity provider's and GET /v1/web-config's
            },
        },
        "paths": paths,
    }
