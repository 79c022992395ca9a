"""Hostile values in every field of every operation, generated from the OpenAPI document.

For each operation of ``openapi_document()`` the test builds a valid request from the document
(the credential its ``security`` names, a value for each required field from its schema) and
checks that it is accepted; then, one field at a time, it replaces that field's value with each
hostile value: NUL, CR/LF, white space only, bidirectional controls, times out of range (year 1
at +23:59, year 9999 at -23:59), huge and negative numbers, and values of the wrong type (list,
object, bool, null). Every string and date-time field is covered: body properties (nested ones
and array items too), query, path and header parameters, and the columns of a CSV upload.

Each answer must be below 500; a refused value gets an RFC 9457 problem (``type``, ``title``,
``status``, ``detail``) and stores nothing (every table's row count, after draining the scan
log, is unchanged across an operation's refused requests). A value must be refused when the
document's schema for the field refuses it, or when its kind's rule does (a text with a
control, separator or bidi character, or nothing but white space). The few fields whose text
is data, not a fault, are listed in :data:`DATA_TEXT` with what they answer instead.

A new operation is covered without a change here. What the test cannot know (a security
scheme, a path parameter naming a resource, a request content type, a pattern it cannot
satisfy) fails it loudly, naming the operation.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from yarl import URL

from passcode.api import schemas
from passcode.api.openapi import openapi_document
from passcode.domain.testresults import HEADER as CSV_HEADER
from passcode.keys import DRAIN, POOL
from passcode.store.pg import acquire
from passcode.testing import auth
from tests.helpers import ADMIN, TokenFactory

Client = TestClient[Any, Any]
PROBLEM_JSON = "application/problem+json"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

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
    content_type: str | None = None


@dataclass
class Target:
    """One field to make hostile: where it is, its schema, the values to try."""

    where: str  # "body", "query", "path", "header", "csv"
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


def example(schema: dict[str, Any], name: str, op: Operation) -> Any:
    """A value the document's ``schema`` (for field ``name``) accepts and the service takes."""
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
            key: example(sub, key, op)
            for key, sub in schema.get("properties", {}).items()
            if key in schema.get("required", [])
        }
    if kind == "array":
        return [example(schema["items"], name, op) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        low, high = schema.get("minimum", 0), schema.get("maximum", 100)
        return 36.6 if low <= 36.6 <= high else low
    if kind == "boolean":
        return False
    if kind == "string":
        pattern = schema.get("pattern")
        if pattern == schemas.DATETIME_PATTERN:
            return _now_plus(TIME_OFFSETS.get(name, timedelta()))
        if pattern == schemas.UUID_PATTERN:
            return str(uuid.uuid4())
        if pattern is not None:
            raise Unknown(f"{op.name}: no valid value known for {name} (pattern {pattern})")
        return f"hostile-{name}-{uuid.uuid4().hex[:8]}"
    raise Unknown(f"{op.name}: no valid value known for {name} ({schema})")


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


def plan(op: Operation, path_values: dict[str, str]) -> tuple[Request, list[Target]]:
    """The valid request for ``op`` and the fields to make hostile in it."""
    request = Request()
    targets = [_parameter(op, param, request, path_values) for param in _parameters(op)]
    body = op.spec.get("requestBody")
    if body is not None:
        content = body["content"]
        if "application/json" in content:
            schema = deref(content["application/json"]["schema"])
            if schema.get("type") != "object":
                raise Unknown(f"{op.name}: a JSON body that is not an object")
            request.content_type = "application/json"
            request.json_body = example(schema, "body", op)
            targets.extend(_targets_in(schema, (), {**HOSTILE_TEXT, **HOSTILE_JSON}))
        elif "text/csv" in content:
            request.content_type = "text/csv"
            request.csv_rows = [_csv_row()]
            for column in CSV_HEADER:
                targets.append(Target("csv", (column,), {"type": "string"}, HOSTILE_TEXT))
        else:
            raise Unknown(f"{op.name}: no request of type {sorted(content)} is known here")
    return request, targets


def _parameter(
    op: Operation, param: dict[str, Any], request: Request, path_values: dict[str, str]
) -> Target:
    """The target for one parameter; a required one gets its valid value in ``request``."""
    name, where, schema = param["name"], param["in"], deref(param["schema"])
    if where == "path":
        if name not in path_values:
            raise Unknown(f"{op.name}: no resource known for path parameter {name}")
        request.path_params[name] = path_values[name]
        return Target("path", (name,), schema, HOSTILE_TEXT)
    if where == "query":
        if param.get("required"):
            request.query[name] = str(example(schema, name, op))
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


def hostile(request: Request, target: Target, value: Any, op: Operation) -> Request:
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
    else:
        body = changed.json_body
        # A field inside a new array item: start from a valid item, then set the field.
        for depth, step in enumerate(target.pointer):
            if isinstance(step, int):
                parent = _get(body, target.pointer[:depth])
                if isinstance(parent, list) and not parent:
                    item_schema = _schema_at(op, target.pointer[: depth + 1])
                    body = _set(body, target.pointer[: depth + 1], example(item_schema, "", op))
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
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    url = URL(path, encoded=True).with_query(request.query)
    return await client.request(op.method.upper(), url, data=data, headers=headers)


async def problem_of(response: ClientResponse) -> str | None:
    """None if ``response`` is a well-formed problem+json for its status, else what is wrong."""
    text = await response.text()
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


async def _resources(client: Client) -> dict[str, str]:
    """A value for each path parameter naming a resource: one that exists."""
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
    return {
        "terminal_id": (await terminal.json())["id"],
        "marking_id": (await marking.json())["id"],
    }


@dataclass
class Run:
    """What one run sent and found wrong."""

    client: Client
    credentials: dict[str, dict[str, str]]
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
        return await send(self.client, op, request, self.credential(op))

    async def refused(self, op: Operation, request: Request, cases: list[Case]) -> None:
        """Each is a problem (a CSV record: reported, not applied); no row changes."""
        before = await row_counts(self.client)
        reports = 0  # CSV uploads answered with a report: each is audited, nothing applied
        for target, label, value in cases:
            where = f"{op.name} {target.where} {target.label} = {label}"
            response = await self.send(op, hostile(request, target, value, op))
            if target.where == "csv" and response.status == 200:
                reports += 1
                report = await response.json()
                if report["applied"] != 0 or report["rejected"] < 1:
                    self.failures.append(f"{where}: the record was not rejected: {report}")
            elif not 400 <= response.status < 500:
                self.failures.append(f"{where}: {response.status} {(await response.text())[:200]}")
            elif (problem := await problem_of(response)) is not None:
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
            response = await self.send(op, hostile(request, target, value, op))
            expected = DATA_TEXT.get((op.method, op.path, target.label))
            if response.status >= 500:
                self.failures.append(f"{where}: {response.status} {(await response.text())[:200]}")
            elif response.status >= 400:
                if (problem := await problem_of(response)) is not None:
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
    a problem+json body with type, title, status and detail, and leaves every table as it
    was; a text that is data (the QR's code) gets its documented answer."""
    run = Run(
        client,
        {"terminalKey": auth(terminal_key), "idToken": auth(make_token()), "adminKey": ADMIN},
    )
    path_values = await _resources(client)
    for op in operations():
        if op.path == "/v1/admin/terminals/{terminal_id}/revoke":
            # Revoking the shared terminal would leave later baselines without a live one.
            path_values = {**path_values, "terminal_id": await _spare_terminal(client)}
        request, targets = plan(op, path_values)
        baseline = await run.send(op, request)
        if not 200 <= baseline.status < 300:
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


async def _spare_terminal(client: Client) -> str:
    made = await client.post("/v1/admin/terminals", json={"place": "Spare Gate"}, headers=ADMIN)
    assert made.status == 201, await made.text()
    terminal_id: str = (await made.json())["id"]
    return terminal_id


def test_the_plan_covers_every_string_and_time_field_of_the_document() -> None:
    """The generated plan is the document's: every request body property (at any depth) and
    every parameter of every operation is a target, each string one gets every hostile text,
    and an operation whose credential or path resource is unknown fails loudly."""
    names = {"terminal_id": str(uuid.uuid4()), "marking_id": str(uuid.uuid4())}
    for op in operations():
        _, targets = plan(op, names)
        labels = {(t.where, t.label) for t in targets}
        for param in _parameters(op):
            assert (param["in"], param["name"]) in labels, (op.name, param["name"])
        body = op.spec.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            schema = deref(body["schema"])
            for key in schema["properties"]:
                assert ("body", key) in labels, (op.name, key)
        for target in targets:
            if target.where in {"body", "query", "path"}:
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
