"""Hostile values in every field of every operation, generated from the OpenAPI document.

For each operation of ``openapi_document()`` the test builds a valid request from the document
(the credential its ``security`` names, a value for each required field from its schema) and
checks that it is accepted; then, one field at a time, it replaces that field's value with each
hostile value: NUL, CR/LF, white space only, bidirectional controls, times out of range (year 1
at +23:59, year 9999 at -23:59), huge and negative numbers, and values of the wrong type (list,
object, bool, null). Every string and date-time field is covered: body properties (nested ones
and array items too), query, path and header parameters, and the columns of a CSV upload.

Each answer must be below 500; a refused value gets an RFC 9457 problem (``type``, ``title``,
``status``, ``detail``), or, where the document gives that status another answer (the OAuth
token endpoint's error JSON, the dev provider's login form again), that answer; and it stores
nothing (every table's row count, after draining the scan
log, is unchanged across an operation's refused requests). A value must be refused when the
document's schema for the field refuses it, or when its kind's rule does (a text with a
control, separator or bidi character, or nothing but white space). The few fields whose text
is data, not a fault, are listed in :data:`DATA_TEXT` with what they answer instead.

A new operation is covered without a change here. What the test cannot know (a security
scheme, a path parameter naming a resource, a request content type, a pattern it cannot
satisfy) fails it loudly, naming the operation; what no schema can produce (a real venue code,
a signer's certificate, a JWK Set, a policy rule's CertLogic) is in :data:`VALID_FIELDS`, made
from the resources :func:`_resources` creates through the API.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from yarl import URL

from passcode.api import schemas
from passcode.api.openapi import openapi_document
from passcode.domain.identity import s256_challenge
from passcode.domain.testresults import HEADER as CSV_HEADER
from passcode.keys import DRAIN, POOL
from passcode.store.pg import acquire
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory
from tests.trust_material import b64, dsc, issuer_jwk, issuer_url, kid64

Client = TestClient[Any, Any]
PROBLEM_JSON = "application/problem+json"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
FORM = "application/x-www-form-urlencoded"

# Texts every kind of text field must refuse (the rule of passcode.domain.fields), then texts
# that are well-formed as text but no time the service accepts.
REFUSED_TEXT = {
    "nul": "a\x00b",
    "crlf": "a\r\nb",
    "whitespace-only": " \t ",
    "bidi-override": "abc\u202edef",
    "bidi-isolate": "\u2066abc\u2069",
}
TIMES_OUT_OF_RANGE = {
    "year-1-plus-23-59": "0001-01-01T00:00:00+23:59",
    "year-9999-minus-23-59": "9999-12-31T23:59:59-23:59",
}
HOSTILE_TEXT = {**REFUSED_TEXT, **TIMES_OUT_OF_RANGE}
HOSTILE_JSON: dict[str, Any] = {
    "1e308": 1e308,
    "10-to-the-30": 10**30,
    "minus-1": -1,
    "minus-1e308": -1e308,
    "list": [],
    "object": {},
    "true": True,
    "null": None,
}
HOSTILE_QUERY = {
    "1e308": "1e308",
    "10-to-the-30": str(10**30),
    "minus-1": "-1",
    "list": "[]",
    "true": "true",
    "null": "null",
}

# Text that is data, not a fault: (method, path, field) → what a 2xx answer to it must say.
# The code a terminal read is whatever the QR held; anything that is no pass is answered
# ``invalid`` (DESIGN §3), never refused.
DATA_TEXT = {
    ("post", "/v1/verify", "code"): {"decision": "invalid"},
    ("post", "/v1/verify/batch", "scans/0/code"): {"results": [{"decision": "invalid"}]},
}

# Times a valid request sends, by field name (a window ends after it starts, in the past); any
# other date-time field gets the present.
TIME_OFFSETS = {
    "since": timedelta(hours=-2),
    "until": timedelta(hours=-1),
    "valid_from": timedelta(minutes=-1),
    "valid_until": timedelta(days=1),
    "exposure_until": timedelta(days=1),
}


def _now_plus(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


# What the resources of a run are: path parameters by name (terminal_id, place, serial, kid...)
# and what valid bodies are made of (a venue code, a signer's certificate, the sign-in client).
Resources = dict[str, Any]


def _login(r: Resources) -> dict[str, str]:
    """The dev identity provider's authorization request for the pages' client (PKCE S256)."""
    return {
        "response_type": "code",
        "client_id": r["client_id"],
        "redirect_uri": r["redirect_uri"],
        "scope": "openid profile",
        "state": "hostile-state",
        "nonce": "hostile-nonce",
        "code_challenge": s256_challenge(r["code_verifier"]),
        "code_challenge_method": "S256",
    }


# Valid values no schema can produce, by (method, path, field): the field is a body pointer
# ("rules/0/id"; "" is the whole body), a query, path or header parameter's name, or a form
# field. Each is made from the run's resources, so it is real: a venue code the service issued,
# a certificate and an issuer URL it imported, the client its own sign-in provider knows.
VALID_FIELDS: dict[tuple[str, str, str], Callable[[Resources], Any]] = {
    ("post", "/v1/checkins", "place_code"): lambda r: r["venue_code"],
    ("post", "/v1/admin/trust/dcc", "certificates/0"): lambda r: r["dcc_certificate"],
    ("post", "/v1/admin/trust/shc", "iss"): lambda r: r["shc_iss"],
    ("post", "/v1/admin/trust/shc", "jwks"): lambda r: r["shc_jwks"],
    ("delete", "/v1/admin/trust/shc", "iss"): lambda r: r["shc_iss"],
    ("post", "/dev-idp/authorize", ""): lambda r: {
        **_login(r),
        "user_id": f"hostile-idp-{uuid.uuid4().hex[:8]}",
        "name": "Hostile Fields",
    },
    ("post", "/dev-idp/token", ""): lambda r: {
        "grant_type": "authorization_code",
        "code": "",  # renewed before each request: a code is used once (RENEWED)
        "redirect_uri": r["redirect_uri"],
        "client_id": r["client_id"],
        "code_verifier": r["code_verifier"],
    },
    # Files each page serves, as they ship.
    ("get", "/app/{name}", "name"): lambda r: "main.js",
    ("get", "/scan/{name}", "name"): lambda r: "scan.js",
    ("get", "/common/{name}", "name"): lambda r: "i18n.js",
    ("get", "/i18n/{name}", "name"): lambda r: "en.json",
    ("get", "/docs/{name}", "name"): lambda r: "init.js",
    ("get", "/vendor/{name}", "name"): lambda r: "uqr.mjs",
}
for _policy in ("/v1/admin/place-types/{type}/policy", "/v1/admin/places/{place}/policy"):
    VALID_FIELDS[("put", _policy, "rules/0/id")] = lambda r: "hostile-rule"
    VALID_FIELDS[("put", _policy, "rules/0/logic")] = lambda r: {"==": [1, 1]}
for _name in _login({"client_id": "", "redirect_uri": "", "code_verifier": ""}):
    VALID_FIELDS[("get", "/dev-idp/authorize", _name)] = lambda r, n=_name: _login(r)[n]


class Unknown(AssertionError):
    """The document holds something this test cannot build a valid request for."""


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path}"


@dataclass
class Request:
    """One request: the path parameters, query, headers and body to send."""

    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    csv_rows: list[list[str]] | None = None
    form: dict[str, str] | None = None
    content_type: str | None = None
    renewed: set[str] = field(default_factory=set)  # form fields made afresh for each send


@dataclass
class Target:
    """One field to make hostile: where it is, its schema, the values to try."""

    where: str  # "body", "query", "path", "header", "csv", "form"
    pointer: tuple[str | int, ...]  # within the body, or (name,) for a parameter / CSV column
    schema: dict[str, Any]
    values: dict[str, Any]

    @property
    def label(self) -> str:
        return "/".join(str(p) for p in self.pointer)


DOCUMENT = openapi_document()


def deref(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``$ref``s to the document's components replaced, at every depth."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].removeprefix("#/components/schemas/")
                return walk(DOCUMENT["components"]["schemas"][name])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def operations() -> Iterator[Operation]:
    for path, item in DOCUMENT["paths"].items():
        for method, spec in item.items():
            if method in HTTP_METHODS:
                yield Operation(method, path, spec)


def _choice(schema: dict[str, Any]) -> dict[str, Any]:
    """The first non-null alternative of a oneOf/anyOf."""
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return options[0]
    return schema


def example(
    schema: dict[str, Any],
    name: str,
    op: Operation,
    resources: Resources,
    pointer: tuple[str | int, ...] = (),
) -> Any:
    """A value the document's ``schema`` (for field ``name`` at ``pointer``) accepts and the
    service takes: :data:`VALID_FIELDS`' when it has one."""
    builder = VALID_FIELDS.get((op.method, op.path, "/".join(str(p) for p in pointer)))
    if builder is not None:
        return builder(resources)
    schema = _choice(schema)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            key: example(sub, key, op, resources, (*pointer, key))
            for key, sub in schema.get("properties", {}).items()
            if key in schema.get("required", [])
        }
    if kind == "array":
        item = schema["items"]
        return [
            example(item, name, op, resources, (*pointer, 0))
            for _ in range(schema.get("minItems", 0))
        ]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        low, high = schema.get("minimum", 0), schema.get("maximum", 100)
        return 36.6 if low <= 36.6 <= high else low
    if kind == "boolean":
        return False
    if kind == "string":
        return _example_text(schema, name, op)
    raise Unknown(f"{op.name}: no valid value known for {name} ({schema})")


