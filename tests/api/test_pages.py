"""The pages the service serves itself (/app/, /common/, /i18n/, /docs, /vendor/): content types,
the strict security headers on every answer (a 404 too), revalidation and gzip, the npm files
from node_modules; and, read from the files, that the pages hold no inline script or style, no
hard-coded text, and that every message key the scripts and pages use is in both catalogues."""

from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from passcode.api.accesslog import AccessLogger
from passcode.api.pages import VENDOR, WEB_DIR, content_security_policy, node_modules
from passcode.app import create_app
from passcode.config import Settings

PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CATALOGUES = ("zh-CN", "en")
# Pages whose scripts speak through the shared catalogues (the scanner page joins when its
# scripts import common/i18n.js).
KEYED_FOLDERS = ("app", "common", "scan")


def assert_page_headers(response: Any, *, trusted_types: bool = False) -> None:
    """The security headers every page answer carries, with a policy that allows no inline code."""
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = response.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert "unsafe-" not in policy
    assert ("require-trusted-types-for" in directives) is trusted_types


@pytest.mark.parametrize(
    ("path", "content_type", "trusted_types"),
    [
        ("/app/", "text/html", True),
        ("/app/index.html", "text/html", True),
        ("/app/main.js", "text/javascript", True),
        ("/app/code.js", "text/javascript", True),
        ("/app/checkin.js", "text/javascript", True),
        ("/app/camera.js", "text/javascript", True),
        ("/app/checkin.css", "text/css", True),
        ("/app/app.css", "text/css", True),
        ("/app/icon.svg", "image/svg+xml", True),
        ("/common/i18n.js", "text/javascript", False),
        ("/common/clock.js", "text/javascript", False),
        ("/i18n/zh-CN.json", "application/json", False),
        ("/i18n/en.json", "application/json", False),
        ("/vendor/uqr.mjs", "text/javascript", False),
        ("/docs", "text/html", False),
        ("/docs/init.js", "text/javascript", False),
        ("/vendor/swagger-ui-bundle.js", "text/javascript", False),
        ("/vendor/swagger-ui.css", "text/css", False),
    ],
)
async def test_each_page_file_is_served_with_its_type_and_the_security_headers(
    client: TestClient[Any, Any], path: str, content_type: str, trusted_types: bool
) -> None:
    """Each file of the pages answers 200 with its content type (UTF-8 for text), the strict
    headers, an ETag and ``Cache-Control: no-cache``; the citizen page's also forbid strings in
    the DOM's HTML sinks (Trusted Types)."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    assert response.content_type == content_type
    if not content_type.startswith("image/"):
        assert response.charset == "utf-8"
    assert_page_headers(response, trusted_types=trusted_types)
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["ETag"])
    assert response.headers["Cache-Control"] == "no-cache"
    assert len(await response.read()) > 100


async def test_the_pages_are_the_files_of_the_package_and_of_npm(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """What is served is the file itself: the citizen page from passcode/web, the catalogues as
    valid JSON, Swagger UI and the QR encoder from the npm packages in node_modules."""
    page = await client.get("/app/")
    assert await page.read() == (WEB_DIR / "app" / "index.html").read_bytes()
    for lang in CATALOGUES:
        served = await client.get(f"/i18n/{lang}.json")
        assert await served.json() == json.loads((WEB_DIR / "i18n" / f"{lang}.json").read_text())
    for name, (package, file) in VENDOR.items():
        served = await client.get(f"/vendor/{name}")
        assert served.status == 200, name
        assert await served.read() == (node_modules(settings) / package / file).read_bytes()


async def test_docs_starts_swagger_ui_on_the_openapi_document_without_inline_script(
    client: TestClient[Any, Any],
) -> None:
    """/docs loads Swagger UI's dist files from /vendor/ and an external initializer that reads
    /openapi.json; the page has no script of its own inline."""
    html = await (await client.get("/docs")).text()
    page = parse_html(html)
    assert page.script_sources == ["/vendor/swagger-ui-bundle.js", "/docs/init.js"]
    assert page.inline_scripts == 0
    assert "/vendor/swagger-ui.css" in page.stylesheets
    init = await (await client.get("/docs/init.js")).text()
    assert 'url: "/openapi.json"' in init
    bundle = await client.get("/vendor/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in await bundle.read()


@pytest.mark.parametrize(
    "path",
    [
        "/app/nothing.js",
        "/app/.hidden.js",
        "/app/README.md",
        "/app/main",
        "/common/nothing.js",
        "/i18n/fr.json",
        "/i18n/en.js",
        "/docs/nothing.js",
        "/vendor/left-pad.js",
        "/vendor/index.html",
    ],
)
async def test_a_missing_or_unserved_file_is_a_404_problem_with_the_page_headers(
    client: TestClient[Any, Any], path: str
) -> None:
    """A name that is not a served file (unknown, hidden, of a type the pages do not serve, not
    in the npm list) is a problem 404 that carries the same strict headers."""
    response = await client.get(path)
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert (await response.json())["status"] == 404
    assert_page_headers(response, trusted_types=path.startswith("/app/"))


@pytest.mark.parametrize(
    "path",
    ["/app/..%2F..%2Fpyproject.toml", "/app/%2E%2E/config.py", "/common/..%5Capi%5Cpages.py"],
)
async def test_a_name_cannot_leave_its_folder(client: TestClient[Any, Any], path: str) -> None:
    """Encoded slashes, backslashes and dot segments never reach a file outside the folder."""
    response = await client.get(path)
    assert response.status == 404
    body = await response.read()
    assert b"[project]" not in body
    assert b"import" not in body


async def test_a_missing_npm_package_is_a_404_that_says_how_to_install_it(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    """With no npm packages where PASSCODE_NODE_MODULES_DIR points, /vendor/ files are 404
    problems naming the package and `make install`; the pages themselves are still served."""
    app = create_app(replace(settings, node_modules_dir=tmp_path / "no-node-modules"))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    response = await client.get("/vendor/swagger-ui-bundle.js")
    assert response.status == 404
    detail = (await response.json())["detail"]
    assert "swagger-ui-dist" in detail
    assert "make install" in detail
    assert (await client.get("/docs")).status == 200


async def test_an_unchanged_file_is_a_304_and_text_is_gzipped_when_asked(
    client: TestClient[Any, Any],
) -> None:
    """If-None-Match with the ETag answers 304 with no body and the same headers; a client that
    takes gzip gets the text gzipped (the same bytes once inflated, much fewer on the wire), a
    client that refuses it (q=0) gets it plain."""
    first = await client.get("/app/app.css")
    plain = await first.read()
    again = await client.get("/app/app.css", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    assert_page_headers(again, trusted_types=True)
    zipped = await client.get(
        "/vendor/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    raw = await zipped.read()
    whole = await (await client.get("/vendor/swagger-ui-bundle.js")).read()
    assert gzip.decompress(raw) == whole
    assert len(raw) < len(whole) / 2
    refused = await client.get(
        "/app/app.css", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False
    )
    assert "Content-Encoding" not in refused.headers
    assert await refused.read() == plain


def test_the_identity_providers_origin_is_the_only_other_origin_the_pages_may_reach() -> None:
    """connect-src and form-action add the identity provider's origin when its issuer is an
    http(s) URL (the sign-in's token endpoint); a plain issuer name adds nothing, and an issuer
    that would smuggle a directive or credentials in adds nothing either."""
    city = content_security_policy("https://id.city.example/realms/citizens", trusted_types=False)
    assert "connect-src 'self' https://id.city.example;" in city
    assert "form-action 'self' https://id.city.example;" in city
    for issuer in (
        "passcode-dev-idp",
        "https://evil.example; script-src *",
        "https://user:pw@id.example",
        "javascript:alert(1)",
    ):
        policy = content_security_policy(issuer, trusted_types=False)
        assert "connect-src 'self';" in policy, issuer
        assert policy.count("script-src") == 1


async def test_the_access_log_names_the_page_route_never_the_query(
    aiohttp_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The sign-in returns to /app/?code=…&state=…: the access line names the route template
    only, so an authorization code (or a token a client puts in a URL) is never written."""
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=AccessLogger)  # as `passcode serve` runs it
    client: TestClient[Any, Any] = await aiohttp_client(server)
    secret = "authcode-Zq8vN2xLmP4"
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        assert (await client.get(f"/app/?code={secret}&state=s1")).status == 200
        assert (await client.get(f"/vendor/uqr.mjs?id_token={secret}")).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any('"GET /app/ HTTP/1.1" 200' in line for line in lines), lines
    assert any('"GET /vendor/{name} HTTP/1.1" 200' in line for line in lines), lines
    assert not [line for line in lines if secret in line]


