"""The problems wrapper bound to each route (no middleware): every failure is a problem body,
shedding counts only the routes it classifies, and the catch-all route answers what no route
takes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from passcode.api.problems import PROBLEM_JSON, UNMATCHED, add_route, add_unmatched
from passcode.errors import NotFound
from passcode.keys import SHEDDER
from passcode.service.shedding import VERIFY, LoadShedder


def _app() -> web.Application:
    """A small app wired like create_app: routes through add_route, the catch-all last."""
    app = web.Application()
    app[SHEDDER] = LoadShedder(
        issue_inflight=10, verify_inflight=10, issue_lag=0.0, lag_interval=1.0, retry_after=1
    )

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail 4111-1111")

    async def missing(request: web.Request) -> web.Response:
        raise NotFound("no such thing here")

    async def seen(request: web.Request) -> web.Response:
        """Answers how many requests the shedder counts while this one runs."""
        return web.json_response({"in_flight": request.app[SHEDDER].in_flight})

    add_route(app, "GET", "/boom", boom)
    add_route(app, "GET", "/missing/{id}", missing)
    add_route(app, "GET", "/plain", seen)
    add_route(app, "POST", "/v1/verify", seen, shed=VERIFY)  # shed and counted
    add_unmatched(app)
    return app


@pytest.fixture
async def small(aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(_app())  # type: ignore[no-any-return]


async def test_an_unexpected_exception_is_a_500_problem_without_its_detail(
    small: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A handler bug answers a 500 problem body that says nothing of the exception; the
    exception itself goes to the log, where an operator can find it."""
    with caplog.at_level(logging.ERROR, logger="passcode.api.problems"):
        response = await small.get("/boom")
    assert response.status == 500
    assert response.content_type == PROBLEM_JSON
    body = await response.json()
    assert body["status"] == 500
    assert "secret" not in await response.text()
    assert any(record.exc_info for record in caplog.records)


async def test_a_passcode_error_keeps_its_status_and_detail(small: TestClient[Any, Any]) -> None:
    """An error of the hierarchy raised by a handler is its own problem, not a generic one."""
    response = await small.get("/missing/7")
    assert response.status == 404
    assert response.content_type == PROBLEM_JSON
    assert (await response.json())["detail"] == "no such thing here"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nowhere", 404, None),
        ("PATCH", "/nowhere/at/all", 404, None),
        ("POST", "/plain", 405, "GET,HEAD"),
        ("DELETE", "/missing/7", 405, "GET,HEAD"),
        ("GET", "/v1/verify", 405, "POST"),
    ],
)
async def test_the_catch_all_answers_404_and_405_as_problems(
    small: TestClient[Any, Any], method: str, path: str, status: int, allow: str | None
) -> None:
    """Paths no route serves are 404 problems; a served path with another method is a 405
    problem whose Allow names the methods of the routes matching it, as aiohttp's own would."""
    response = await small.request(method, path)
    assert response.status == status
    assert response.content_type == PROBLEM_JSON
    assert response.headers.get("Allow") == allow


async def test_head_is_answered_on_get_routes(small: TestClient[Any, Any]) -> None:
    """GET routes added through add_route answer HEAD too, like aiohttp's add_get."""
    response = await small.head("/plain")
    assert response.status == 200


async def test_only_classified_routes_are_counted_in_flight(small: TestClient[Any, Any]) -> None:
    """The shedder counts a verify while it runs and lets go after; other routes are never
    counted (nor shed)."""
    assert (await (await small.post("/v1/verify")).json())["in_flight"] == 1
    assert (await (await small.get("/plain")).json())["in_flight"] == 0
    assert small.app[SHEDDER].in_flight == 0


async def test_the_catch_all_route_is_named_so_it_is_not_an_operation(
    small: TestClient[Any, Any],
) -> None:
    """The OpenAPI check and the access log recognise the catch-all by its name."""
    names = [resource.name for resource in small.app.router.resources()]
    assert names[-1] == UNMATCHED
    assert names.count(UNMATCHED) == 1