def _example_text(schema: dict[str, Any], name: str, op: Operation) -> str:
    pattern = schema.get("pattern")
    if pattern == schemas.DATETIME_PATTERN:
        return _now_plus(TIME_OFFSETS.get(name, timedelta()))
    if pattern == schemas.UUID_PATTERN:
        return str(uuid.uuid4())
    if pattern is not None:
        raise Unknown(f"{op.name}: no valid value known for {name} (pattern {pattern})")
    return f"hostile-{name}-{uuid.uuid4().hex[:8]}"


def _targets_in(
    schema: dict[str, Any], pointer: tuple[str | int, ...], values: dict[str, Any]
) -> Iterator[Target]:
    """Every field of a JSON body schema: properties, nested objects, array items."""
    schema = _choice(schema)
    kind = schema.get("type")
    if pointer:
        yield Target("body", pointer, schema, values)
    if kind == "object":
        for key, sub in schema.get("properties", {}).items():
            yield from _targets_in(sub, (*pointer, key), values)
    elif kind == "array" and isinstance(schema.get("items"), dict):
        yield from _targets_in(schema["items"], (*pointer, 0), values)


def _parameters(op: Operation) -> list[dict[str, Any]]:
    shared = DOCUMENT["paths"].get(op.path, {}).get("parameters", [])
    return [*shared, *op.spec.get("parameters", [])]