# --- the files themselves -----------------------------------------------------------------


class _Page(HTMLParser):
    """What the checks need from an HTML page: scripts, styles, attributes, text, keys."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.script_sources: list[str] = []
        self.inline_scripts = 0
        self.stylesheets: list[str] = []
        self.style_elements = 0
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.script_urls: list[str] = []
        self.keys: set[str] = set()
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "script":
            if "src" in values:
                self.script_sources.append(values["src"])
            else:
                self.inline_scripts += 1
            self._in_script = True
        if tag == "style":
            self.style_elements += 1
        if tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values["href"])
        for name, value in values.items():
            if name == "style":
                self.inline_styles.append(tag)
            if name.startswith("on"):
                self.handlers.append(f"{tag} {name}")
            if value.strip().lower().startswith("javascript:"):
                self.script_urls.append(f"{tag} {name}")
            if name in {"data-i18n", "data-i18n-aria-label", "data-i18n-title"}:
                self.keys.add(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if data.strip() and not self._in_script:
            self.text.append(data.strip())


def parse_html(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _html_files() -> list[Path]:
    return sorted(WEB_DIR.glob("*/*.html"))


def _keyed_scripts() -> list[Path]:
    """The scripts that speak through the shared catalogues: those of the citizen page and the
    shared modules, and any other page's that imports common/i18n.js (the scanner page has
    catalogues of its own)."""
    found = []
    for folder in KEYED_FOLDERS:
        for path in sorted((WEB_DIR / folder).glob("*.js")):
            if folder in {"app", "common"} or "../common/i18n.js" in path.read_text("utf-8"):
                found.append(path)
    return found


def _code(text: str) -> str:
    """A script without its comments (a rough cut: enough for our own modules)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return re.sub(r"(?m)^\s*//.*$|\s//\s.*$", "", text)


