"""Admin API for places and their policies: operators describe places, health officers set a
place type's or a place's policy (each behind its role in the route table, audited)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, read_json
from passcode.api.responses import json_response
from passcode.api.schemas import PLACE_POLICY_REQUEST, PLACE_REQUEST, compile_schema
from passcode.domain import fields
from passcode.domain.policy import PlacePolicy, policy_json
from passcode.keys import PLACES, SETTINGS
from passcode.service.places import MAX_POLICY_BYTES, set_place, set_policy

_validate_place = compile_schema(PLACE_REQUEST)
_validate_policy = compile_schema(PLACE_POLICY_REQUEST)


def _place_body(request: web.Request, place: str) -> dict[str, Any]:
    directory = request.app[PLACES]
    info = directory.info(place)
    resolved = directory.resolve(place)
    return {
        "place": place,
        "name": None if info is None else info[0],
        "type": None if info is None else info[1],
        "policy": {
            "source": resolved.source,
            "version": resolved.policy.version,
            **policy_json(resolved.policy),
        },
    }


async def put_place(request: web.Request) -> web.Response:
    """Create or describe a place (role operator): 201 when new, else 200."""
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_place)
    created = await set_place(
        request.app[PLACES],
        request.match_info["place"],
        type_=data["type"],
        name=data["name"],
        actor=actor_of(request).name,
    )
    place = request.match_info["place"].strip()
    return json_response(_place_body(request, place), status=201 if created else 200)


async def get_place(request: web.Request) -> web.Response:
    """A place's name, type and the policy its scans are judged by, as this replica holds it."""
    place = check(fields.place, request.match_info["place"], "place")
    return json_response(_place_body(request, place))


async def _put_policy(request: web.Request, scope: str, target: str) -> web.Response:
    data = await read_json(request, limit=MAX_POLICY_BYTES, validate=_validate_policy)
    stored: PlacePolicy = await set_policy(
        request.app[PLACES], scope=scope, target=target, policy=data, actor=actor_of(request).name
    )
    body = {
        "scope": scope,
        "target": target.strip(),
        "version": stored.version,
        "policy": policy_json(stored),
    }
    return json_response(body)


async def put_type_policy(request: web.Request) -> web.Response:
    """A new version of a place type's policy (role health officer)."""
    return await _put_policy(request, "type", request.match_info["type"])


async def put_place_policy(request: web.Request) -> web.Response:
    """A new version of one place's own policy (role health officer)."""
    return await _put_policy(request, "place", request.match_info["place"])
