"""Hostile credentials over HTTP: 401 problem+json, never a 500, nothing logged at ERROR.

The app trusts every kind of identity-provider key it supports at once: the Ed25519 dev key
and, from ``PASSCODE_IDP_JWKS_FILE``, EC P-256/384/521 and RSA keys (one configured ``PS256``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from tests.helpers import TokenFactory
from tests.identity_tokens import (
    AUDIENCE,
    ISSUER,
    good_token,
    hostile_claims,
    hostile_tokens,
    jwks_text,
    make_providers,
)

PROVIDERS = make_providers()


@pytest.fixture
async def jwks_client(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> TestClient[Any, Any]:
    jwks = tmp_path / "idp-jwks.json"
    jwks.write_text(jwks_text(PROVIDERS), encoding="utf-8")
    configured = dataclasses.replace(
        settings, idp_jwks_file=jwks, idp_issuer=ISSUER, idp_audience=AUDIENCE
    )
    return await aiohttp_client(create_app(configured))  # type: ignore[no-any-return]


async def test_hostile_id_tokens_get_401_for_every_kind_of_provider_key(
    jwks_client: TestClient[Any, Any], make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``GET /v1/pass`` with each hostile token of ``tests/identity_tokens.py`` (every algorithm
    family, HS* keyed with the public key, ``none``, garbage headers, hostile claims) naming each
    provider key (the dev Ed25519 key, EC and RSA keys from the JWKS file) → 401 problem+json
    with ``WWW-Authenticate: Bearer``, and no log record at ERROR. On main as filed an ES256
    header naming the dev key was a 500 with a traceback. Control: each provider's own token is
    accepted (404: no declaration yet), and so is a dev token."""
    caplog.set_level(logging.INFO)
    wrong: dict[str, object] = {}
    refused: dict[str, int] = {}
    for kid, provider in PROVIDERS.items():
        accepted = await jwks_client.get(
            "/v1/pass", headers={"Authorization": f"Bearer {good_token(provider)}"}
        )
        if accepted.status != 404:
            refused[kid] = accepted.status
        cases = hostile_tokens(provider, PROVIDERS) | hostile_claims(provider)
        for name, token in cases.items():
            if "\udcff" in token or len(token) > 8000:
                # Not sendable by aiohttp's client, or over aiohttp's header limit (a parser
                # error): the unit tests and tests/api/test_parser_errors.py cover those.
                continue
            response = await jwks_client.get(
                "/v1/pass", headers={"Authorization": f"Bearer {token}"}
            )
            body = await response.read()
            if (
                response.status != 401
                or response.content_type != "application/problem+json"
                or not response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            ):
                wrong[f"{kid}: {name}"] = (response.status, body[:120])
    dev_token = make_token()
    response = await jwks_client.get("/v1/pass", headers={"Authorization": f"Bearer {dev_token}"})
    assert response.status == 404, await response.text()
    assert not wrong, wrong
    assert not refused, refused
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage()[:200] for r in errors]