_KEY_CALL = re.compile(r"""\b(?:t|msg)\(\s*"([^"\\]+)"\s*[,)]""")
_ANY_CALL = re.compile(r"""\b(?:t|msg)\(\s*(?=\S)""")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def used_keys() -> dict[str, set[str]]:
    """Every message key the pages use, by file: ``t("…")``/``msg("…")`` in the scripts,
    ``data-i18n*`` attributes in the HTML."""
    used = {path.name: set(_KEY_CALL.findall(_code(path.read_text()))) for path in _keyed_scripts()}
    for path in _html_files():
        if path.parent.name in {"app", "common"}:
            used[f"{path.parent.name}/{path.name}"] = parse_html(path.read_text()).keys
    return used


def test_every_message_key_the_pages_use_is_in_both_catalogues() -> None:
    """Each key named by a script (t/msg with a literal) or a page (data-i18n) exists in the
    zh-CN and the en catalogue; both catalogues hold the same keys with the same placeholders,
    none empty and none unused."""
    catalogues = {
        lang: json.loads((WEB_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
        for lang in CATALOGUES
    }
    used = used_keys()
    every = set().union(*used.values())
    assert len(every) > 40  # the parser found the page's keys
    for lang, catalogue in catalogues.items():
        for file, keys in used.items():
            assert not keys - set(catalogue), (lang, file, sorted(keys - set(catalogue)))
        assert all(isinstance(v, str) and v.strip() for v in catalogue.values()), lang
    zh, en = catalogues["zh-CN"], catalogues["en"]
    assert set(zh) == set(en)
    for key in zh:
        assert set(_PLACEHOLDER.findall(zh[key])) == set(_PLACEHOLDER.findall(en[key])), key
    assert not set(zh) - every, f"unused catalogue keys: {sorted(set(zh) - every)}"


def test_every_message_lookup_in_the_scripts_names_its_key_literally() -> None:
    """A key built at run time would escape the check above: each t( and msg( call of the
    scripts starts with a string literal (i18n.js's own lookups aside), and no script holds
    Chinese text of its own (it belongs in the catalogue)."""
    for path in _keyed_scripts():
        text = _code(path.read_text(encoding="utf-8"))
        calls = _ANY_CALL.findall(text)
        literal = _KEY_CALL.findall(text)
        definitions = len(re.findall(r"\bfunction (?:t|msg)\(", text))
        assert len(calls) - definitions == len(literal), path.name
        assert not re.search(r"[\u4e00-\u9fff]", text), path.name
    sample = 'bind(el, msg(name)); t("a.b"); t( "c.d", {x: 1})'
    assert len(_ANY_CALL.findall(sample)) == 3
    assert _KEY_CALL.findall(sample) == ["a.b", "c.d"]


def test_the_pages_hold_no_inline_script_style_or_handler() -> None:
    """Every HTML page under passcode/web loads its scripts and styles from files: no inline
    <script>, no <style>, no style attribute, no on* handler, no javascript: URL; the scripts
    write no HTML strings into the DOM (innerHTML, document.write, eval and the like), which the
    citizen page's Trusted Types policy would refuse anyway."""
    pages = _html_files()
    assert {p.relative_to(WEB_DIR).as_posix() for p in pages} >= {
        "app/index.html",
        "docs/index.html",
    }
    for path in pages:
        page = parse_html(path.read_text(encoding="utf-8"))
        assert page.inline_scripts == 0, path
        assert page.style_elements == 0, path
        assert page.inline_styles == [], path
        assert page.handlers == [], path
        assert page.script_urls == [], path
        assert page.script_sources, path
    sinks = re.compile(
        r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function\("
        r"|setAttribute\(\s*[\"']style"
    )
    for path in sorted(WEB_DIR.glob("*/*.js")):
        assert not sinks.search(path.read_text(encoding="utf-8")), path
    control = parse_html('<p style="x" onclick="y()"><script>z()</script><a href="javascript:1">')
    assert (control.inline_scripts, control.inline_styles, control.handlers) == (
        1,
        ["p"],
        ["p onclick"],
    )
    assert control.script_urls == ["a href"]


def test_the_citizen_page_has_no_hard_coded_text() -> None:
    """The citizen page's HTML holds no text of its own: every word comes from the catalogue of
    the chosen language (the <html lang> starts at zh-CN and follows the choice)."""
    page = parse_html((WEB_DIR / "app" / "index.html").read_text(encoding="utf-8"))
    assert page.text == []
    assert 'lang="zh-CN"' in (WEB_DIR / "app" / "index.html").read_text()
    assert parse_html("<p>Hello</p>").text == ["Hello"]


def test_the_check_in_elements_named_for_the_browser_tests_are_on_the_page() -> None:
    """checkin.js lists the element ids the browser tests use at its top; each is an element of
    /app/ (a renamed one would break those tests silently), and the venue code is read from the
    URL's fragment, never its query string (which would reach access logs)."""
    script = (WEB_DIR / "app" / "checkin.js").read_text(encoding="utf-8")
    header = script.split("\nimport ", 1)[0]
    # "#checkin=<code>" (the fragment) and "#icon-<color>" (a pattern) are not ids
    named = set(re.findall(r"#([a-z][a-z0-9-]*[a-z0-9])\b(?![=<-])", header))
    assert {"screen-checkin", "checkin-card", "checkin-error", "nav-checkin"} <= named
    page = (WEB_DIR / "app" / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    assert not named - ids, sorted(named - ids)
    code = _code(script)
    assert "location.hash" in code
    assert "searchParams" not in code
    assert "URLSearchParams" not in code
