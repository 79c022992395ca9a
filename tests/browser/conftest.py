"""Fixtures of the real-browser tests: Debian's Chromium (installed with apt-get when missing,
once per run), Playwright's synchronous API driving it headless, the live service (the real app
in dev mode on a loopback port, on the run's PostgreSQL and Redis) and its terminals and
citizens, browser contexts with the pages' test hooks, axe-core, and the screenshots for the
README (written to docs/screenshots/ only with ``UPDATE_SCREENSHOTS=1``, else to the test's own
folder, so a normal run never changes the committed files).

Every wait is on the pages' own data attributes and visible state (Playwright's ``expect``
polls them), never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from passcode.config import Settings
from passcode.testing import free_port
from tests.browser.service import ServiceThread, live_settings, y4m_from_png
from tests.helpers import ADMIN_KEY, RUN_ID

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
PHONE = {"width": 360, "height": 720}  # a small phone: the pages are mobile first
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BASE_ARGS = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
APT_DEADLINE = 900  # s: apt-get update and the chromium package on a slow mirror
# The pages answer in well under a second; the margin is for a loaded two-core CI machine.
expect.set_options(timeout=10_000)


def _install_chromium() -> str:
    """Debian's chromium, installed with apt-get (as root, or sudo without a password)."""
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is not available to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "chromium"]):
        done = subprocess.run(  # noqa: S603  # fixed arguments
            [*sudo, *command],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=APT_DEADLINE,
        )
        if done.returncode != 0 and command[1] == "install":
            pytest.fail(f"apt-get install chromium failed: {done.stderr[-800:]}")
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("the chromium package was installed but chromium is not on PATH")
    return found


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium binary (Playwright downloads no browser of its own)."""
    return shutil.which("chromium") or _install_chromium()


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright, chromium: str) -> Iterator[Browser]:
    """Headless Chromium whose camera is the fake device's test pattern (no code in view)."""
    launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=BASE_ARGS)
    try:
        yield launched
    finally:
        launched.close()


CameraBrowser = Callable[[bytes], Browser]


@pytest.fixture
def camera_browser(
    playwright: Playwright, chromium: str, tmp_path: Path
) -> Iterator[CameraBrowser]:
    """Launch a Chromium whose camera plays a Y4M made from a PNG (one video per launch)."""
    launched: list[Browser] = []

    def launch(png: bytes) -> Browser:
        video = y4m_from_png(png, tmp_path / f"camera-{len(launched)}.y4m")
        args = [*BASE_ARGS, f"--use-file-for-fake-video-capture={video}"]
        one = playwright.chromium.launch(executable_path=chromium, headless=True, args=args)
        launched.append(one)
        return one

    try:
        yield launch
    finally:
        for one in launched:
            one.close()


@pytest.fixture(scope="package")
def service(
    database_url: str,
    redis_url: str,
    redis_cluster_nodes: tuple[str, ...],
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceThread]:
    """The app in dev mode on a free loopback port (its own Redis prefix and data folder)."""
    base = Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_cluster_nodes=redis_cluster_nodes,
        redis_prefix=f"{redis_prefix}:browser{uuid.uuid4().hex[:6]}",
        data_dir=tmp_path_factory.mktemp("browser-service"),
        secret="browser-test-secret-" + RUN_ID,
        admin_key=ADMIN_KEY,
        dev_mode=True,
        drain_interval=0.05,
        pg_pool_min=1,
        pg_pool_max=5,
        scan_shards=2,
        citizen_burst=1000.0,  # one citizen's page refreshes and declares in quick succession
        shed_issue_lag=0.0,  # a loaded machine's loop lag must not shed the pages' requests
        access_log=False,
    )
    running = ServiceThread(live_settings(base, free_port()))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="package")
def terminal_key(service: ServiceThread) -> str:
    """The key of a terminal at the door the scanner page stands for."""
    return service.new_terminal("Library, North Door")


PageFactory = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, service: ServiceThread) -> Iterator[PageFactory]:
    """Open a page of the service in a fresh phone-sized context (camera allowed, English
    unless ``locale`` says otherwise), with the scanner's test ``hooks`` and an ``init`` script
    run before the page's own scripts; ``on`` is another browser (one with a camera video)."""
    contexts: list[BrowserContext] = []

    def open_(
        path: str,
        *,
        hooks: dict[str, Any] | None = None,
        init: str | None = None,
        on: Browser | None = None,
        **options: Any,
    ) -> Page:
        context = (on or browser).new_context(
            base_url=service.url,
            viewport=PHONE,
            locale=options.pop("locale", "en-US"),
            permissions=["camera"],
            **options,
        )
        contexts.append(context)
        if hooks:
            context.add_init_script(f"globalThis.__PASSCODE_TEST__ = {json.dumps(hooks)};")
        if init:
            context.add_init_script(init)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(path)
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


Accessibility = Callable[[Page, str], None]


@pytest.fixture(scope="package")
def axe() -> Axe:
    return Axe()


@pytest.fixture
def check_accessibility(axe: Axe) -> Accessibility:
    """Fail with axe-core's report when the page as it stands breaks a WCAG 2.1 A/AA rule."""

    def check(page: Page, screen: str) -> None:
        options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
        results = axe.run(page, options=options)
        assert results.violations_count == 0, f"{screen}:\n{results.generate_report()}"

    return check


Screenshot = Callable[[Page, str], Path]


@pytest.fixture
def screenshot(tmp_path: Path) -> Screenshot:
    """Save the page's viewport as ``<name>.png`` (docs/screenshots/ with UPDATE_SCREENSHOTS=1)."""
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled", caret="hide")
        assert path.stat().st_size > 0
        return path

    return take
