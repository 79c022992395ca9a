"""The citizen page (/app/) in headless Chromium against the live service: signing in through
dev mode's identity provider (its real login page, the authorization code flow with PKCE), the
declaration, the green code whose QR, screenshotted and decoded with zxing-cpp, is a pass the
service admits; an override to red shown within one refresh; offline, the kept pass until it
expires, then "expired — reconnect"; no WCAG 2.1 A/AA violation on any screen in either
language.

The page's hooks (passcode/web/app/, passcode/web/common/clock.js): ``body[data-screen]``,
``#pass-band[data-color]`` (green, yellow, red, expired), and ``window.__passcodeNow`` (the
page's one clock, read on every tick), which these tests define as the device's clock plus a
shift they move (``__passcodeShift``, in ms).
"""

from __future__ import annotations

import io
import uuid

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, expect

from tests.browser.citizen import (
    CLOCK,
    FLOW_DEADLINE,
    declare_healthy,
    screen,
    shift_clock,
    sign_in,
)
from tests.browser.conftest import Accessibility, PageFactory, Screenshot
from tests.browser.service import ServiceThread

pytestmark = pytest.mark.browser


def _open(open_page: PageFactory, **options: object) -> Page:
    page = open_page("/app/", init=CLOCK, **options)
    expect(page.locator("body")).not_to_have_attribute("data-screen", "screen-loading")
    return page


def _green(page: Page) -> None:
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "green")
    expect(page.locator("#pass-qr svg, #pass-qr canvas, #pass-qr img").first).to_be_visible()


def _decode_qr(page: Page) -> str:
    """The text of the QR as the screen shows it (a screenshot of the QR box, read by zxing)."""
    shot = page.locator("#pass-qr").screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
    assert len(found) == 1, f"{len(found)} codes in the screenshot"
    return str(found[0].text)


def _signed_in_green(open_page: PageFactory, user_id: str, **options: object) -> Page:
    page = _open(open_page, **options)
    sign_in(page, user_id)
    declare_healthy(page)
    _green(page)
    return page


def test_sign_in_declare_and_the_green_code_is_a_pass_the_service_admits(
    open_page: PageFactory, service: ServiceThread, terminal_key: str, screenshot: Screenshot
) -> None:
    """Signed in through the identity provider's login page, a citizen with nothing declared is
    asked to declare; the healthy declaration shows the green code in words, with the masked
    name; the QR on the screen, read from a screenshot, is a pass the service admits for that
    citizen. No token reaches the page's address."""
    page = _signed_in_green(open_page, f"web-{uuid.uuid4().hex[:10]}")
    expect(page.locator("#pass-color-text")).to_have_text("Green code")
    expect(page.locator("#pass-holder")).to_have_text("Name: 张*三")
    assert "code=" not in page.url
    assert "token" not in page.url
    screenshot(page, "app-code-green")
    answer = service.verify(terminal_key, _decode_qr(page))
    assert (answer["decision"], answer["reason"]) == ("admit", "ok"), answer
    assert answer["holder"]["name"] == "张*三"


