"""What the citizen-page tests (the code screen, venue check-in) do alike: the page's clock hook,
signing in through dev mode's identity provider's login page, the healthy declaration."""

from __future__ import annotations

from playwright.sync_api import Page, expect

# The page's one clock (passcode/web/common/clock.js reads window.__passcodeNow on every call):
# the device's clock plus a shift the tests move (shift_clock).
CLOCK = (
    "globalThis.__passcodeShift = 0;"
    " globalThis.__passcodeNow = () => Date.now() + globalThis.__passcodeShift;"
)
FLOW_DEADLINE = 20_000  # ms: sign-in's redirects, the token exchange and the first pass


def shift_clock(page: Page, seconds: float) -> None:
    """Move the page's clock ``seconds`` ahead of the device's."""
    page.evaluate(f"() => {{ globalThis.__passcodeShift = {int(seconds * 1000)}; }}")


def screen(page: Page, name: str, timeout: float | None = None) -> None:
    """Wait until the page shows screen ``name`` (``body[data-screen]``)."""
    expect(page.locator("body")).to_have_attribute("data-screen", name, timeout=timeout)
    expect(page.locator(f"#{name}")).to_be_visible()


def sign_in(page: Page, user_id: str, name: str = "张小三") -> None:
    """From the sign-in screen through the dev identity provider's login page and back."""
    screen(page, "screen-signin")
    page.click("#signin-button")
    page.wait_for_url("**/dev-idp/**")
    page.fill("#user_id", user_id)
    page.fill("#name", name)
    page.click("button[type=submit]")
    page.wait_for_url("**/app/**")


def declare_healthy(page: Page) -> None:
    """Answer the declaration form as a healthy citizen and wait for the code screen."""
    screen(page, "screen-declare", timeout=FLOW_DEADLINE)
    page.fill("#temperature", "36.6")
    page.check("#close-contact-no")
    page.click("#declare-submit")
    screen(page, "screen-code", timeout=FLOW_DEADLINE)
