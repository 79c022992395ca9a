"""The scanner page (/scan/) in headless Chromium against the live service: the terminal key
set up once and kept, passes read through Chromium's fake camera (a Y4M made from the pass PNG
the citizen's phone would show), an override to red denying a newly fetched pass and
the one held before, and the offline device: checked on the device, queued, uploaded on
reconnect with the same scan id and recorded once.

The pages' hooks (passcode/web/scan/scan.js, end of file): ``body[data-ready]``, ``#result``'s
data attributes, ``#queue-status[data-count]``, ``#camera-status[data-state]``.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from passcode.testing import FEVER
from tests.browser.conftest import Accessibility, CameraBrowser, PageFactory, Screenshot
from tests.browser.service import ServiceThread

pytestmark = pytest.mark.browser

# A result stays up until "Next scan" and a code in view is read once: each test sees exactly
# the answers it causes.
HOOKS = {"resultMs": 600_000, "quietMs": 600_000}
CAMERA_DEADLINE = 20_000  # ms: camera start, a few decoded frames and one verify on a busy box
KEY_STORAGE = "passcode.scan.terminalKey"
QUEUE_STORAGE = "passcode.scan.queue"


def _ready(page: Page) -> None:
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def _set_up(page: Page, key: str) -> None:
    """Enter the terminal key on a fresh device and wait for the scanner screen."""
    _ready(page)
    expect(page.locator("#setup")).to_be_visible()
    page.fill("#terminal-key", key)
    page.click("#save-key")
    expect(page.locator("#scanner")).to_be_visible()
    expect(page.locator("#setup")).to_be_hidden()


def _type_code(page: Page, code: str) -> None:
    page.fill("#manual-code", code)
    page.click("#manual-submit")


def _result(page: Page, decision: str, reason: str, *, timeout: float | None = None) -> None:
    box = page.locator("#result")
    expect(box).to_be_visible(timeout=timeout)
    expect(box).to_have_attribute("data-decision", decision, timeout=timeout)
    expect(box).to_have_attribute("data-reason", reason)


def _next(page: Page) -> None:
    page.click("#result-close")
    expect(page.locator("#result")).to_be_hidden()


def test_terminal_key_is_entered_once_and_kept_on_the_device(
    open_page: PageFactory, service: ServiceThread, terminal_key: str
) -> None:
    """A device set up with its key is a scanner after a reload and in a new tab, without
    asking again, and that kept key is the one the service accepts: a typed green pass is
    admitted after the reload. The key is not in the page's address."""
    page = open_page("/scan/", hooks=HOOKS)
    _set_up(page, terminal_key)
    page.reload()
    _ready(page)
    expect(page.locator("#scanner")).to_be_visible()
    expect(page.locator("#setup")).to_be_hidden()
    assert page.evaluate(f"() => localStorage.getItem({json.dumps(KEY_STORAGE)})") == terminal_key
    assert terminal_key not in page.url
    _type_code(page, service.citizen().pass_text())
    _result(page, "admit", "ok")
    again = page.context.new_page()
    again.goto("/scan/")
    _ready(again)
    expect(again.locator("#scanner")).to_be_visible()
    expect(again.locator("#setup")).to_be_hidden()


def test_a_wrong_terminal_key_is_refused_at_set_up_and_not_kept(
    open_page: PageFactory,
) -> None:
    """A key the service does not know leaves the device unset, saying so."""
    page = open_page("/scan/", hooks=HOOKS)
    _ready(page)
    page.fill("#terminal-key", "pt_not-a-key-of-this-service")
    page.click("#save-key")
    expect(page.locator("#setup-message")).to_have_text(
        "The service does not know this key. Check it and try again."
    )
    expect(page.locator("#scanner")).to_be_hidden()
    assert page.evaluate(f"() => localStorage.getItem({json.dumps(KEY_STORAGE)})") is None


def test_a_pass_shown_to_the_camera_is_admitted(
    open_page: PageFactory,
    camera_browser: CameraBrowser,
    service: ServiceThread,
    terminal_key: str,
    screenshot: Screenshot,
) -> None:
    """The camera (Chromium's fake device playing the citizen's pass PNG) reads the code and
    the page shows the service's admit full screen, in words, with the masked name."""
    citizen = service.citizen(name="张小三")
    page = open_page("/scan/", hooks=HOOKS, on=camera_browser(citizen.pass_png()))
    _set_up(page, terminal_key)
    expect(page.locator("#camera-status")).to_have_attribute(
        "data-state", "scanning", timeout=CAMERA_DEADLINE
    )
    _result(page, "admit", "ok", timeout=CAMERA_DEADLINE)
    expect(page.locator("#result")).to_have_attribute("data-offline", "false")
    expect(page.locator("#result-word")).to_have_text("ADMIT")
    expect(page.locator("#result-holder")).to_have_text("Name: 张*三")
    screenshot(page, "scan-admit")


