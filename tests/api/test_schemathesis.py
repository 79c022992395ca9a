"""schemathesis against ``/openapi.json``: generated requests to a real ``passcode serve``.

Bounded for CI: ``MAX_EXAMPLES`` generated cases per operation (positive and negative ones),
every operation with the credential its ``security`` names (a dev ID token, a terminal key, the
admin key). The schema is the one the server serves (fetched from the live process), so the test
exercises exactly the published contract.
"""

from __future__ import annotations

import copy
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    FailureGroup,
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from passcode.api.openapi import openapi_document
from tests.helpers import ADMIN_KEY, dev_token
from tests.live_server import LiveServer, live_settings

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def live(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server for the module; rate limits high enough that generated traffic is not 429."""
    data_dir = tmp_path_factory.mktemp("schemathesis")
    settings = live_settings(
        database_url,
        redis_url,
        redis_prefix,
        data_dir,
        tag="st",
        admin_key=ADMIN_KEY,
        drain_interval=0.05,
        pg_pool_max=4,
    )
    server = LiveServer(
        settings,
        data_dir / "server.log",
        extra_env={
            "PASSCODE_TERMINAL_RATE": "100000",
            "PASSCODE_TERMINAL_BURST": "100000",
            "PASSCODE_CITIZEN_RATE": "100000",
            "PASSCODE_CITIZEN_BURST": "100000",
        },
    )
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, Path(server.log_path).read_text()


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    request = urllib.request.Request(  # noqa: S310  # loopback test server
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.fixture(scope="module")
def credentials(live: LiveServer) -> dict[str, dict[str, str]]:
    """Authorization headers per security scheme name in the document."""
    token = dev_token(live.settings, f"st-{uuid.uuid4().hex}")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    terminal = _post(f"{live.url}/v1/admin/terminals", {"place": "schemathesis gate"}, admin)
    return {
        "idToken": {"Authorization": f"Bearer {token}"},
        "terminalKey": {"Authorization": f"Bearer {terminal['key']}"},
        "adminKey": admin,
    }


@pytest.mark.slow
@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_conform_to_the_document(
    case: schemathesis.Case, live: LiveServer, credentials: dict[str, dict[str, str]]
) -> None:
    """For every operation, generated requests (valid and invalid bodies, paths, query strings)
    sent with the operation's own credential never get a 5xx, and every response has a status
    the document lists for that operation, the documented content type, and a body that matches
    the documented schema (checks: not_a_server_error, status_code_conformance,
    content_type_conformance, response_schema_conformance)."""
    security = case.operation.definition.raw.get("security") or [{}]
    headers: dict[str, str] = {}
    for name in security[0]:
        headers |= credentials[name]
    # The operation's real credential replaces any Authorization schemathesis generated itself
    # (bad credentials are covered one by one in test_bad_input.py).
    case.headers = {**(case.headers or {}), **headers}
    case.call_and_validate(base_url=live.url, checks=CHECKS)


def test_the_checks_catch_an_undocumented_status(live: LiveServer) -> None:
    """Control for the run above: with 401 removed from ``GET /v1/pass``'s documented responses,
    the same checks fail a request without a token (so a passing run means conformance, not
    checks that cannot fail)."""
    document = copy.deepcopy(openapi_document())
    del document["paths"]["/v1/pass"]["get"]["responses"]["401"]
    case = schemathesis.openapi.from_dict(document)["/v1/pass"]["GET"].Case()
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.call_and_validate(base_url=live.url, checks=CHECKS)
