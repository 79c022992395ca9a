"""Citizen API on real servers: durable, idempotent declarations; the pass as JSON, PNG and SVG;
the published keys, checked with a COSE library the project did not write; key rotation."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from io import BytesIO
from typing import Any

import pytest
import zxingcpp
from aiohttp.test_utils import TestClient
from PIL import Image
from pycose import headers
from pycose.algorithms import EdDSA
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Color
from passcode.domain.passfmt import PassClaims, verify_pass
from passcode.domain.privacy import Sealer
from passcode.domain.qr import MODULE_COLORS
from passcode.keys import KEYRING, POOL
from passcode.store.keyring import add_key, rotate
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory, declare, pass_view

PROBLEM_JSON = "application/problem+json"
YELLOW = {**HEALTHY, "temperature_c": 38.5}
RED = {**HEALTHY, "close_contact": True}
BODY_FOR = {Color.GREEN: HEALTHY, Color.YELLOW: YELLOW, Color.RED: RED}

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def base45_decode(text: str) -> bytes:
    """RFC 9285 Base45, written here from the RFC so the interop check shares no project code."""
    values = [_B45.index(ch) for ch in text]
    out = bytearray()
    for i in range(0, len(values) - 2, 3):
        c, d, e = values[i : i + 3]
        out += (c + 45 * d + 2025 * e).to_bytes(2, "big")
    if len(values) % 3 == 2:
        out.append(values[-2] + 45 * values[-1])
    return bytes(out)


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_message(code: str) -> Sign1Message:
    """The pass decoded by pycose (a third-party COSE implementation)."""
    assert code.startswith("PC1:")
    return Sign1Message.decode(base45_decode(code[4:]))


def pass_kid(code: str) -> bytes:
    kid = cose_message(code).phdr[headers.KID]
    assert isinstance(kid, bytes)
    return kid


def verify_with_service(client: TestClient[Any, Any], code: str) -> PassClaims:
    """Verify a pass with the keys the running service verifies with."""
    now = int(time.time())
    keys = client.app[KEYRING].verification_keys(now)
    return verify_pass(code, keys, now=now, leeway=30, issuer="passcode")


async def jwks(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    response = await client.get("/v1/keys")
    assert response.status == 200, await response.text()
    keys: list[dict[str, Any]] = (await response.json())["keys"]
    return keys


async def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM_JSON
    body: dict[str, Any] = await response.json()
    assert body["type"].endswith("/" + slug)
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


# --- declarations ------------------------------------------------------------------------------


async def test_declaration_is_stored_before_it_is_acknowledged(
    client: TestClient[Any, Any], make_token: TokenFactory, settings: Settings
) -> None:
    """After the 201, a fresh query on another connection finds the committed declaration, tied to
    the caller's keyed-hash subject, with only the masked name and not the user id in clear."""
    user_id = f"durable-{uuid.uuid4().hex}"
    body = {
        "temperature_c": 37.04,
        "symptoms": ["cough"],
        "regions_visited": ["Region-A"],
        "close_contact": False,
    }
    declared = await declare(client, make_token(user_id, name="张小三"), body)
    assert declared["status"]["color"] == "yellow"

    async with client.app[POOL].acquire() as conn:
        row = await conn.fetchrow(
            "SELECT d.temperature_c, d.symptoms, d.regions, d.close_contact, d.declared_at,"
            " s.user_hash, s.user_id_enc, s.name_masked"
            " FROM declarations d JOIN subjects s ON s.id = d.subject_id WHERE d.id = $1",
            declared["declaration_id"],
        )
    assert row is not None
    assert float(row["temperature_c"]) == 37.0
    assert row["symptoms"] == ["cough"]
    assert row["regions"] == ["Region-A"]
    assert row["close_contact"] is False
    stored_at = row["declared_at"]
    assert stored_at.replace(microsecond=stored_at.microsecond // 1000 * 1000) == (
        datetime.fromisoformat(declared["declared_at"])  # the wire form has milliseconds
    )
    sealer = Sealer(settings.secret or "")
    assert row["user_hash"] == sealer.user_hash(settings.idp_issuer, user_id)
    assert user_id.encode() not in row["user_id_enc"]
    assert sealer.open(row["user_id_enc"]) == user_id
    assert row["name_masked"] == "张*三"