def plan(op: Operation, resources: Resources) -> tuple[Request, list[Target]]:
    """The valid request for ``op`` and the fields to make hostile in it."""
    request = Request()
    targets = [_parameter(op, param, request, resources) for param in _parameters(op)]
    body = op.spec.get("requestBody")
    if body is not None:
        content = body["content"]
        if "application/json" in content:
            schema = deref(content["application/json"]["schema"])
            if _choice(schema).get("type") != "object":
                raise Unknown(f"{op.name}: a JSON body that is not an object")
            request.content_type = "application/json"
            request.json_body = example(schema, "body", op, resources)
            targets.extend(_targets_in(schema, (), {**HOSTILE_TEXT, **HOSTILE_JSON}))
        elif FORM in content:
            # A form's fields are the valid form's (VALID_FIELDS): its schema names none.
            if (op.method, op.path, "") not in VALID_FIELDS:
                raise Unknown(f"{op.name}: no valid form known")
            request.content_type = FORM
            request.form = example(deref(content[FORM]["schema"]), "body", op, resources)
            assert request.form is not None
            request.renewed = {k for k in request.form if (op.method, op.path, k) in RENEWED}
            for key in request.form:
                targets.append(Target("form", (key,), {"type": "string"}, HOSTILE_TEXT))
        elif "text/csv" in content:
            request.content_type = "text/csv"
            request.csv_rows = [_csv_row()]
            for column in CSV_HEADER:
                targets.append(Target("csv", (column,), {"type": "string"}, HOSTILE_TEXT))
        else:
            raise Unknown(f"{op.name}: no request of type {sorted(content)} is known here")
    return request, targets


