"""Status-coloured QR rendering (passcode.domain.qr), checked with a real decoder (zxing-cpp)."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pytest
import qrcode
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from qrcode.constants import ERROR_CORRECT_M
from qrcode.exceptions import DataOverflowError
from qrcode.main import QRCode
from qrcode.util import QRData, create_data, mask_func

from passcode.domain import qr
from passcode.domain.model import Color
from passcode.domain.qr import MODULE_COLORS, render_png, render_svg

BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
PASS_TEXT = "PC1:" + "".join(random.Random(45).choice(BASE45) for _ in range(226))
SVG_NS = "{http://www.w3.org/2000/svg}"
WHITE = (255, 255, 255)
COLORS = list(Color)
DERANDOMIZED = settings(max_examples=6, derandomize=True, deadline=None)


def decode(image: Image.Image) -> list[zxingcpp.Barcode]:
    """QR codes zxing finds in the image as a screen shows it: RGB, dark-on-light only."""
    return zxingcpp.read_barcodes(
        image.convert("RGB"), formats=zxingcpp.BarcodeFormat.QRCode, try_invert=False
    )


def decode_png(png: bytes) -> str:
    """The one QR code's text in a PNG; fails unless exactly one is found."""
    image = Image.open(BytesIO(png))
    found = decode(image)
    assert len(found) == 1, found
    # The plain call, on the image as stored, finds the same code.
    assert [barcode.text for barcode in zxingcpp.read_barcodes(image)] == [found[0].text]
    return found[0].text


def wcag_contrast(rgb: tuple[int, int, int], other: tuple[int, int, int] = WHITE) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""

    def luminance(color: tuple[int, int, int]) -> float:
        def channel(value: int) -> float:
            c = value / 255
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (channel(v) for v in color)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(rgb), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def png_grid(png: bytes, *, box_size: int, border: int) -> list[list[bool]]:
    """The module grid of a rendered PNG, sampling each module's centre (dark = not white)."""
    image = Image.open(BytesIO(png)).convert("RGB")
    side = image.width // box_size - 2 * border
    centre = box_size // 2
    return [
        [
            image.getpixel(((border + c) * box_size + centre, (border + r) * box_size + centre))
            != WHITE
            for c in range(side)
        ]
        for r in range(side)
    ]


