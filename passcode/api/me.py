"""A citizen's own data (PIPL Art. 45, 47): ``GET /v1/me/data`` (their copy),
``DELETE /v1/me`` (its deletion, with a recent sign-in) and ``POST /v1/admin/erasures`` (the
same deletion asked in person at an authority's desk)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of, citizen_of
from passcode.api.body import check, read_json
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import ERASURE_REQUEST, compile_schema
from passcode.domain import fields
from passcode.domain.identity import Citizen
from passcode.keys import CITIZEN_LIMITS, MY_DATA, SEALER, SETTINGS
from passcode.service.mydata import Erasure

NO_STORE = {"Cache-Control": "no-store"}
_validate_erasure = compile_schema(ERASURE_REQUEST)


async def _limited_citizen(request: web.Request) -> Citizen:
    """The caller, within the citizen rate limit (keyed by the user hash, as every citizen
    route is)."""
    citizen = await citizen_of(request)
    limits = request.app[CITIZEN_LIMITS]
    user_hash = request.app[SEALER].user_hash(citizen.issuer, citizen.user_id)
    await limits.check(limits.key(user_hash, user_hash.hex()))
    return citizen


def _erasure_body(erasure: Erasure) -> dict[str, Any]:
    return {
        "erased": not erasure.kept,
        "kept": [
            {
                "kind": k.kind,
                "color": k.color,
                "reason": k.reason,
                "until": None if k.until is None else rfc3339(k.until),
            }
            for k in erasure.kept
        ],
    }


async def get_my_data(request: web.Request) -> web.Response:
    citizen = await _limited_citizen(request)
    return json_response(await request.app[MY_DATA].copy(citizen), headers=NO_STORE)


async def delete_me(request: web.Request) -> web.Response:
    citizen = await _limited_citizen(request)
    erasure = await request.app[MY_DATA].erase_self(citizen)
    return json_response(_erasure_body(erasure), headers=NO_STORE)


async def post_erasure(request: web.Request) -> web.Response:
    actor = actor_of(request)
    data = await read_json(
        request, limit=request.app[SETTINGS].max_body, validate=_validate_erasure
    )
    user_id = check(fields.user_id, data["user_id"], "user_id")
    erasure = await request.app[MY_DATA].erase_in_person(user_id, actor=actor.name)
    return json_response(_erasure_body(erasure), headers=NO_STORE)
