"""A printed card (纸质码): its lifetime rule, its QR as a PNG and a printable A6 SVG sheet.

Pure: time and text come in, bytes go out. The QR is :mod:`passcode.domain.qr`'s symbol, in
black rather than a status colour: a card lives for months and verify judges it by the live
status, so a colour printed at issue would mislead whoever looks at it. The sheet shows only
what the holder and the staff at a gate need (the masked name, issue date, expiry, serial) and
never a full name or an ID number: it is handed around and may be lost.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from PIL import Image

from passcode.domain import qr
from passcode.domain.model import Color

DAY = 86_400
MAX_DAYS = 365  # a card lives at most a year (issue 14)

_INK = (0, 0, 0)
_PAPER = (255, 255, 255)
# Any colour's QR from qr.render_svg, recoloured: its one path has this fill.
_SOURCE_COLOR = Color.GREEN
_SOURCE_FILL = 'fill="#{:02x}{:02x}{:02x}"'.format(*qr.MODULE_COLORS[_SOURCE_COLOR])
_SVG_OPEN = re.compile(r'^<svg [^>]*viewBox="0 0 (\d+) \d+"[^>]*>')

SHEET_WIDTH_MM, SHEET_HEIGHT_MM = 105, 148  # A6 portrait
_QR_MM = 80


def card_days(days: int | None, *, default: int) -> int:
    """The lifetime in days a card gets: ``days`` when given, else ``default``; ValueError for
    less than one day or more than :data:`MAX_DAYS`."""
    chosen = default if days is None else days
    if type(chosen) is not int or not 1 <= chosen <= MAX_DAYS:
        raise ValueError(f"a card lives 1 to {MAX_DAYS} days, not {chosen!r}")
    return chosen


def render_card_png(code: str, *, box_size: int = 8, border: int = 4) -> bytes:
    """The card's QR as a black-on-white PNG (ValueError as :func:`qr.render_png`)."""
    coloured = qr.render_png(code, _SOURCE_COLOR, box_size=box_size, border=border)
    image = Image.open(io.BytesIO(coloured))
    image.putpalette((*_PAPER, *_INK))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def qr_svg_body(code: str) -> tuple[int, str]:
    """The QR's side in modules and its SVG content (white square, black path) without the
    outer element, for nesting in a printed sheet (cards, venue posters)."""
    svg = qr.render_svg(code, _SOURCE_COLOR)
    opening = _SVG_OPEN.match(svg)
    assert opening is not None  # qr.render_svg always starts with its <svg ...> element
    side = int(opening.group(1))
    inner = svg[opening.end() : -len("</svg>")].replace(_SOURCE_FILL, 'fill="#000000"')
    return side, inner


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def render_sheet_svg(
    code: str, *, holder: str, serial: bytes, issued_at: datetime, expires_at: datetime
) -> str:
    """A printable A6 sheet: the QR, the masked name (``holder`` must already be masked), the
    issue and expiry dates (UTC), the serial (to report the card lost) and a line in Chinese
    and English. ValueError if the code cannot fit a QR symbol."""
    side, qr_body = qr_svg_body(code)
    left = (SHEET_WIDTH_MM - _QR_MM) / 2
    serial_text = " ".join(serial.hex()[i : i + 4] for i in range(0, len(serial) * 2, 4))
    lines = [
        (14, 6.0, "bold", "健康码纸质卡 · Health code card"),
        (108, 6.5, "bold", escape(holder)),
        (
            117,
            4.2,
            "normal",
            f"签发 Issued {_date(issued_at)} · 有效至 Valid until {_date(expires_at)}",
        ),
        (124, 3.4, "normal", f"卡号 Serial {serial_text}"),
        (133, 3.4, "normal", "扫码核验以实时码色为准 · Checked against your live status"),
        (139, 3.4, "normal", "遗失请联系社区挂失 · If lost, ask your community worker"),
    ]
    texts = "".join(
        f'<text x="{SHEET_WIDTH_MM / 2}" y="{y}" font-size="{size}" font-weight="{weight}"'
        f' text-anchor="middle">{content}</text>'
        for y, size, weight, content in lines
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SHEET_WIDTH_MM}mm"'
        f' height="{SHEET_HEIGHT_MM}mm" viewBox="0 0 {SHEET_WIDTH_MM} {SHEET_HEIGHT_MM}">'
        f'<rect width="{SHEET_WIDTH_MM}" height="{SHEET_HEIGHT_MM}" fill="#ffffff"'
        ' stroke="#000000" stroke-width="0.3"/>'
        f'<svg x="{left}" y="20" width="{_QR_MM}" height="{_QR_MM}"'
        f' viewBox="0 0 {side} {side}" shape-rendering="crispEdges">{qr_body}</svg>'
        f'<g font-family="Noto Sans CJK SC, Source Han Sans, sans-serif" fill="#000000">'
        f"{texts}</g></svg>"
    )
