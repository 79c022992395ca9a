"""The route table is the one list of endpoints: the router, the shedder, the OpenAPI document
and the admin roles all follow it, and nothing is routed, shed or documented beside it."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

from aiohttp import hdrs
from aiohttp.test_utils import TestClient

from passcode.api.openapi import openapi_document
from passcode.api.problems import UNMATCHED
from passcode.api.routes import ROUTES, Route
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Role
from passcode.keys import SHEDDER
from passcode.service.shedding import ISSUE, VERIFY
from tests.helpers import role_headers


def _concrete(path: str) -> str:
    """The path with each ``{parameter}`` filled by a fresh UUID (a resource that is not there)."""
    return re.sub(r"\{[^/{}]+\}", lambda _: str(uuid.uuid4()), path)


def test_each_endpoint_is_one_entry_of_the_table() -> None:
    """No method and path appears twice in the table."""
    keys = [(route.method, route.path) for route in ROUTES]
    assert len(keys) == len(set(keys))


def test_the_router_routes_the_table_and_nothing_else(settings: Settings) -> None:
    """create_app routes each entry's method and path to its handler (wrapped, under the
    handler's name), in the table's order, then the catch-all; HEAD, which aiohttp adds beside
    every GET, aside."""
    app = create_app(settings)
    routed = [
        (route.method, resource.canonical, route.handler.__name__)
        for resource in app.router.resources()
        if resource.name != UNMATCHED
        for route in resource
        if route.method != hdrs.METH_HEAD
    ]
    assert routed == [(r.method, r.path, r.handler.__name__) for r in ROUTES]
    assert [resource.name for resource in app.router.resources()][-1] == UNMATCHED


def test_the_document_describes_the_table_and_nothing_else() -> None:
    """The document's paths are the table's, in its order, and each operation is the entry's
    own operation object."""
    paths = openapi_document()["paths"]
    documented = [(method.upper(), path) for path, item in paths.items() for method in item]
    assert documented == [(route.method, route.path) for route in ROUTES]
    for route in ROUTES:
        assert paths[route.path][route.method.lower()] is route.operation


def test_the_document_states_the_roles_of_the_table() -> None:
    """Exactly the entries with a role are documented behind the admin key, and an operation
    whose summary names a role names its entry's."""
    for route in ROUTES:
        security = route.operation.get("security")
        assert (security == [{"adminKey": []}]) == (route.role is not None), route.path
        named = re.findall(r"\brole (\w+)", route.operation["summary"])
        assert named in ([], [str(route.role)]), (route.path, named)
    assert {route.role for route in ROUTES} >= set(Role)


async def test_only_the_tables_shedding_classes_are_shed(
    aiohttp_client: Any, settings: Settings
) -> None:
    """With no request of either class let in, each entry of the issuance class answers 503
    for pass issuance, each of the verify class 503 for verification, and every other entry
    is not shed at all: the shedder counts exactly the table's classes."""
    shut = replace(settings, shed_issue_inflight=0, shed_verify_inflight=0)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(shut))
    for route in ROUTES:
        response = await client.request(route.method, _concrete(route.path))
        await response.read()
        if route.shed is None:
            assert response.status != 503, route.path
            continue
        assert response.status == 503, route.path
        what = "pass issuance" if route.shed == ISSUE else "verification"
        assert what in (await response.json())["detail"], route.path
    shed = client.app[SHEDDER].shed
    assert shed == [
        sum(route.shed == ISSUE for route in ROUTES),
        sum(route.shed == VERIFY for route in ROUTES),
    ]
    assert shed[ISSUE] > 0
    assert shed[VERIFY] > 0


async def _status(client: TestClient[Any, Any], route: Route, headers: dict[str, str]) -> Any:
    response = await client.request(route.method, _concrete(route.path), headers=headers)
    return response.status, await response.json() if response.status == 403 else None


async def test_each_admin_handler_authorizes_its_tables_role(client: TestClient[Any, Any]) -> None:
    """Every entry with a role refuses a credential carrying every other role (403 naming the
    entry's role) and lets one carrying only that role past authorization (the request, sent
    without a body or query, may then fail its checks, but not for want of a role)."""
    admin_routes = [route for route in ROUTES if route.role is not None]
    assert admin_routes
    for role in Role:
        only = await role_headers(client, role.value, name=f"only-{role.value}")
        others = await role_headers(
            client, *(r.value for r in Role if r != role), name=f"not-{role.value}"
        )
        for route in (r for r in admin_routes if r.role == role):
            status, refusal = await _status(client, route, others)
            assert status == 403, route.path
            assert role.value in refusal["detail"], (route.path, refusal)
            status, _ = await _status(client, route, only)
            assert status not in {401, 403}, (route.path, status)