async def test_idempotency_key_replays_the_same_declaration(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """The same Idempotency-Key and body twice: 201 both times, the same declaration_id, the
    second marked Idempotent-Replayed, and exactly one row stored."""
    token = make_token()
    key = f"retry-{uuid.uuid4()}"
    first = await client.post(
        "/v1/declarations", json=HEALTHY, headers={**auth(token), "Idempotency-Key": key}
    )
    second = await client.post(
        "/v1/declarations", json=HEALTHY, headers={**auth(token), "Idempotency-Key": key}
    )
    assert first.status == 201, await first.text()
    assert second.status == 201, await second.text()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    one, two = await first.json(), await second.json()
    assert one["declaration_id"] == two["declaration_id"]
    assert one["declared_at"] == two["declared_at"]
    assert two["status"]["color"] == "green"

    count = await client.app[POOL].fetchval(
        "SELECT count(*) FROM declarations WHERE idempotency_key = $1", key
    )
    assert count == 1


async def test_idempotency_key_reused_with_another_body_is_a_conflict(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """The same key with a different body is refused with a 409 problem; nothing more is stored
    and the first declaration still stands."""
    token = make_token()
    key = f"retry-{uuid.uuid4()}"
    first = await client.post(
        "/v1/declarations", json=HEALTHY, headers={**auth(token), "Idempotency-Key": key}
    )
    assert first.status == 201, await first.text()
    other = await client.post(
        "/v1/declarations", json=RED, headers={**auth(token), "Idempotency-Key": key}
    )
    await problem(other, 409, "idempotency-key-reused")

    count = await client.app[POOL].fetchval(
        "SELECT count(*) FROM declarations WHERE idempotency_key = $1", key
    )
    assert count == 1
    assert (await pass_view(client, token))["color"] == "green"


async def test_idempotency_keys_belong_to_each_citizen(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """Two citizens using the same key value get two declarations: keys never cross subjects."""
    key = f"shared-{uuid.uuid4()}"
    a = await client.post(
        "/v1/declarations", json=HEALTHY, headers={**auth(make_token()), "Idempotency-Key": key}
    )
    b = await client.post(
        "/v1/declarations", json=RED, headers={**auth(make_token()), "Idempotency-Key": key}
    )
    assert a.status == b.status == 201
    assert "Idempotent-Replayed" not in b.headers
    assert (await a.json())["declaration_id"] != (await b.json())["declaration_id"]
    assert (await b.json())["status"]["color"] == "red"


# --- the pass ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/pass", "/v1/pass.png", "/v1/pass.svg"])
async def test_no_pass_before_a_declaration(
    client: TestClient[Any, Any], make_token: TokenFactory, path: str
) -> None:
    """Without a declaration there is no pass: a 404 problem of type no-declaration."""
    response = await client.get(path, headers=auth(make_token()))
    await problem(response, 404, "no-declaration")


@pytest.mark.parametrize(("name", "masked"), [("张小三", "张*三"), ("John Smith", "J*** S****")])
async def test_pass_json_carries_code_colour_times_and_masked_holder(
    client: TestClient[Any, Any],
    make_token: TokenFactory,
    settings: Settings,
    name: str,
    masked: str,
) -> None:
    """The pass JSON has the signed code, its colour, issue/expiry times that match the signed
    claims, seconds until refresh, and only the masked name."""
    token = make_token(name=name)
    await declare(client, token)
    view = await pass_view(client, token)
    assert set(view) >= {"code", "color", "expires_at", "refresh_in", "holder"}
    assert view["holder"] == {"name": masked}
    assert name not in str(view)
    assert view["color"] == "green"

    claims = verify_with_service(client, view["code"])
    assert claims.color is Color.GREEN
    assert datetime.fromisoformat(view["expires_at"]).timestamp() == claims.expires_at
    assert datetime.fromisoformat(view["issued_at"]).timestamp() == claims.issued_at
    assert claims.expires_at - claims.issued_at == settings.pass_ttl
    assert view["refresh_in"] == settings.pass_ttl - settings.refresh_margin
    assert len(claims.token_id) >= 8

    again = await pass_view(client, token)
    # Within the first half of its lifetime the same signed pass is handed out again.
    assert again["code"] == view["code"]
    assert again["expires_at"] == view["expires_at"]
    assert verify_with_service(client, again["code"]).subject == claims.subject


async def test_a_citizen_only_sees_their_own_records(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """Two tokens are two subjects: each pass carries its holder's own subject and colour, and a
    citizen who has not declared gets no pass even when another has."""
    alice, bob, carol = make_token(name="张小三"), make_token(name="John Smith"), make_token()
    await declare(client, alice, HEALTHY)
    await declare(client, bob, RED)

    alice_view, bob_view = await pass_view(client, alice), await pass_view(client, bob)
    alice_claims = verify_with_service(client, alice_view["code"])
    bob_claims = verify_with_service(client, bob_view["code"])
    assert alice_claims.subject != bob_claims.subject
    assert (alice_claims.color, bob_claims.color) == (Color.GREEN, Color.RED)
    assert alice_view["holder"] == {"name": "张*三"}
    assert bob_view["holder"] == {"name": "J*** S****"}

    # Alice's pass stays hers after she declares again; Bob's red status does not touch it.
    await declare(client, alice, YELLOW)
    again = verify_with_service(client, (await pass_view(client, alice))["code"])
    assert again.subject == alice_claims.subject
    assert again.color is Color.YELLOW
    assert verify_with_service(client, (await pass_view(client, bob))["code"]).color is Color.RED

    await problem(await client.get("/v1/pass", headers=auth(carol)), 404, "no-declaration")


async def test_citizen_endpoints_need_a_valid_id_token(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """No token, a garbage token or an expired token: 401, never someone's pass."""
    await problem(await client.get("/v1/pass"), 401, "unauthorized")
    await problem(await client.get("/v1/pass", headers=auth("not.a.jwt")), 401, "unauthorized")
    expired = make_token(ttl=-3600)
    await problem(await client.get("/v1/pass", headers=auth(expired)), 401, "unauthorized")
    response = await client.post("/v1/declarations", json=HEALTHY, headers=ADMIN)
    await problem(response, 401, "unauthorized")


@pytest.mark.parametrize("color", list(Color))
async def test_pass_png_decodes_to_a_pass_of_the_status_colour(
    client: TestClient[Any, Any], make_token: TokenFactory, color: Color
) -> None:
    """The PNG holds a QR code that a real decoder reads back to a pass that verifies with the
    service key and carries the status colour; its dark modules are in that colour; no-store."""
    token = make_token()
    declared = await declare(client, token, BODY_FOR[color])
    assert declared["status"]["color"] == color.value

    response = await client.get("/v1/pass.png", headers=auth(token))
    assert response.status == 200, await response.text()
    assert response.content_type == "image/png"
    assert response.headers["Cache-Control"] == "no-store"
    image = Image.open(BytesIO(await response.read()))
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    claims = verify_with_service(client, found[0].text)
    assert claims.color is color
    colours = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=16) or []}
    assert colours == {(255, 255, 255), MODULE_COLORS[color]}


@pytest.mark.parametrize("color", list(Color))
async def test_pass_svg_is_an_svg_in_the_status_colour(
    client: TestClient[Any, Any], make_token: TokenFactory, color: Color
) -> None:
    """The SVG is an SVG document whose modules are filled with the status colour; no-store."""
    token = make_token()
    await declare(client, token, BODY_FOR[color])
    response = await client.get("/v1/pass.svg", headers=auth(token))
    assert response.status == 200, await response.text()
    assert response.content_type == "image/svg+xml"
    assert response.headers["Cache-Control"] == "no-store"
    root = ET.fromstring(await response.text())  # noqa: S314  # our own service's output
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    fills = {el.get("fill") for el in root.iter() if el.get("fill")}
    expected = "#{:02x}{:02x}{:02x}".format(*MODULE_COLORS[color])
    assert fills == {"#ffffff", expected}
    others = {"#{:02x}{:02x}{:02x}".format(*MODULE_COLORS[c]) for c in Color if c is not color}
    assert not fills & others


# --- published keys ----------------------------------------------------------------------------


async def test_a_third_party_cose_library_verifies_the_pass_with_the_published_key(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """pycose, with only the JWK from /v1/keys, verifies a pass: alg EdDSA, kid matching the JWK
    (base64url of the first 8 bytes of SHA-256 of x), and a signature that checks; a pass whose
    payload was altered does not."""
    token = make_token()
    await declare(client, token)
    code = (await pass_view(client, token))["code"]

    published = await jwks(client)
    assert published
    for jwk in published:
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
        assert b64url_decode(jwk["kid"]) == hashlib.sha256(b64url_decode(jwk["x"])).digest()[:8]
        assert "d" not in jwk  # never the private key
    by_kid = {b64url_decode(jwk["kid"]): jwk for jwk in published}

    message = cose_message(code)
    assert message.phdr[headers.Algorithm] is EdDSA
    kid = message.phdr[headers.KID]
    assert kid in by_kid
    message.key = OKPKey(crv="Ed25519", x=b64url_decode(by_kid[kid]["x"]))
    assert message.verify_signature() is True

    tampered = cose_message(code)
    assert isinstance(tampered.payload, bytes)
    tampered.payload = tampered.payload[:-1] + bytes([tampered.payload[-1] ^ 1])
    tampered.key = OKPKey(crv="Ed25519", x=b64url_decode(by_kid[kid]["x"]))
    assert tampered.verify_signature() is False


async def test_keys_have_an_etag_and_answer_304_when_unchanged(
    client: TestClient[Any, Any],
) -> None:
    """/v1/keys is cacheable: it has an ETag and Cache-Control, and If-None-Match with that ETag
    gets a 304 with no body; a different ETag gets the full set."""
    first = await client.get("/v1/keys")
    assert first.status == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert "public" in first.headers["Cache-Control"]

    cached = await client.get("/v1/keys", headers={"If-None-Match": etag})
    assert cached.status == 304
    assert cached.headers["ETag"] == etag
    assert await cached.read() == b""

    other = await client.get("/v1/keys", headers={"If-None-Match": '"something-else"'})
    assert other.status == 200
    assert (await other.json()) == (await first.json())


async def test_rotation_publishes_the_next_key_before_it_signs(
    client: TestClient[Any, Any], make_token: TokenFactory, settings: Settings
) -> None:
    """A rotated-in key is listed in /v1/keys (with a new ETag) while passes are still signed by
    the old key, and both the old pass and a new one are admitted at a terminal."""
    token = make_token()
    await declare(client, token)
    holder = client.app[KEYRING]
    old_kid = holder.signer(int(time.time())).kid
    before = await client.get("/v1/keys")
    etag = before.headers["ETag"]
    assert [b64url_decode(k["kid"]) for k in (await before.json())["keys"]] == [old_kid]

    now = int(time.time())
    new = rotate(settings.key_dir, now=now, publish_lead=300)
    assert holder.reload_if_changed() is True

    listed = {b64url_decode(k["kid"]): k for k in await jwks(client)}
    assert set(listed) == {old_kid, new.kid}
    assert datetime.fromisoformat(listed[new.kid]["not_before"]).timestamp() == now + 300
    assert listed[old_kid]["not_after"] is None  # still the signer
    assert (await client.get("/v1/keys", headers={"If-None-Match": etag})).status == 200

    code = (await pass_view(client, token))["code"]
    assert pass_kid(code) == old_kid
    terminal = await client.post("/v1/admin/terminals", json={"place": "Gate R"}, headers=ADMIN)
    key = (await terminal.json())["key"]
    result = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert (await result.json())["decision"] == "admit"


async def test_after_activation_new_passes_use_the_new_key_and_old_ones_still_verify(
    aiohttp_client: Any, make_token: TokenFactory, settings: Settings
) -> None:
    """Once the next key's activation time has passed, new passes carry its kid; a pass signed by
    the old key still verifies at a terminal and with pycose, because /v1/keys keeps the old key
    (with a not_after) until every pass it signed has expired."""
    now = int(time.time())
    old = add_key(settings.key_dir, activates_at=now - 3600)  # the app finds it and keeps it
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    holder = client.app[KEYRING]
    assert [k.kid for k in holder.keyring.keys] == [old.kid]

    token = make_token()
    await declare(client, token)
    old_code = (await pass_view(client, token))["code"]
    assert pass_kid(old_code) == old.kid

    new = add_key(settings.key_dir, activates_at=now - 1)
    assert holder.reload_if_changed() is True
    new_code = (await pass_view(client, token))["code"]
    assert pass_kid(new_code) == new.kid

    listed = {b64url_decode(k["kid"]): k for k in await jwks(client)}
    assert set(listed) == {old.kid, new.kid}
    retire_at = datetime.fromisoformat(listed[old.kid]["not_after"]).timestamp()
    assert retire_at == new.activates_at + settings.pass_ttl + settings.clock_skew
    assert listed[new.kid]["not_after"] is None

    terminal = await client.post("/v1/admin/terminals", json={"place": "Gate K"}, headers=ADMIN)
    key = (await terminal.json())["key"]
    for code in (old_code, new_code):
        result = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
        assert result.status == 200
        assert (await result.json())["decision"] == "admit", code
        message = cose_message(code)
        jwk = listed[message.phdr[headers.KID]]
        message.key = OKPKey(crv="Ed25519", x=b64url_decode(jwk["x"]))
        assert message.verify_signature() is True


async def test_keys_published_after_a_restart_on_the_same_folder_are_the_same(
    aiohttp_client: Any, client: TestClient[Any, Any], settings: Settings
) -> None:
    """A second replica (or a restart) on the same key folder signs and publishes the same keys,
    so passes from one verify at the other."""
    first = await jwks(client)
    other: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    assert await jwks(other) == first


async def test_a_reused_pass_is_replaced_once_the_status_changes(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """The pass handed out again is never one of an older status: after a re-declaration that
    changes the colour, the next fetch is a new pass of the new colour and version."""
    token = make_token()
    assert (await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))).status == 201
    first = await pass_view(client, token)
    fever = {**HEALTHY, "temperature_c": 38.6}
    assert (await client.post("/v1/declarations", json=fever, headers=auth(token))).status == 201
    second = await pass_view(client, token)
    assert second["code"] != first["code"]
    assert second["color"] == "yellow"
