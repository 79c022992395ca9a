"""How an endpoint's OpenAPI operation is written: its responses, error problems, headers and
parameters. The route table (:mod:`passcode.api.routes`) describes each operation with these;
:mod:`passcode.api.openapi` assembles the document."""

from __future__ import annotations

from typing import Any

from passcode.api.problems import PROBLEM_JSON


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(name)}}


NO_STORE = {
    "Cache-Control": {
        "description": "Always `no-store`",
        "required": True,
        "schema": {"const": "no-store"},
    }
}


def no_store_json(status: str, description: str, schema: str) -> dict[str, Any]:
    """A JSON answer sent with ``Cache-Control: no-store`` (it holds a pass, a key or scans)."""
    return {
        status: {"description": description, "content": json_content(schema), "headers": NO_STORE}
    }


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


def problem(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": schema or ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def error_responses(*codes: int) -> dict[str, Any]:
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
    return {str(code): problem(text[code], headers=headers.get(code)) for code in codes}


def operation(
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
        "responses": {**ok, **error_responses(*errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_content(body)}
    if security is not None:
        op["security"] = [{security: []}]
    if extra:
        op.update(extra)
    return op


def query(
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