def reference_grid(text: str) -> list[list[bool]]:
    """What qrcode itself makes for the text at level M with its own best-mask search."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=0)
    qr.add_data(QRData(text.encode("utf-8")))
    qr.make(fit=True)
    return [[bool(v) for v in row] for row in qr.modules]


_PATH_TOKEN = re.compile(r"[MmHhVvLlZz]|-?\d+(?:\.\d+)?")


def path_polygons(d: str) -> list[list[tuple[float, float]]]:
    """The closed subpaths of an SVG path made of straight segments (M/L/H/V/Z, either case)."""
    tokens = _PATH_TOKEN.findall(d)
    assert "".join(tokens) == re.sub(r"[\s,]+", "", d), "path holds commands this parser lacks"
    polygons: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    x = y = 0.0
    i = 0
    while i < len(tokens):
        command = tokens[i]
        i += 1
        relative = command.islower()
        op = command.upper()
        if op == "Z":
            polygons.append(current)
            current = []
            continue
        if op in "ML":
            dx, dy = float(tokens[i]), float(tokens[i + 1])
            i += 2
            x, y = (x + dx, y + dy) if relative else (dx, dy)
            if op == "M":
                current = []
        elif op == "H":
            value = float(tokens[i])
            i += 1
            x = x + value if relative else value
        else:  # V
            value = float(tokens[i])
            i += 1
            y = y + value if relative else value
        current.append((x, y))
    assert not current, "unclosed subpath"
    return polygons


def rasterize_svg(svg: str, *, scale: int) -> Image.Image:
    """Draw the SVG we emit (a background rect and one path of axis-aligned rectangles) with PIL,
    ``scale`` pixels per user unit; no SVG rasteriser is installed."""
    root = ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input
    _, _, width, height = (int(v) for v in root.attrib["viewBox"].split())
    image = Image.new("RGB", (width * scale, height * scale), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for element in root:
        fill = element.attrib["fill"]
        if element.tag == f"{SVG_NS}rect":
            w, h = int(element.attrib["width"]), int(element.attrib["height"])
            draw.rectangle((0, 0, w * scale - 1, h * scale - 1), fill=fill)
        elif element.tag == f"{SVG_NS}path":
            for polygon in path_polygons(element.attrib["d"]):
                xs = sorted({px for px, _ in polygon})
                ys = sorted({py for _, py in polygon})
                assert len(polygon) == 4, polygon
                assert (len(xs), len(ys)) == (2, 2), polygon
                x0, x1 = (int(v * scale) for v in xs)
                y0, y1 = (int(v * scale) for v in ys)
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            pytest.fail(f"unexpected element {element.tag}")
    return image


@pytest.mark.parametrize("color", COLORS)
def test_png_of_a_pass_decodes_to_the_exact_text(color: Color) -> None:
    """A pass-sized PNG in every status colour decodes, with zxing, to exactly the input text."""
    assert len(PASS_TEXT) == 230
    assert decode_png(render_png(PASS_TEXT, color)) == PASS_TEXT


@pytest.mark.parametrize("color", COLORS)
@DERANDOMIZED
@given(text=st.text(alphabet=BASE45, min_size=1, max_size=400))
def test_png_of_base45_text_decodes_to_the_exact_text(color: Color, text: str) -> None:
    """Arbitrary Base45-alphabet texts (any length a pass may take) round-trip through the PNG."""
    assert decode_png(render_png(text, color)) == text


@pytest.mark.parametrize("color", COLORS)
def test_svg_of_a_pass_is_xml_in_the_status_colour_and_decodes(color: Color) -> None:
    """The SVG parses as XML: one white background rect, one crisp-edged path in the status
    colour; drawn with PIL it decodes, with zxing, to exactly the input text."""
    svg = render_svg(PASS_TEXT, color)
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag == f"{SVG_NS}svg"
    assert root.attrib["shape-rendering"] == "crispEdges"
    _, _, width, height = root.attrib["viewBox"].split()
    assert width == height
    rects = root.findall(f"{SVG_NS}rect")
    paths = root.findall(f"{SVG_NS}path")
    assert (len(rects), len(paths), len(root)) == (1, 1, 2)
    assert rects[0].attrib["fill"] == "#ffffff"
    assert (rects[0].attrib["width"], rects[0].attrib["height"]) == (width, height)
    assert paths[0].attrib["fill"] == "#{:02x}{:02x}{:02x}".format(*MODULE_COLORS[color])

    found = decode(rasterize_svg(svg, scale=4))
    assert [barcode.text for barcode in found] == [PASS_TEXT]


@pytest.mark.parametrize("color", COLORS)
@DERANDOMIZED
@given(text=st.text(alphabet=BASE45, min_size=1, max_size=400))
def test_svg_of_base45_text_decodes_to_the_exact_text(color: Color, text: str) -> None:
    """Arbitrary Base45-alphabet texts round-trip through the SVG drawn with PIL."""
    found = decode(rasterize_svg(render_svg(text, color), scale=4))
    assert [barcode.text for barcode in found] == [text]


@pytest.mark.parametrize("color", COLORS)
@pytest.mark.parametrize("border", [0, 4])
def test_svg_and_png_draw_the_same_modules(color: Color, border: int) -> None:
    """The SVG drawn at 3 px per module is pixel-identical to the PNG at box_size 3: both formats
    carry the same symbol, colours and quiet zone."""
    png = Image.open(BytesIO(render_png(PASS_TEXT, color, box_size=3, border=border)))
    svg = rasterize_svg(render_svg(PASS_TEXT, color, border=border), scale=3)
    assert png.size == svg.size
    assert png.convert("RGB").tobytes() == svg.tobytes()


@pytest.mark.parametrize("color", COLORS)
def test_png_dark_modules_are_the_status_colour_on_white(color: Color) -> None:
    """The finder pattern's corner module is painted in the status colour; the quiet zone and
    the light ring inside the finder are white."""
    box_size, border = 8, 4
    image = Image.open(BytesIO(render_png(PASS_TEXT, color, box_size=box_size, border=border)))
    rgb = image.convert("RGB")
    corner = border * box_size + box_size // 2  # centre of module (0, 0), dark in every QR code
    ring = (border + 1) * box_size + box_size // 2  # module (1, 1), light in every QR code
    assert rgb.getpixel((corner, corner)) == MODULE_COLORS[color]
    assert rgb.getpixel((ring, ring)) == WHITE
    assert rgb.getpixel((0, 0)) == WHITE
    assert {pixel for _, pixel in rgb.getcolors() or []} == {MODULE_COLORS[color], WHITE}


def test_status_colours_are_distinct_and_dark_enough() -> None:
    """Every status colour has its own RGB, and each has a WCAG contrast ratio of at least 4.5:1
    against the white background, so decoders binarise it reliably."""
    assert set(MODULE_COLORS) == set(Color)
    assert len(set(MODULE_COLORS.values())) == len(Color)
    for color, rgb in MODULE_COLORS.items():
        assert wcag_contrast(rgb) >= 4.5, (color, rgb, wcag_contrast(rgb))


def test_pass_is_alphanumeric_mode_level_m_and_version_at_most_9() -> None:
    """A 230-character pass is encoded in one alphanumeric segment at error-correction level M,
    which fits version 9 or smaller. The mode indicator is read back from the image's modules."""
    box_size, border = 4, 4
    png = render_png(PASS_TEXT, Color.GREEN, box_size=box_size, border=border)
    grid = png_grid(png, box_size=box_size, border=border)
    n = len(grid)
    version = (n - 17) // 4
    assert n == 17 + 4 * version
    assert version <= 9

    (barcode,) = decode(Image.open(BytesIO(png)))
    assert barcode.ec_level == "M"
    assert barcode.extra["Version"] == str(version)
    mask = mask_func(int(barcode.extra["DataMask"]))
    # The first four data bits (the mode indicator) sit in the bottom-right 2 x 2 modules, in
    # this order; unmasked they must read 0010, alphanumeric (byte mode is 0100).
    cells = [(n - 1, n - 1), (n - 1, n - 2), (n - 2, n - 1), (n - 2, n - 2)]
    mode = [int(grid[r][c] != mask(r, c)) for r, c in cells]
    assert mode == [0, 0, 1, 0]