def test_after_an_override_to_red_a_new_pass_and_the_green_one_held_before_are_denied(
    open_page: PageFactory,
    camera_browser: CameraBrowser,
    service: ServiceThread,
    terminal_key: str,
    screenshot: Screenshot,
) -> None:
    """An authority turns the citizen red: the pass they fetch next, shown to the camera, is
    denied as red; the green pass they held before, typed in, is denied as red too (the live
    status outranks what the pass says; ``superseded`` is for a pass older than a green
    status)."""
    citizen = service.citizen()
    old = citizen.pass_text()
    assert service.verify(terminal_key, old)["decision"] == "admit"
    service.override(citizen.user_id, "red")
    page = open_page("/scan/", hooks=HOOKS, on=camera_browser(citizen.pass_png()))
    _set_up(page, terminal_key)
    _result(page, "deny", "status_red", timeout=CAMERA_DEADLINE)
    expect(page.locator("#result-word")).to_have_text("DO NOT ADMIT")
    expect(page.locator("#result-reason")).to_contain_text("Red code")
    screenshot(page, "scan-deny")
    _next(page)
    _type_code(page, old)
    _result(page, "deny", "status_red")


def test_offline_a_pass_is_checked_on_the_device_queued_and_uploaded_once(
    open_page: PageFactory, service: ServiceThread, terminal_key: str, screenshot: Screenshot
) -> None:
    """With the network gone, a green pass is checked on the device (signature and expiry
    against the cached keys): "checked offline — live status not known", one scan queued.
    Back online the page sends it by itself; the scan log then holds that scan id exactly once,
    with the device's own scan time."""
    page = open_page("/scan/", hooks=HOOKS)
    _set_up(page, terminal_key)
    code = service.citizen().pass_text()
    page.context.set_offline(True)
    expect(page.locator("#net-status")).to_have_attribute("data-online", "false")
    _type_code(page, code)
    _result(page, "admit", "ok")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")
    expect(page.locator("#result-offline")).to_have_text("Checked offline — live status not known")
    expect(page.locator("#queue-status")).to_have_attribute("data-count", "1")
    screenshot(page, "scan-offline")
    queued = json.loads(page.evaluate(f"() => localStorage.getItem({json.dumps(QUEUE_STORAGE)})"))
    assert [scan["code"] for scan in queued] == [code]
    scan_id = queued[0]["scan_id"]
    _next(page)

    page.context.set_offline(False)
    expect(page.locator("#queue-status")).to_have_attribute("data-count", "0")
    expect(page.locator("#sync-status")).to_have_text("Offline scans sent to the service: 1.")
    service.drain()
    rows = service.scan_rows(scan_id)
    assert len(rows) == 1, rows
    assert (rows[0]["decision"], rows[0]["reason"]) == ("admit", "ok")
    assert rows[0]["place"] == "Library, North Door"
    assert rows[0]["terminal_time"] is not None


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_scanner_screens_have_no_wcag_violation(
    open_page: PageFactory,
    service: ServiceThread,
    terminal_key: str,
    check_accessibility: Accessibility,
    screenshot: Screenshot,
    language: str,
) -> None:
    """axe-core finds no WCAG 2.1 A/AA violation on the set-up screen, the scanner screen and
    the admit, deny and offline results, in English and in Chinese (``lang`` set to match)."""
    page = open_page("/scan/", hooks=HOOKS, locale="zh-CN" if language == "zh-CN" else "en-US")
    _ready(page)
    if page.locator("html").get_attribute("lang") != language:
        page.click("#lang-toggle")
    expect(page.locator("html")).to_have_attribute("lang", language)
    tag = "" if language == "en" else f"-{language}"
    check_accessibility(page, f"setup {language}")
    screenshot(page, f"scan-setup{tag}")

    page.fill("#terminal-key", terminal_key)
    page.click("#save-key")
    expect(page.locator("#scanner")).to_be_visible()
    expect(page.locator("#camera-status")).to_have_attribute("data-state", "scanning")
    check_accessibility(page, f"scanner {language}")
    screenshot(page, f"scan-ready{tag}")

    _type_code(page, service.citizen().pass_text())
    _result(page, "admit", "ok")
    check_accessibility(page, f"admit {language}")
    _next(page)

    _type_code(page, service.citizen(declaration=FEVER).pass_text())
    _result(page, "deny", "status_yellow")
    check_accessibility(page, f"deny {language}")
    _next(page)

    page.context.set_offline(True)
    expect(page.locator("#net-status")).to_have_attribute("data-online", "false")
    _type_code(page, service.citizen().pass_text())
    _result(page, "admit", "ok")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")
    check_accessibility(page, f"offline result {language}")
    _next(page)
    check_accessibility(page, f"offline scanner {language}")


def test_the_accessibility_check_fails_on_a_violation(
    open_page: PageFactory, check_accessibility: Accessibility
) -> None:
    """The check is not blind under the pages' CSP: an image without a text alternative put
    into the scanner page is reported (axe-core's image-alt, WCAG 1.1.1)."""
    page = open_page("/scan/", hooks=HOOKS)
    _ready(page)
    page.evaluate(
        "() => document.querySelector('main').append(Object.assign("
        "document.createElement('img'), {src: '/app/icon.svg'}))"
    )
    with pytest.raises(AssertionError, match="image-alt"):
        check_accessibility(page, "an image without alt")