def test_an_override_to_red_shows_red_within_one_refresh(
    open_page: PageFactory, service: ServiceThread, terminal_key: str, screenshot: Screenshot
) -> None:
    """An authority turns the citizen red; once the page's clock passes the pass's refresh_in
    the page fetches its pass again and shows the red code, in words, with what to do, and its
    new QR is denied as red."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page = _signed_in_green(open_page, user_id)
    service.override(user_id, "red")
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "green")
    shift_clock(page, service.settings.pass_ttl - service.settings.refresh_margin + 1)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "red")
    expect(page.locator("#pass-color-text")).to_have_text("Red code")
    expect(page.locator("#pass-advice")).to_contain_text("Do not enter")
    screenshot(page, "app-code-red")
    answer = service.verify(terminal_key, _decode_qr(page))
    assert (answer["decision"], answer["reason"]) == ("deny", "status_red"), answer


def test_offline_the_kept_pass_is_shown_until_it_expires_then_expired(
    open_page: PageFactory, service: ServiceThread, screenshot: Screenshot
) -> None:
    """With the network gone the page keeps showing the last pass, saying it is offline; once
    the page's clock passes the pass's expiry the QR is gone and "Expired — reconnect" is shown
    with a way to refresh; back online, a fresh green code comes by itself."""
    page = _signed_in_green(open_page, f"web-{uuid.uuid4().hex[:10]}")
    page.context.set_offline(True)
    expect(page.locator("#pass-offline")).to_be_visible()
    _green(page)
    screenshot(page, "app-code-offline")
    shift_clock(page, service.settings.pass_ttl + 1)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "expired")
    expect(page.locator("#pass-color-text")).to_have_text("Expired — reconnect")
    expect(page.locator("#pass-expired")).to_be_visible()
    expect(page.locator("#pass-figure")).to_be_hidden()
    screenshot(page, "app-code-expired")
    page.context.set_offline(False)
    _green(page)
    expect(page.locator("#pass-expired")).to_be_hidden()


def test_a_declaration_with_mistakes_says_what_to_correct(
    open_page: PageFactory, screenshot: Screenshot
) -> None:
    """A declaration sent with no temperature and no answer to the close-contact question is
    not sent: each of the two fields says what is missing."""
    page = _open(open_page)
    sign_in(page, f"web-{uuid.uuid4().hex[:10]}")
    screen(page, "screen-declare", timeout=FLOW_DEADLINE)
    page.click("#declare-submit")
    expect(page.locator("#temperature-error")).to_be_visible()
    expect(page.locator("#temperature-error-text")).to_have_text("Enter your body temperature.")
    expect(page.locator("#close-contact-error-text")).to_have_text("Choose Yes or No.")
    expect(page.locator("#declare-error")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-screen", "screen-declare")
    screenshot(page, "app-declare-errors")


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_citizen_screens_have_no_wcag_violation(
    open_page: PageFactory,
    service: ServiceThread,
    check_accessibility: Accessibility,
    screenshot: Screenshot,
    language: str,
) -> None:
    """axe-core finds no WCAG 2.1 A/AA violation on the sign-in screen, the identity provider's
    login page, the declaration form (empty and with its error messages), the green code, the
    red code and the expired state, in English and in Chinese (``lang`` set to match)."""
    page = _open(open_page, locale="zh-CN" if language == "zh-CN" else "en-US")
    if page.locator("html").get_attribute("lang") != language:
        page.click("#lang-switch")
    expect(page.locator("html")).to_have_attribute("lang", language)
    tag = "" if language == "en" else f"-{language}"
    screen(page, "screen-signin")
    check_accessibility(page, f"sign-in {language}")
    screenshot(page, f"app-signin{tag}")

    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page.click("#signin-button")
    page.wait_for_url("**/dev-idp/**")
    check_accessibility(page, "the dev identity provider's login page")
    page.fill("#user_id", user_id)
    page.fill("#name", "张小三")
    page.click("button[type=submit]")
    screen(page, "screen-declare", timeout=FLOW_DEADLINE)
    expect(page.locator("html")).to_have_attribute("lang", language)
    check_accessibility(page, f"declaration {language}")
    screenshot(page, f"app-declare{tag}")
    page.click("#declare-submit")
    expect(page.locator("#temperature-error")).to_be_visible()
    check_accessibility(page, f"declaration with errors {language}")

    page.fill("#temperature", "36.6")
    page.check("#close-contact-no")
    page.click("#declare-submit")
    screen(page, "screen-code", timeout=FLOW_DEADLINE)
    _green(page)
    check_accessibility(page, f"green code {language}")
    if language != "en":
        screenshot(page, f"app-code-green{tag}")

    service.override(user_id, "red")
    shift_clock(page, service.settings.pass_ttl - service.settings.refresh_margin + 1)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "red")
    check_accessibility(page, f"red code {language}")

    page.context.set_offline(True)
    expect(page.locator("#pass-offline")).to_be_visible()
    check_accessibility(page, f"offline code {language}")
    shift_clock(page, 3 * service.settings.pass_ttl)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "expired")
    check_accessibility(page, f"expired {language}")
