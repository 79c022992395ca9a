"""A place's printable poster (场所码): its name, the venue code's QR and what to do, in Chinese
and English, as an A4 SVG (vector, prints sharp at any size) or a PNG (150 dpi).

Pure: text, times and font bytes come in, bytes go out. The QR is the card sheet's black one
(:mod:`passcode.domain.cardsheet`): a poster hangs for months and says nothing about anyone's
colour. The PNG is drawn with the font given (a CJK font: the service loads one it finds);
without one, only the lines Pillow's built-in Latin font can draw are written, and the QR is
always there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

from passcode.domain import cardsheet

WIDTH_MM, HEIGHT_MM = 210, 297  # A4 portrait
_QR_MM = 150
_DPI = 150
_PX_PER_MM = _DPI / 25.4
WIDTH_PX, HEIGHT_PX = round(WIDTH_MM * _PX_PER_MM), round(HEIGHT_MM * _PX_PER_MM)
_LATIN_LIMIT = 0x2E80  # below the CJK blocks: what Pillow's built-in font can be trusted with

TITLE = "场所码 · Venue code"
INSTRUCTIONS: tuple[tuple[str, str], ...] = (
    ("请用手机扫码登记", "Scan with your phone to check in"),
    (
        "打开健康码页面，点“场所扫码”，扫描此码",
        "Open your health code page, tap “Check in”, scan this code",
    ),
    ("向工作人员出示登记结果", "Show the result to the staff at the door"),
)


@dataclass(frozen=True, slots=True)
class PosterText:
    """What a poster says besides its QR."""

    place_name: str
    issue: int
    expires_at: datetime


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _footer(text: PosterText) -> str:
    return f"第 {text.issue} 版 · Issue {text.issue} · 有效至 Valid until {_date(text.expires_at)}"


def _lines(text: PosterText) -> list[tuple[float, float, str, str]]:
    """(y in mm, size in mm, weight, text) of every line, top to bottom."""
    lines = [(18.0, 9.0, "bold", TITLE), (32.0, 8.0, "bold", text.place_name)]
    y = 40 + _QR_MM + 12
    for zh, en in INSTRUCTIONS:
        lines += [(y, 6.0, "bold", zh), (y + 7, 4.6, "normal", en)]
        y += 17
    lines.append((HEIGHT_MM - 10, 3.6, "normal", _footer(text)))
    return lines


def render_svg(code: str, text: PosterText) -> str:
    """The poster as an A4 SVG document; ValueError if the code cannot fit a QR symbol."""
    side, qr_body = cardsheet.qr_svg_body(code)
    left = (WIDTH_MM - _QR_MM) / 2
    texts = "".join(
        f'<text x="{WIDTH_MM / 2}" y="{y}" font-size="{size}" font-weight="{weight}"'
        f' text-anchor="middle">{escape(line)}</text>'
        for y, size, weight, line in _lines(text)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_MM}mm" height="{HEIGHT_MM}mm"'
        f' viewBox="0 0 {WIDTH_MM} {HEIGHT_MM}">'
        f"<title>{escape(text.place_name)} · 场所码 Venue code</title>"
        f'<rect width="{WIDTH_MM}" height="{HEIGHT_MM}" fill="#ffffff"/>'
        f'<svg x="{left}" y="40" width="{_QR_MM}" height="{_QR_MM}"'
        f' viewBox="0 0 {side} {side}" shape-rendering="crispEdges">{qr_body}</svg>'
        '<g font-family="Noto Sans CJK SC, Source Han Sans SC, WenQuanYi Micro Hei,'
        ' sans-serif" fill="#000000">'
        f"{texts}</g></svg>"
    )


def _font(font: bytes | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if font is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(io.BytesIO(font), size)


def _drawable(line: str, font: bytes | None) -> bool:
    return font is not None or all(ord(c) < _LATIN_LIMIT for c in line)


def render_png(code: str, text: PosterText, *, font: bytes | None = None) -> bytes:
    """The poster as a 150-dpi A4 PNG (the QR at least 8 pixels a module); ``font`` is a
    TrueType/OpenType file's bytes covering Chinese. ValueError if the code cannot fit."""
    qr_px = round(_QR_MM * _PX_PER_MM)
    module = Image.open(io.BytesIO(cardsheet.render_card_png(code, box_size=1, border=4)))
    box = max(1, qr_px // module.width)
    symbol = module.resize((module.width * box, module.height * box), Image.Resampling.NEAREST)
    page = Image.new("L", (WIDTH_PX, HEIGHT_PX), 255)
    page.paste(symbol.convert("L"), ((WIDTH_PX - symbol.width) // 2, round(40 * _PX_PER_MM)))
    draw = ImageDraw.Draw(page)
    for y, size, _, line in _lines(text):
        if _drawable(line, font):
            _centred(draw, line, y=y, size=size, font=font)
    out = io.BytesIO()
    page.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _centred(
    draw: ImageDraw.ImageDraw, line: str, *, y: float, size: float, font: bytes | None
) -> None:
    """One line centred at baseline ``y`` (mm), shrunk until it fits the page's margins."""
    px = round(size * _PX_PER_MM)
    room = WIDTH_PX - 2 * round(10 * _PX_PER_MM)
    face = _font(font, px)
    while px > 8 and draw.textlength(line, font=face) > room:
        px = px * 9 // 10
        face = _font(font, px)
    draw.text((WIDTH_PX / 2, y * _PX_PER_MM), line, fill=0, font=face, anchor="ms")
