"""Venue check-in API (场所码, DESIGN §4): a citizen checks in by a poster's code; operators
issue a place's poster (revoking the old one) and print it as PNG or SVG. Thin: parse, call
the use case, answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import read_json
from passcode.api.citizen import NO_STORE, _limited_citizen
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import CHECKIN_REQUEST, compile_schema
from passcode.domain import poster
from passcode.keys import CHECKINS, POSTERS, SETTINGS
from passcode.store.venues import Venue, poster_font

_validate_checkin = compile_schema(CHECKIN_REQUEST)


async def post_checkin(request: web.Request) -> web.Response:
    """Check in at the place whose venue code the phone read; the staff's card as JSON."""
    citizen = await _limited_citizen(request)
    data = await read_json(
        request, limit=request.app[SETTINGS].max_body, validate=_validate_checkin
    )
    raw_id = data.get("checkin_id")
    outcome = await request.app[CHECKINS].check_in(
        citizen, data["place_code"], uuid.UUID(raw_id) if raw_id is not None else None
    )
    body = {
        "color": outcome.color.value,
        "reason": outcome.reason.value,
        "holder": {"name": outcome.holder},
        "place": {"id": outcome.place, "name": outcome.place_name},
        "server_time": rfc3339(outcome.server_time),
        "checkin_id": outcome.checkin_id,
    }
    headers = dict(NO_STORE)
    if not outcome.recorded:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, headers=headers)


def _poster_body(venue: Venue) -> dict[str, Any]:
    base = f"/v1/admin/places/{quote(venue.place, safe='')}/poster"
    return {
        "place": venue.place,
        "name": venue.name,
        "issue": venue.issue,
        "code": venue.code,
        "issued_at": rfc3339(venue.issued_at),
        "expires_at": rfc3339(venue.expires_at),
        "png_url": f"{base}.png",
        "svg_url": f"{base}.svg",
    }


async def post_poster(request: web.Request) -> web.Response:
    """Issue a new poster for the place (role operator): the old one is revoked."""
    venue = await request.app[POSTERS].issue(
        request.match_info["place"], actor=actor_of(request).name
    )
    return json_response(_poster_body(venue), status=201, headers=NO_STORE)


def _text(venue: Venue) -> poster.PosterText:
    return poster.PosterText(venue.name, venue.issue, venue.expires_at)


async def get_poster_png(request: web.Request) -> web.Response:
    """The place's current poster as an A4 PNG (150 dpi)."""
    venue = await request.app[POSTERS].current(request.match_info["place"])
    png = await asyncio.get_running_loop().run_in_executor(
        None, lambda: poster.render_png(venue.code, _text(venue), font=poster_font())
    )
    return web.Response(body=png, content_type="image/png", headers=NO_STORE)


async def get_poster_svg(request: web.Request) -> web.Response:
    """The place's current poster as an A4 SVG."""
    venue = await request.app[POSTERS].current(request.match_info["place"])
    svg = await asyncio.get_running_loop().run_in_executor(
        None, poster.render_svg, venue.code, _text(venue)
    )
    return web.Response(text=svg, content_type="image/svg+xml", headers=NO_STORE)