def _parameter(
    op: Operation, param: dict[str, Any], request: Request, resources: Resources
) -> Target:
    """The target for one parameter; a required one gets its valid value in ``request``."""
    name, where, schema = param["name"], param["in"], deref(param["schema"])
    if where == "path":
        builder = VALID_FIELDS.get((op.method, op.path, name))
        if builder is None and name not in resources:
            raise Unknown(f"{op.name}: no resource known for path parameter {name}")
        request.path_params[name] = str(resources[name] if builder is None else builder(resources))
        return Target("path", (name,), schema, HOSTILE_TEXT)
    if where == "query":
        if param.get("required"):
            request.query[name] = str(example(schema, name, op, resources, (name,)))
        return Target("query", (name,), schema, {**HOSTILE_TEXT, **HOSTILE_QUERY})
    if where == "header":
        # What HTTP can carry in a header at all: no NUL or line break, ASCII only.
        sendable = {
            k: v
            for k, v in HOSTILE_TEXT.items()
            if v.isascii() and not {"\x00", "\r", "\n"} & set(v)
        }
        return Target("header", (name,), schema, sendable)
    raise Unknown(f"{op.name}: parameters in {where} are not known here")


def _csv_row() -> list[str]:
    row = {
        "user_id": f"hostile-{uuid.uuid4().hex}",
        "result": "negative",
        "tested_at": _now_plus(-timedelta(hours=1)),
    }
    return [row[column] for column in CSV_HEADER]


