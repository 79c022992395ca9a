"""Venue check-in (场所码) on the citizen page in headless Chromium against the live service: the
place's printed poster (``GET …/poster.png``) read by the phone's camera (Chromium's fake device
playing a close-up of the poster's QR) checks the citizen in, and the staff's full-screen card
shows the colour, the masked name and the place; the check-in is one scan of the place in the
scan log. A venue link (``/app/#checkin=<code>``) of a replaced poster is refused in plain words
and records nothing. No WCAG 2.1 A/AA violation on the check-in screens in either language.

The page's hooks (passcode/web/app/checkin.js, top of file): ``#nav-checkin``,
``#checkin-card[data-color][data-checkin-id]``, ``#checkin-error[data-problem]``.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.citizen import CLOCK, FLOW_DEADLINE, declare_healthy, sign_in
from tests.browser.conftest import Accessibility, CameraBrowser, PageFactory, Screenshot
from tests.browser.service import ServiceThread, close_up

pytestmark = pytest.mark.browser

CATALOGUES = Path(__file__).resolve().parents[2] / "passcode" / "web" / "i18n"
CAMERA_DEADLINE = 20_000  # ms: camera start, a few decoded frames and one check-in
PLACE_NAME = "街角小店 Corner Shop"


def _signed_in(page: Page) -> None:
    sign_in(page, f"web-{uuid.uuid4().hex[:10]}")
    declare_healthy(page)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "green")


def _card(page: Page, color: str, timeout: float | None = None) -> str:
    card = page.locator("#checkin-card")
    expect(card).to_be_visible(timeout=timeout)
    expect(card).to_have_attribute("data-color", color)
    expect(page.locator("#checkin-place")).to_have_text(f"Place: {PLACE_NAME}")
    expect(page.locator("#checkin-holder")).to_have_text("Name: 张*三")
    checkin_id = card.get_attribute("data-checkin-id")
    assert checkin_id
    return checkin_id


def test_a_poster_read_by_the_camera_checks_in_and_shows_the_staff_card(
    open_page: PageFactory,
    camera_browser: CameraBrowser,
    service: ServiceThread,
    screenshot: Screenshot,
) -> None:
    """The phone's camera reads the place's printed poster: the citizen is checked in and the
    full-screen card shows green in words, the masked name and the place; the scan log holds
    that check-in once, as an admitted scan at the place."""
    place, _, poster = service.poster(PLACE_NAME)
    page = open_page("/app/", init=CLOCK, on=camera_browser(close_up(poster)))
    _signed_in(page)
    page.click("#nav-checkin")
    expect(page.locator("body")).to_have_attribute("data-screen", "screen-checkin")
    checkin_id = _card(page, "green", timeout=CAMERA_DEADLINE)
    expect(page.locator("#checkin-color-text")).to_have_text("Green code")
    screenshot(page, "app-checkin-card")
    service.drain()
    rows = service.scan_rows(checkin_id)
    assert len(rows) == 1, rows
    assert (rows[0]["decision"], rows[0]["reason"], rows[0]["place"]) == ("admit", "ok", place)


def test_a_venue_link_of_a_replaced_poster_is_refused_and_records_nothing(
    open_page: PageFactory, service: ServiceThread
) -> None:
    """A venue link whose poster the operator has since replaced says the poster was replaced
    and shows no card; the current poster's link checks in."""
    place, old, _ = service.poster(PLACE_NAME)
    path = f"/v1/admin/places/{urllib.parse.quote(place, safe='')}/poster"
    new = service.json("POST", path, token=service.settings.admin_key, expect=201)
    page = open_page("/app/", init=CLOCK)
    _signed_in(page)
    page.goto(f"/app/#checkin={urllib.parse.quote(old['code'], safe='')}")
    error = page.locator("#checkin-error")
    expect(error).to_have_attribute("data-problem", "venue-code-revoked", timeout=FLOW_DEADLINE)
    expect(error).to_contain_text("replaced by a newer one")
    expect(page.locator("#checkin-card")).to_be_hidden()
    assert "#checkin" not in page.url
    page.goto(f"/app/#checkin={urllib.parse.quote(new['code'], safe='')}")
    _card(page, "green", timeout=FLOW_DEADLINE)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_check_in_screens_have_no_wcag_violation(
    open_page: PageFactory,
    service: ServiceThread,
    check_accessibility: Accessibility,
    screenshot: Screenshot,
    language: str,
) -> None:
    """axe-core finds no WCAG 2.1 A/AA violation on the check-in screen (the camera scanning), its
    refusal of a text that is not a venue code, and the staff's card, in English and Chinese."""
    _, issued, _ = service.poster(PLACE_NAME)
    page = open_page("/app/", init=CLOCK, locale="zh-CN" if language == "zh-CN" else "en-US")
    expect(page.locator("body")).to_have_attribute("data-screen", "screen-signin")
    if page.locator("html").get_attribute("lang") != language:
        page.click("#lang-switch")
    expect(page.locator("html")).to_have_attribute("lang", language)
    tag = "" if language == "en" else f"-{language}"
    sign_in(page, f"web-{uuid.uuid4().hex[:10]}")
    declare_healthy(page)
    page.click("#nav-checkin")
    expect(page.locator("body")).to_have_attribute("data-screen", "screen-checkin")
    scanning = json.loads((CATALOGUES / f"{language}.json").read_text(encoding="utf-8"))
    expect(page.locator("#checkin-camera-note")).to_have_text(scanning["checkin.camera.scanning"])
    check_accessibility(page, f"check-in {language}")
    screenshot(page, f"app-checkin{tag}")
    page.fill("#checkin-code", "not a venue code")
    page.click("#checkin-submit")
    expect(page.locator("#checkin-code-error")).to_be_visible()
    check_accessibility(page, f"check-in refusal {language}")
    page.fill("#checkin-code", issued["code"])
    page.click("#checkin-submit")
    expect(page.locator("#checkin-card")).to_have_attribute("data-color", "green")
    check_accessibility(page, f"check-in card {language}")
    if language != "en":
        screenshot(page, f"app-checkin-card{tag}")