@pytest.mark.parametrize("color", COLORS)
def test_png_is_a_square_palette_png(color: Color) -> None:
    """The PNG starts with the PNG signature and is a square, two-colour palette image of
    (modules + 2 * border) * box_size pixels a side."""
    png = render_png(PASS_TEXT, color, box_size=5, border=2)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "P"
    assert image.width == image.height
    n = len(reference_grid(PASS_TEXT))
    assert image.width == (n + 2 * 2) * 5
    assert len(image.convert("RGB").getcolors() or []) == 2


FIXED_TEXTS = [
    "",
    "A",
    "0123456789" * 3,
    PASS_TEXT,
    "PC1:" + BASE45 * 40,  # version 20+: several alignment patterns, version information
    "pc1:lower-case text falls back to byte mode",
    "健康码 · 通行证",
]


@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_symbol_is_identical_to_qrcode_best_mask(text: str) -> None:
    """The symbol equals, module for module, what qrcode's own make() builds with its full
    eight-mask search: the fast mask choice changes nothing a scanner sees."""
    png = render_png(text, Color.RED, box_size=1, border=0)
    assert png_grid(png, box_size=1, border=0) == reference_grid(text)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet=BASE45, max_size=700),
        st.text(max_size=120),
        st.text(alphabet="0123456789", max_size=300),
    )
)
def test_symbol_is_identical_to_qrcode_best_mask_for_generated_text(text: str) -> None:
    """Generated texts (Base45, any Unicode, digits) of many versions give exactly qrcode's
    best-mask symbol."""
    png = render_png(text, Color.GREEN, box_size=1, border=0)
    assert png_grid(png, box_size=1, border=0) == reference_grid(text)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet=BASE45, max_size=2000),
        st.text(max_size=400),
        st.text(alphabet="0123456789", max_size=3000),
    )
)
def test_version_and_codewords_are_qrcodes_own(text: str) -> None:
    """The version chosen and the data + Reed-Solomon codewords (built as one int with tables)
    are exactly qrcode's best_fit and create_data, in every mode and across version classes;
    a text nothing holds is None, where qrcode overflows."""
    segment = QRData(text.encode("utf-8"))
    reference = QRCode(error_correction=ERROR_CORRECT_M)
    reference.add_data(QRData(text.encode("utf-8")))
    try:
        expected: int | None = reference.best_fit()
    except DataOverflowError:
        expected = None
    # private: the encoder's version choice and codewords, compared with qrcode's
    version = qr._best_version(segment)
    assert version == expected
    if version is not None:
        want = create_data(version, ERROR_CORRECT_M, [QRData(text.encode("utf-8"))])
        assert qr._codewords(segment, version) == want


def test_rendering_is_thread_safe() -> None:
    """Rendering from many threads at once gives the same bytes as rendering one at a time."""
    jobs = [(f"PC1:{i:03d}" + BASE45[i % 45 :] * 4, COLORS[i % 3]) for i in range(24)]

    def both(job: tuple[str, Color]) -> tuple[bytes, str]:
        return render_png(*job), render_svg(*job)

    expected = [both(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(both, jobs)) == expected


def test_text_too_long_is_a_value_error() -> None:
    """Text beyond a version-40 symbol's capacity raises ValueError, not a qrcode exception."""
    with pytest.raises(ValueError, match="does not fit"):
        render_png("A" * 5000, Color.GREEN)
    with pytest.raises(ValueError, match="does not fit"):
        render_svg("A" * 5000, Color.GREEN)


@pytest.mark.parametrize(("box_size", "border"), [(0, 4), (-1, 4), (65, 4), (8, -1), (8, 33)])
def test_out_of_range_sizes_are_value_errors(box_size: int, border: int) -> None:
    """Non-positive or huge box sizes and negative or huge borders are rejected."""
    with pytest.raises(ValueError, match="must be"):
        render_png(PASS_TEXT, Color.YELLOW, box_size=box_size, border=border)