def _set(body: Any, pointer: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``body`` with the field at ``pointer`` set (arrays grown to hold index 0)."""
    body = copy.deepcopy(body)
    node = body
    for step, following in itertools.pairwise(pointer):
        if isinstance(step, int):
            while len(node) <= step:
                node.append({} if isinstance(following, str) else None)
            if node[step] is None:
                node[step] = {} if isinstance(following, str) else []
        elif step not in node or not isinstance(node[step], dict | list):
            node[step] = [] if isinstance(following, int) else {}
        node = node[step]
    last = pointer[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return body


def hostile(
    request: Request, target: Target, value: Any, op: Operation, resources: Resources
) -> Request:
    """``request`` with ``target`` set to ``value`` (required siblings of a new item filled)."""
    changed = copy.deepcopy(request)
    (name, *_) = target.pointer
    if target.where == "path":
        changed.path_params[str(name)] = value
    elif target.where == "query":
        changed.query[str(name)] = value
    elif target.where == "header":
        changed.headers[str(name)] = value
    elif target.where == "csv":
        assert changed.csv_rows is not None
        changed.csv_rows[0][CSV_HEADER.index(str(name))] = value
    elif target.where == "form":
        assert changed.form is not None
        changed.form[str(name)] = value
        changed.renewed.discard(str(name))
    else:
        body = changed.json_body
        # A field inside a new array item: start from a valid item, then set the field.
        for depth, step in enumerate(target.pointer):
            if isinstance(step, int):
                parent = _get(body, target.pointer[:depth])
                if isinstance(parent, list) and not parent:
                    item = target.pointer[: depth + 1]
                    valid = example(_schema_at(op, item), "", op, resources, item)
                    body = _set(body, item, valid)
        changed.json_body = _set(body, target.pointer, value)
    return changed


def _get(body: Any, pointer: tuple[str | int, ...]) -> Any:
    node = body
    for step in pointer:
        if isinstance(step, int):
            if not isinstance(node, list) or len(node) <= step:
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def _schema_at(op: Operation, pointer: tuple[str | int, ...]) -> dict[str, Any]:
    schema = deref(op.spec["requestBody"]["content"]["application/json"]["schema"])
    for step in pointer:
        schema = _choice(schema)
        schema = schema["items"] if isinstance(step, int) else schema["properties"][step]
    return schema


def must_refuse(op: Operation, target: Target, value: Any) -> bool:
    """Whether the document's schema or the field kind's rule refuses ``value``."""
    data_text = (op.method, op.path, target.label) in DATA_TEXT
    if target.where == "csv":
        return value in REFUSED_TEXT.values() or target.pointer[0] in {"result", "tested_at"}
    schema = target.schema
    if target.where in {"query", "path", "header"} and schema.get("type") in {"integer", "number"}:
        return True  # no hostile text is an integer in range
    if not Draft202012Validator(schema).is_valid(value):
        return True
    if schema.get("pattern") == schemas.DATETIME_PATTERN and value in TIMES_OUT_OF_RANGE.values():
        return True  # the time rule's range, which its description states
    return isinstance(value, str) and value in REFUSED_TEXT.values() and not data_text


async def idle(client: Client) -> None:
    """Background work settled: risk place jobs finished, the scan log drained."""
    async with asyncio.timeout(30):
        while True:
            async with acquire(client.app[POOL], "jobs", 5) as conn:
                busy = await conn.fetchval(
                    "SELECT count(*) FROM risk_places WHERE state IN ('pending', 'running')"
                )
            if not busy:
                break
            await asyncio.sleep(0.02)
    await client.app[DRAIN].drain_all()


async def row_counts(client: Client) -> dict[str, int]:
    """Rows in every table of the database (scans: all day partitions, through the parent)."""
    await idle(client)
    async with acquire(client.app[POOL], "count rows", 5) as conn:
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition"
        )
        counts = {}
        for row in tables:
            name = row["relname"]
            counts[name] = await conn.fetchval(f'SELECT count(*) FROM "{name}"')  # noqa: S608  # catalog names
    return counts


async def send(
    client: Client, op: Operation, request: Request, credential: dict[str, str]
) -> ClientResponse:
    path = op.path
    for name, value in request.path_params.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    headers = {**credential, **request.headers}
    data: bytes | None = None
    if request.content_type == "application/json":
        data = json.dumps(request.json_body, ensure_ascii=False).encode()
    elif request.content_type == "text/csv":
        assert request.csv_rows is not None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(request.csv_rows)
        data = out.getvalue().encode()
    elif request.content_type == FORM:
        assert request.form is not None
        data = urlencode(request.form).encode()
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    url = URL(path, encoded=True).with_query(request.query)
    # A redirect is the answer itself (the dev provider's 303 to the page), not followed.
    return await client.request(
        op.method.upper(), url, data=data, headers=headers, allow_redirects=False
    )


def succeeded(op: Operation, status: int) -> bool:
    """A 2xx, or a redirect the document names as the operation's answer."""
    return 200 <= status < 300 or (300 <= status < 400 and str(status) in op.spec["responses"])


async def problem_of(response: ClientResponse, op: Operation) -> str | None:
    """None if ``response`` is a well-formed problem+json for its status, or the other answer
    the document gives ``op`` for that status (validated by its schema), else what is wrong."""
    text = await response.text()
    documented = op.spec["responses"].get(str(response.status), {}).get("content", {})
    if response.content_type != PROBLEM_JSON and response.content_type in documented:
        schema = deref(documented[response.content_type].get("schema", {}))
        body: Any = text
        if response.content_type == "application/json":
            try:
                body = json.loads(text)
            except ValueError:
                return f"not JSON: {text[:200]}"
        if not text or not Draft202012Validator(schema).is_valid(body):
            return f"not the documented {response.content_type}: {text[:200]}"
        return None
    if response.content_type != PROBLEM_JSON:
        return f"content type {response.content_type}: {text[:200]}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"not JSON: {text[:200]}"
    for key, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        if not isinstance(body.get(key), kind):
            return f"no {key}: {text[:200]}"
    if body["status"] != response.status:
        return f"status {body['status']} in a {response.status}: {text[:200]}"
    return None


def _subset(expected: Any, got: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(got, list) and all(
            _subset(e, g) for e, g in zip(expected, got, strict=True)
        )
    return bool(expected == got)


async def _json(response: ClientResponse, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _resources(client: Client, citizen: dict[str, str]) -> Resources:
    """A value for each path parameter naming a resource, one that exists, and what valid
    bodies are made of: a declared ``citizen``, a place with its type and poster (its venue
    code), a printed card, an imported DCC signer and SHC issuer, the sign-in client."""
    await _json(await client.post("/v1/declarations", json=HEALTHY, headers=citizen), 201)
    terminal = await client.post(
        "/v1/admin/terminals", json={"place": "Hostile Fields Gate"}, headers=ADMIN
    )
    assert terminal.status == 201, await terminal.text()
    marking = await client.post(
        "/v1/admin/risk-places",
        json={
            "place": f"Hostile Fields {uuid.uuid4().hex[:8]}",
            "since": _now_plus(-timedelta(hours=2)),
            "until": _now_plus(-timedelta(hours=1)),
            "note": "hostile fields",
        },
        headers=ADMIN,
    )
    assert marking.status == 202, await marking.text()
    place, place_type = (
        f"hostile-place-{uuid.uuid4().hex[:8]}",
        f"hostile-type-{uuid.uuid4().hex[:8]}",
    )
    described = {"type": place_type, "name": "Hostile Fields Place"}
    await _json(await client.put(f"/v1/admin/places/{place}", json=described, headers=ADMIN), 201)
    poster = await _json(await client.post(f"/v1/admin/places/{place}/poster", headers=ADMIN), 201)
    certificate = b64(dsc())
    imported = await client.post(
        "/v1/admin/trust/dcc", json={"certificates": [certificate]}, headers=ADMIN
    )
    await _json(imported, 200)
    config = await _json(await client.get("/v1/web-config"), 200)
    return {
        "terminal_id": (await terminal.json())["id"],
        "marking_id": (await marking.json())["id"],
        "place": place,
        "type": place_type,
        "venue_code": poster["code"],
        "serial": await _card(client),
        "dcc_certificate": certificate,
        **await _issuer(client),
        "client_id": config["client_id"],
        "redirect_uri": config["redirect_uri"],
        "code_verifier": "hostile-fields-verifier-" + "v" * 40,
    }


async def _card(client: Client) -> str:
    person = {"user_id": f"hostile-elder-{uuid.uuid4().hex[:8]}", "name": "王小明"}
    card = await _json(await client.post("/v1/admin/cards", json=person, headers=ADMIN), 201)
    serial: str = card["serial"]
    return serial


async def _issuer(client: Client) -> Resources:
    """An SHC issuer imported with a fresh key: its URL and JWK Set."""
    issuer = {"iss": issuer_url(), "jwks": {"keys": [issuer_jwk()]}}
    await _json(await client.post("/v1/admin/trust/shc", json=issuer, headers=ADMIN), 200)
    return {"shc_iss": issuer["iss"], "shc_jwks": issuer["jwks"]}


async def _spare_terminal(client: Client) -> Resources:
    made = await client.post("/v1/admin/terminals", json={"place": "Spare Gate"}, headers=ADMIN)
    assert made.status == 201, await made.text()
    return {"terminal_id": (await made.json())["id"]}


async def _spare_card(client: Client) -> Resources:
    return {"serial": await _card(client)}


async def _spare_signer(client: Client) -> Resources:
    """A DCC signer imported for its removal; its kid in base64url, as a path carries it."""
    der = dsc()
    imported = await client.post(
        "/v1/admin/trust/dcc", json={"certificates": [b64(der)]}, headers=ADMIN
    )
    await _json(imported, 200)
    return {"kid": kid64(der).replace("+", "-").replace("/", "_").rstrip("=")}


async def _spare_place(client: Client) -> Resources:
    """A place of its own: issuing a poster revokes the place's last one (the run's code)."""
    place = f"hostile-spare-{uuid.uuid4().hex[:8]}"
    described = {"type": "hostile-spare", "name": "Spare Place"}
    await _json(await client.put(f"/v1/admin/places/{place}", json=described, headers=ADMIN), 201)
    return {"place": place}


# Operations that use their resource up get a fresh one each: a revoked terminal or card, a
# removed signer or issuer; a new poster revokes the place's old one.
SPARE: dict[tuple[str, str], Callable[[Client], Awaitable[Resources]]] = {
    ("post", "/v1/admin/terminals/{terminal_id}/revoke"): _spare_terminal,
    ("post", "/v1/admin/cards/{serial}/revoke"): _spare_card,
    ("delete", "/v1/admin/trust/dcc/{kid}"): _spare_signer,
    ("delete", "/v1/admin/trust/shc"): _issuer,
    ("post", "/v1/admin/places/{place}/poster"): _spare_place,
}


async def _fresh_code(client: Client, resources: Resources) -> str:
    """An authorization code of the dev provider for the run's client (each is used once)."""
    login = VALID_FIELDS[("post", "/dev-idp/authorize", "")](resources)
    posted = await client.post("/dev-idp/authorize", data=login, allow_redirects=False)
    assert posted.status == 303, await posted.text()
    code: str = parse_qs(urlsplit(posted.headers["Location"]).query)["code"][0]
    return code


# Form fields made afresh before each request, unless it is the field made hostile.
RENEWED: dict[tuple[str, str, str], Callable[[Client, Resources], Awaitable[str]]] = {
    ("post", "/dev-idp/token", "code"): _fresh_code,
}


@dataclass
class Run:
    """What one run sent and found wrong."""

    client: Client
    credentials: dict[str, dict[str, str]]
    resources: Resources = field(default_factory=dict)
    sent: int = 0
    failures: list[str] = field(default_factory=list)

    def credential(self, op: Operation) -> dict[str, str]:
        security = op.spec.get("security") or [{}]
        credential: dict[str, str] = {}
        for scheme in security[0]:
            if scheme not in self.credentials:
                raise Unknown(f"{op.name}: no credential known for security scheme {scheme}")
            credential |= self.credentials[scheme]
        return credential

    async def send(self, op: Operation, request: Request) -> ClientResponse:
        self.sent += 1
        if request.renewed:
            request = copy.deepcopy(request)
            assert request.form is not None
            for key in request.renewed:
                renew = RENEWED[(op.method, op.path, key)]
                request.form[key] = await renew(self.client, self.resources)
        return await send(self.client, op, request, self.credential(op))

    async def refused(self, op: Operation, request: Request, cases: list[Case]) -> None:
        """Each is a problem (a CSV record: reported, not applied); no row changes."""
        before = await row_counts(self.client)
        reports = 0  # CSV uploads answered with a report: each is audited, nothing applied
        for target, label, value in cases:
            where = f"{op.name} {target.where} {target.label} = {label}"
            response = await self.send(op, hostile(request, target, value, op, self.resources))
            if target.where == "csv" and response.status == 200:
                reports += 1
                report = await response.json()
                if report["applied"] != 0 or report["rejected"] < 1:
                    self.failures.append(f"{where}: the record was not rejected: {report}")
            elif not 400 <= response.status < 500:
                self.failures.append(f"{where}: {response.status} {(await response.text())[:200]}")
            elif (problem := await problem_of(response, op)) is not None:
                self.failures.append(f"{where}: {problem}")
        after = await row_counts(self.client)
        before["audit_log"] += reports
        if after != before:
            changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
            self.failures.append(f"{op.name}: refused requests changed rows: {changed}")

    async def accepted(self, op: Operation, request: Request, cases: list[Case]) -> None:
        """Each may be taken: never a 5xx, a refusal is a problem, data text its answer."""
        for target, label, value in cases:
            where = f"{op.name} {target.where} {target.label} = {label}"
            response = await self.send(op, hostile(request, target, value, op, self.resources))
            expected = DATA_TEXT.get((op.method, op.path, target.label))
            if response.status >= 500:
                self.failures.append(f"{where}: {response.status} {(await response.text())[:200]}")
            elif response.status >= 400:
                if (problem := await problem_of(response, op)) is not None:
                    self.failures.append(f"{where}: {problem}")
            elif expected is not None and not _subset(expected, await response.json()):
                self.failures.append(f"{where}: {await response.text()} is not {expected}")


Case = tuple[Target, str, Any]


async def test_every_field_of_every_operation_refuses_hostile_values_with_a_problem(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Every operation in the OpenAPI document: its valid request is accepted; with each
    string, date-time and number field (body, query, path, header, CSV column) set to each
    hostile value, the answer is never a 5xx; a value the field's schema or kind refuses gets
    a problem+json body with type, title, status and detail (or the other refusal the document
    gives that status), and leaves every table as it was; a text that is data (the QR's code)
    gets its documented answer."""
    citizen = auth(make_token())
    run = Run(client, {"terminalKey": auth(terminal_key), "idToken": citizen, "adminKey": ADMIN})
    resources = await _resources(client, citizen)
    for op in operations():
        spare = SPARE.get((op.method, op.path))
        run.resources = resources if spare is None else {**resources, **await spare(client)}
        request, targets = plan(op, run.resources)
        baseline = await run.send(op, request)
        if not succeeded(op, baseline.status):
            raise Unknown(
                f"{op.name}: the valid request built from the document got {baseline.status}:"
                f" {(await baseline.text())[:300]}"
            )
        cases = [(t, label, value) for t in targets for label, value in t.values.items()]
        await run.refused(op, request, [c for c in cases if must_refuse(op, c[0], c[2])])
        await run.accepted(op, request, [c for c in cases if not must_refuse(op, c[0], c[2])])
    assert not run.failures, f"{len(run.failures)} of {run.sent} requests:\n" + "\n".join(
        run.failures
    )


def test_the_plan_covers_every_string_and_time_field_of_the_document() -> None:
    """The generated plan is the document's: every request body property (at any depth) and
    every parameter of every operation is a target, each string one gets every hostile text,
    a form's every field is one, and an operation whose credential or path resource is
    unknown fails loudly."""
    names: Resources = {
        "terminal_id": str(uuid.uuid4()),
        "marking_id": str(uuid.uuid4()),
        "place": "a-place",
        "type": "a-type",
        "serial": "00" * 16,
        "kid": "AAAAAAAAAAA",
        "venue_code": "PP1:X",
        "dcc_certificate": "AA==",
        "shc_iss": "https://issuer.example.org",
        "shc_jwks": {"keys": [{}]},
        "client_id": "a-client",
        "redirect_uri": "https://example.org/app/",
        "code_verifier": "v" * 43,
    }
    for op in operations():
        _, targets = plan(op, names)
        labels = {(t.where, t.label) for t in targets}
        for param in _parameters(op):
            assert (param["in"], param["name"]) in labels, (op.name, param["name"])
        content = op.spec.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            schema = _choice(deref(content["application/json"]["schema"]))
            for key in schema["properties"]:
                assert ("body", key) in labels, (op.name, key)
        if FORM in content:
            form = VALID_FIELDS[(op.method, op.path, "")](names)
            assert {("form", key) for key in form} <= labels, op.name
        for target in targets:
            if target.where in {"body", "query", "path", "form"}:
                assert set(HOSTILE_TEXT) <= set(target.values), (op.name, target.label)
    verify = next(op for op in operations() if op.path == "/v1/verify/batch")
    _, targets = plan(verify, names)
    assert {"scans/0/code", "scans/0/scanned_at", "scans/0/scan_id"} <= {t.label for t in targets}
    strange = Operation(
        "post",
        "/v1/x/{thing_id}",
        {
            "parameters": [
                {"name": "thing_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        },
    )
    with pytest.raises(Unknown, match="thing_id"):
        plan(strange, names)
