"""The citizen page's "My data" and "Delete my account" (passcode/web/app/mydata.js) in headless
Chromium against the live service: the copy of GET /v1/me/data downloaded as a JSON file that
holds the declaration just made; the deletion behind a confirmation (a typed word), after which
the page is signed out and the service holds no declaration of the citizen; an authority's open
ruling said to stay; an ID token issued longer ago than the sign-in window leading to a sign-in
and back to the confirmation; no WCAG 2.1 A/AA violation on the my-data, confirmation and
result screens in English and Chinese.

The page's hooks: ``body[data-screen]``, ``#screen-mydata[data-state]``,
``#screen-delete[data-state]``, ``#delete-error[data-problem]``, ``#screen-deleted[data-erased]``.
The service judges a token's age by its own clock, which the page's ``window.__passcodeNow``
does not move: the old token is minted by the dev identity provider's key with an ``iat``
before the window, as a token kept on the phone since then would be.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from passcode.api.pages import WEB_DIR
from passcode.domain.identity import mint_dev_token
from passcode.store.keyring import load_or_create_ed25519
from passcode.wiring import DEV_IDP_KID, dev_idp_key_path
from tests.browser.citizen import CLOCK, FLOW_DEADLINE, declare_healthy, screen, sign_in
from tests.browser.conftest import Accessibility, PageFactory, Screenshot
from tests.browser.service import ServiceThread
from tests.helpers import dev_token

pytestmark = pytest.mark.browser

# The word the confirmation asks for, from each catalogue (the test types what a citizen reads).
WORDS = {
    lang: json.loads((WEB_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))["delete.word"]
    for lang in ("en", "zh-CN")
}
NARROWEST = 320  # px: the narrowest phone the page is made for
TOKEN_KEY = "passcode.idToken"  # where common/auth.js keeps the ID token (sessionStorage)


def _open(open_page: PageFactory, language: str = "en") -> Page:
    page = open_page("/app/", init=CLOCK, locale="zh-CN" if language == "zh-CN" else "en-US")
    expect(page.locator("body")).not_to_have_attribute("data-screen", "screen-loading")
    if page.locator("html").get_attribute("lang") != language:
        page.click("#lang-switch")
    expect(page.locator("html")).to_have_attribute("lang", language)
    return page


def _declared(open_page: PageFactory, user_id: str, language: str = "en") -> Page:
    """A page signed in as ``user_id`` who has just declared (the green code shown)."""
    page = _open(open_page, language)
    sign_in(page, user_id)
    declare_healthy(page)
    expect(page.locator("#pass-band")).to_have_attribute("data-color", "green")
    return page


def _my_data(page: Page) -> None:
    page.click("#nav-mydata")
    screen(page, "screen-mydata")
    expect(page.locator("#screen-mydata")).to_have_attribute("data-state", "ready")


def _confirm(page: Page, word: str) -> None:
    """From the my-data screen: open the confirmation, type ``word`` and press delete."""
    page.click("#mydata-delete")
    screen(page, "screen-delete")
    page.fill("#delete-word", word)
    page.click("#delete-confirm")


def _api_copy(service: ServiceThread, user_id: str) -> dict[str, Any]:
    """GET /v1/me/data with a fresh dev token of ``user_id`` (not the page's)."""
    token = dev_token(service.settings, user_id)
    copy: dict[str, Any] = service.json("GET", "/v1/me/data", token=token, expect=200)
    return copy


def _fits_narrowest_phone(page: Page, screen_name: str) -> None:
    """At 320 CSS px wide the screen needs no sideways scrolling (WCAG 1.4.10 reflow)."""
    size = page.viewport_size
    assert size is not None
    page.set_viewport_size({"width": NARROWEST, "height": size["height"]})
    width = page.evaluate("() => document.documentElement.scrollWidth")
    page.set_viewport_size(size)
    assert width <= NARROWEST, f"{screen_name}: {width} px wide at {NARROWEST} px"


def _kept_token(page: Page) -> str | None:
    value = page.evaluate(f"() => sessionStorage.getItem({json.dumps(TOKEN_KEY)})")
    return None if value is None else str(value)


def test_my_data_shows_counts_and_downloads_the_copy_holding_the_declaration(
    open_page: PageFactory, service: ServiceThread, screenshot: Screenshot
) -> None:
    """After declaring, "My data" lists the counts per kind (one declaration, the green code)
    and "Download" saves a JSON file, made on the device from a blob: URL, that parses and
    holds the declaration as the service holds it (the same copy as GET /v1/me/data answers);
    no token is in the page's address or the file's URL. Every element id mydata.js names for
    these tests is on the page."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page = _declared(open_page, user_id)
    _my_data(page)
    summary = page.locator("#mydata-summary")
    expect(summary.locator("li[data-kind=declarations]")).to_have_attribute("data-count", "1")
    expect(summary.locator("li[data-kind=declarations]")).to_have_text("Health declarations: 1")
    expect(summary.locator("li[data-kind=scans]")).to_have_attribute("data-count", "0")
    expect(summary.locator("li[data-kind=status]")).to_have_text("Your code now: Green code")
    screenshot(page, "app-mydata")

    with page.expect_download() as info:
        page.click("#mydata-download")
    download = info.value
    assert download.url.startswith("blob:"), download.url
    assert re.fullmatch(r"passcode-my-data-\d{4}-\d{2}-\d{2}\.json", download.suggested_filename)
    saved = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert len(saved["declarations"]) == 1
    declaration = saved["declarations"][0]
    assert declaration["temperature_c"] == 36.6
    assert declaration["close_contact"] is False
    assert declaration["symptoms"] == []
    assert saved["subject"]["name_masked"] == "张*三"
    assert saved["status"]["color"] == "green"
    served = _api_copy(service, user_id)
    # scans_since is "now" less the retention period: a second apart between the two copies
    assert {k: v for k, v in saved.items() if k != "scans_since"} == {
        k: v for k, v in served.items() if k != "scans_since"
    }
    assert "token" not in page.url
    assert "token" not in download.url

    header = (WEB_DIR / "app" / "mydata.js").read_text(encoding="utf-8").split("\nimport ", 1)[0]
    named = set(re.findall(r"#([a-z][a-z0-9-]*[a-z0-9])\b", header)) - {"delete-account"}
    assert {"screen-mydata", "screen-delete", "screen-deleted", "nav-mydata"} <= named
    for element_id in sorted(named):
        assert page.locator(f"[id='{element_id}']").count() == 1, element_id


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_deleting_the_account_after_its_confirmation_leaves_no_declaration(
    open_page: PageFactory, service: ServiceThread, language: str
) -> None:
    """A wrong confirming word deletes nothing (the field says which word to type); the word
    the page asks for, in its language, deletes the account: the result says everything went,
    the token is gone from the phone, "Done" shows the sign-in screen, and the service answers
    the same user (a fresh token) no-declaration and holds nothing of them; signing in again
    on the page asks for a declaration."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page = _declared(open_page, user_id, language)
    _my_data(page)
    _confirm(page, "nope")
    expect(page.locator("#delete-word-error")).to_be_visible()
    expect(page.locator("#delete-word-error")).to_contain_text(WORDS[language])
    expect(page.locator("#delete-word")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("body")).to_have_attribute("data-screen", "screen-delete")
    assert len(_api_copy(service, user_id)["declarations"]) == 1

    page.fill("#delete-word", WORDS[language])
    page.click("#delete-confirm")
    screen(page, "screen-deleted")
    expect(page.locator("#screen-deleted")).to_have_attribute("data-erased", "true")
    expect(page.locator("#deleted-kept")).to_be_hidden()
    if language == "en":
        expect(page.locator("#deleted-title")).to_have_text("Your account is deleted")
    assert _kept_token(page) is None
    page.click("#deleted-done")
    screen(page, "screen-signin")

    token = dev_token(service.settings, user_id)
    status, raw = service.request("GET", "/v1/pass", token=token)
    assert status == 404, raw[:300]
    assert json.loads(raw)["type"].endswith("/no-declaration")
    copy = _api_copy(service, user_id)
    assert copy["subject"] is None
    assert copy["declarations"] == []
    assert copy["status"] is None

    sign_in(page, user_id)
    screen(page, "screen-declare", timeout=FLOW_DEADLINE)
    expect(page.locator("#declare-note")).to_be_visible()


def test_an_authoritys_open_ruling_is_said_to_stay_after_the_deletion(
    open_page: PageFactory, service: ServiceThread, screenshot: Screenshot
) -> None:
    """A citizen an authority has ruled red deletes their account: the result says the rest
    went and lists the red ruling that stays, with its reason and until when, in words."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page = _declared(open_page, user_id)
    service.override(user_id, "red")
    _my_data(page)
    expect(page.locator("#mydata-summary li[data-kind=overrides]")).to_have_attribute(
        "data-count", "1"
    )
    _confirm(page, WORDS["en"])
    screen(page, "screen-deleted")
    expect(page.locator("#screen-deleted")).to_have_attribute("data-erased", "false")
    kept = page.locator("#deleted-kept li")
    expect(kept).to_have_count(1)
    expect(kept.first).to_have_attribute("data-kind", "override")
    expect(kept.first).to_have_attribute("data-color", "red")
    expect(kept.first).to_contain_text("Red code")
    expect(kept.first).to_contain_text("positive_test")
    expect(page.locator("#deleted-title")).to_contain_text("except")
    screenshot(page, "app-delete-kept")
    assert _kept_token(page) is None
    copy = _api_copy(service, user_id)
    assert copy["declarations"] == []
    assert len(copy["overrides"]) == 1


def test_a_token_older_than_the_sign_in_window_signs_in_again_then_deletes(
    open_page: PageFactory,
    service: ServiceThread,
    check_accessibility: Accessibility,
    screenshot: Screenshot,
) -> None:
    """With an ID token issued before the sign-in window (still valid for everything else),
    the confirmed deletion is refused as sign-in-again and nothing is deleted; the page says so
    and offers to sign in again; through the identity provider's login it comes back to the
    confirmation, saying it did, and the deletion then goes through."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    page = _declared(open_page, user_id)
    settings = service.settings
    old = mint_dev_token(
        load_or_create_ed25519(dev_idp_key_path(settings)),
        kid=DEV_IDP_KID,
        issuer=settings.idp_issuer,
        audience=settings.idp_audience,
        user_id=user_id,
        name="张小三",
        now=int(time.time()) - settings.erasure_signin_window - 60,
        ttl=3600,
    )
    page.evaluate("([key, value]) => sessionStorage.setItem(key, value)", [TOKEN_KEY, old])
    _my_data(page)  # a copy needs no recent sign-in
    _confirm(page, WORDS["en"])
    error = page.locator("#delete-error")
    expect(error).to_have_attribute("data-problem", "sign-in-again")
    expect(error).to_be_visible()
    expect(page.locator("#delete-signin")).to_be_visible()
    expect(page.locator("#delete-signin")).to_be_focused()
    expect(page.locator("#delete-confirm")).to_be_hidden()
    expect(page.locator("#screen-delete")).to_have_attribute("data-state", "error")
    check_accessibility(page, "sign in again before deleting")
    screenshot(page, "app-delete-signin-again")
    assert len(_api_copy(service, user_id)["declarations"]) == 1

    page.click("#delete-signin")
    page.wait_for_url("**/dev-idp/**")
    page.fill("#user_id", user_id)
    page.fill("#name", "张小三")
    page.click("button[type=submit]")
    screen(page, "screen-delete", timeout=FLOW_DEADLINE)
    expect(page.locator("#delete-note")).to_be_visible()
    assert "#delete-account" not in page.url
    assert _kept_token(page) not in (None, old)
    page.fill("#delete-word", WORDS["en"])
    page.click("#delete-confirm")
    screen(page, "screen-deleted")
    expect(page.locator("#screen-deleted")).to_have_attribute("data-erased", "true")
    assert _api_copy(service, user_id)["declarations"] == []


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_my_data_and_deletion_screens_have_no_wcag_violation(
    open_page: PageFactory,
    service: ServiceThread,
    check_accessibility: Accessibility,
    screenshot: Screenshot,
    language: str,
) -> None:
    """axe-core finds no WCAG 2.1 A/AA violation on the my-data screen, the confirmation (as
        opened and with its wrong-word message) and the result, in English and in Chinese, and none
    of them needs sideways scrolling on a 320 px wide phone."""
    tag = "" if language == "en" else f"-{language}"
    page = _declared(open_page, f"web-{uuid.uuid4().hex[:10]}", language)
    _my_data(page)
    check_accessibility(page, f"my data {language}")
    _fits_narrowest_phone(page, f"my data {language}")
    if language != "en":
        screenshot(page, f"app-mydata{tag}")
    page.click("#mydata-delete")
    screen(page, "screen-delete")
    check_accessibility(page, f"delete confirmation {language}")
    _fits_narrowest_phone(page, f"delete confirmation {language}")
    screenshot(page, f"app-delete{tag}")
    page.click("#delete-confirm")
    expect(page.locator("#delete-word-error")).to_be_visible()
    check_accessibility(page, f"delete confirmation with its error {language}")
    page.fill("#delete-word", WORDS[language])
    page.click("#delete-confirm")
    screen(page, "screen-deleted")
    expect(page.locator("html")).to_have_attribute("lang", language)
    check_accessibility(page, f"deleted {language}")
    _fits_narrowest_phone(page, f"deleted {language}")
    screenshot(page, f"app-delete-done{tag}")
