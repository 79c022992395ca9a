"""One exception hierarchy; :mod:`passcode.api.problems` maps each to an RFC 9457 problem body."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://passcode.invalid/problems/"


class PasscodeError(Exception):
    """Base of every error the service answers with; never a driver exception."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    @property
    def type_uri(self) -> str:
        """The problem ``type``; documented per slug in the OpenAPI document."""
        return PROBLEM_BASE + self.slug

    def body(self) -> dict[str, Any]:
        """The problem+json body."""
        return {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class BadRequest(PasscodeError):
    status = 400
    slug = "bad-request"
    title = "Malformed request"


class ValidationFailed(BadRequest):
    slug = "validation"
    title = "Request body does not match the schema"


class Unauthorized(PasscodeError):
    status = 401
    slug = "unauthorized"
    title = "Missing or unknown credential"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class SignInAgain(Unauthorized):
    """The ID token was issued too long ago for an irreversible action (deleting one's data):
    a token stolen earlier cannot do it."""

    slug = "sign-in-again"
    title = "Sign in again"


class Forbidden(PasscodeError):
    status = 403
    slug = "forbidden"
    title = "Credential not allowed here"


class TerminalRevoked(Forbidden):
    slug = "terminal-revoked"
    title = "Terminal revoked"


class NotFound(PasscodeError):
    status = 404
    slug = "not-found"
    title = "Not found"


class NoDeclaration(NotFound):
    slug = "no-declaration"
    title = "No valid declaration yet"


class UnknownVenue(NotFound):
    """A genuine venue code of a place (or an issue) this service does not know."""

    slug = "unknown-venue"
    title = "Unknown venue code"


class VenueCodeInvalid(BadRequest):
    """A text that is not a genuine venue code (forged, damaged, another kind of code)."""

    slug = "venue-code-invalid"
    title = "Not a valid venue code"


class VenueCodeRevoked(PasscodeError):
    """A genuine venue code no longer in force: replaced by a newer poster, or expired."""

    status = 410
    slug = "venue-code-revoked"
    title = "Venue code no longer in force"


class MethodNotAllowed(PasscodeError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class RequestTimeout(PasscodeError):
    """The body did not arrive within PASSCODE_BODY_TIMEOUT: a slow sender holds no handler."""

    status = 408
    slug = "request-timeout"
    title = "Request body not received in time"


class Conflict(PasscodeError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class IdempotencyMismatch(Conflict):
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different body"


class PayloadTooLarge(PasscodeError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(PasscodeError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type for this request body"


class RateLimited(PasscodeError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after)


class ServiceUnavailable(PasscodeError):
    status = 503
    slug = "unavailable"
    title = "A backing service is unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after)


class Overloaded(ServiceUnavailable):
    """The process is saturated: the request is refused at once rather than answered late."""

    slug = "overloaded"
    title = "Overloaded; try again shortly"


class StatusUnavailable(ServiceUnavailable):
    """Verify could not read the live status: answer ``unverified``, never admit blind."""

    slug = "status-unavailable"
    title = "Live status unavailable"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, decision="unverified", reason="status_unavailable", **extra)


class StoreUnavailable(ServiceUnavailable):
    """Raised at the store boundary when PostgreSQL or Redis fails or misses its deadline."""

    slug = "store-unavailable"
    title = "Storage unavailable"


ALL_ERRORS: tuple[type[PasscodeError], ...] = (
    PasscodeError,
    BadRequest,
    ValidationFailed,
    Unauthorized,
    SignInAgain,
    Forbidden,
    TerminalRevoked,
    NotFound,
    NoDeclaration,
    UnknownVenue,
    VenueCodeInvalid,
    VenueCodeRevoked,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    IdempotencyMismatch,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    ServiceUnavailable,
    Overloaded,
    StatusUnavailable,
    StoreUnavailable,
)
