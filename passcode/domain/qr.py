"""Status-coloured QR codes for passes, as PNG bytes or SVG text.

Pure and thread-safe: no I/O and no module state beyond immutable constants, so handlers can call
these functions from any thread of an executor.

Encoding: error-correction level M, the smallest version that fits, and the whole text as one
segment whose mode qrcode picks from the data; a pass ("PC1:" + Base45) is QR-alphanumeric, so it is
encoded in alphanumeric mode (230 characters fit version 9-M).

Colours: dark modules take the status colour, light modules and the quiet zone are white. Each
colour is dark enough for ordinary decoders; WCAG 2 contrast ratios against white (#ffffff):

========  ===============  =========  ================
status    RGB              hex        contrast vs white
========  ===============  =========  ================
green     (0, 122, 51)     #007a33    5.48 : 1
yellow    (160, 96, 0)     #a06000    5.04 : 1  (a dark amber; bright yellow is unreadable)
red       (192, 0, 0)      #c00000    6.48 : 1
========  ===============  =========  ================

Speed: qrcode's own ``make()`` lays out the symbol nine times (once per candidate mask, then once
more with the winner) and scores each layout with pure-Python loops, about 9 ms for a pass. Here
qrcode lays the data out once, with mask 0; the eight candidates are then derived from that by XOR
on whole-symbol bit vectors (Python ints) and scored with the same ISO/IEC 18004 penalty rules
qrcode uses (``qrcode.util.lost_point``), so the chosen mask, and every module, is identical to
what ``QRCode().make()`` produces (the unit tests check this), at a fraction of the cost.
Measured for a 230-character pass on one core: qrcode's make() about 105 symbols/s; here about
500 symbols/s, 345 PNGs/s (box_size 8) and 425 SVGs/s. Most of what remains is qrcode's own
data encoding (bit buffer, Reed-Solomon) and zlib.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from PIL import Image
from qrcode.constants import ERROR_CORRECT_M
from qrcode.exceptions import DataOverflowError
from qrcode.main import QRCode
from qrcode.util import QRData, mask_func

from passcode.domain.model import Color

__all__ = ["MODULE_COLORS", "render_png", "render_svg"]

MODULE_COLORS: Mapping[Color, tuple[int, int, int]] = MappingProxyType(
    {
        Color.GREEN: (0, 122, 51),
        Color.YELLOW: (160, 96, 0),
        Color.RED: (192, 0, 0),
    }
)
"""The dark-module RGB for each status colour (see the module docstring for contrast ratios)."""

_BACKGROUND = (255, 255, 255)
_MAX_BOX_SIZE = 64
_MAX_BORDER = 32

# Symbol layout used below: row-major, each row of n modules followed by one always-light guard
# module, written as a '0'/'1' string and read as a binary int (stride n + 1). The guard keeps runs
# and patterns from wrapping from one row into the next when the int is shifted.
_TO_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_TO_INDEX = bytes.maketrans(b"01", b"\x00\x01")
_DARK_RUN = re.compile("1+")
# qrcode's cells while the symbol is laid out: None (data, not placed yet), False/True (function
# pattern module, light/dark); coded 0/1/2 so whole rows convert at C speed.
_CELL_CODE: Mapping[bool | None, int] = MappingProxyType({None: 0, False: 1, True: 2})
_CODE_IS_DATA = bytes.maketrans(b"\x00\x01\x02", b"\x01\x00\x00")
_CODE_IS_DARK = bytes.maketrans(b"\x00\x01\x02", b"\x00\x00\x01")

# Every mask pattern is periodic with period 6 along a row and period 12 down a column, so one
# period, repeated to cover the widest symbol (177 modules), is enough for any version.
_MASK_PERIOD_ROW = 12
_MASK_PERIOD_COL = 6
_MAX_WIDTH = 180
_MASK_ROWS: tuple[tuple[str, ...], ...] = tuple(
    tuple(
        "".join("1" if mask_func(k)(r, c) else "0" for c in range(_MASK_PERIOD_COL))
        * (_MAX_WIDTH // _MASK_PERIOD_COL)
        for r in range(_MASK_PERIOD_ROW)
    )
    for k in range(8)
)
"""_MASK_ROWS[k][r % 12][c]: whether mask k inverts the module in row r, column c."""


def render_png(text: str, color: Color, *, box_size: int = 8, border: int = 4) -> bytes:
    """A palette PNG of ``text`` as a QR code: ``box_size`` pixels per module, ``border`` modules
    of white quiet zone, dark modules in the status colour. ValueError if the text cannot fit or
    the sizes are out of range (box_size 1..64, border 0..32)."""
    _check_sizes(box_size=box_size, border=border)
    rows = _symbol(text)
    side = len(rows) + 2 * border
    blank = "0" * side
    pad = "0" * border
    lines = [blank] * border + [pad + row + pad for row in rows] + [blank] * border
    pixels = "".join(lines).encode("ascii").translate(_TO_INDEX)
    image = Image.frombytes("P", (side, side), pixels)
    image.putpalette((*_BACKGROUND, *MODULE_COLORS[color]))
    if box_size != 1:
        image = image.resize((side * box_size, side * box_size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def render_svg(text: str, color: Color, *, border: int = 4) -> str:
    """An SVG document of ``text`` as a QR code, in module units (viewBox), with ``border``
    modules of white quiet zone and the dark modules as one path in the status colour.
    ValueError if the text cannot fit or border is out of range (0..32)."""
    _check_sizes(box_size=1, border=border)
    rows = _symbol(text)
    side = len(rows) + 2 * border
    fill = "#{:02x}{:02x}{:02x}".format(*MODULE_COLORS[color])
    path = "".join(
        f"M{run.start() + border} {y}h{run.end() - run.start()}v1h-{run.end() - run.start()}z"
        for y, row in enumerate(rows, start=border)
        for run in _DARK_RUN.finditer(row)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" '
        f'shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#ffffff"/>'
        f'<path fill="{fill}" d="{path}"/>'
        f"</svg>"
    )


def _check_sizes(*, box_size: int, border: int) -> None:
    if not 1 <= box_size <= _MAX_BOX_SIZE:
        raise ValueError(f"box_size must be 1..{_MAX_BOX_SIZE}, got {box_size!r}")
    if not 0 <= border <= _MAX_BORDER:
        raise ValueError(f"border must be 0..{_MAX_BORDER}, got {border!r}")


def _symbol(text: str) -> list[str]:
    """The QR symbol for ``text`` (level M, best-fit version, best mask) as rows of '0'/'1'."""
    qr = QRCode(error_correction=ERROR_CORRECT_M, border=0, mask_pattern=0)
    # One segment; QRData picks numeric, alphanumeric or byte mode from the data itself.
    qr.add_data(QRData(text.encode("utf-8")))
    try:
        qr.best_fit()  # the smallest version that holds the data
    except (DataOverflowError, ValueError) as exc:  # qrcode raises either when nothing fits
        raise ValueError(f"text of {len(text)} characters does not fit in a QR code") from exc
    # fit=False: keep that version; make(fit=True) would redo the sizing twice more (slow).
    qr.make(fit=False)
    version: int = qr.version
    masked0: list[list[bool]] = qr.modules
    n = len(masked0)
    stride = n + 1

    # The function patterns, exactly as qrcode lays them out before placing data; the format and
    # version areas are left light, as qrcode has them while it scores masks.
    layer = QRCode(version=version, error_correction=ERROR_CORRECT_M)
    layer.modules_count = n
    layer.modules = [[None] * n for _ in range(n)]
    layer.setup_position_probe_pattern(0, 0)
    layer.setup_position_probe_pattern(n - 7, 0)
    layer.setup_position_probe_pattern(0, n - 7)
    layer.setup_position_adjust_pattern()
    layer.setup_timing_pattern()
    layer.setup_type_info(True, 0)
    if version >= 7:
        layer.setup_type_number(True)
    cells: list[list[bool | None]] = layer.modules
    codes = [bytes(map(_CELL_CODE.__getitem__, row)) for row in cells]
    data_rows = [row.translate(_CODE_IS_DATA) for row in codes]
    fixed_rows = [row.translate(_CODE_IS_DARK) for row in codes]

    data = _pack(data_rows)
    fixed = _pack(fixed_rows)
    masks = [_mask(k, n) for k in range(8)]
    bits = _pack(bytes(row) for row in masked0) ^ masks[0]  # the data bits, mask 0 undone
    full = int(("1" * n + "0") * n, 2)

    best_mask = 0
    best_points = 0
    for k in range(8):
        candidate = fixed | ((bits ^ masks[k]) & data)
        points = _lost_points(candidate, full=full, stride=stride, n=n)
        if k == 0 or points < best_points:
            best_mask, best_points = k, points

    layer.setup_type_info(False, best_mask)
    if version >= 7:
        layer.setup_type_number(False)
    final_cells: list[list[bool | None]] = layer.modules
    final_fixed = _pack(
        bytes(map(_CELL_CODE.__getitem__, row)).translate(_CODE_IS_DARK) for row in final_cells
    )
    symbol = final_fixed | ((bits ^ masks[best_mask]) & data)
    digits = format(symbol, f"0{n * stride}b")
    return [digits[r * stride : r * stride + n] for r in range(n)]


def _pack(lines: Iterable[bytes]) -> int:
    """Lines of 0/1 bytes as one int in the guarded row-major layout."""
    return int(b"0".join(line.translate(_TO_DIGITS) for line in lines) + b"0", 2)


def _mask(k: int, n: int) -> int:
    """Mask pattern ``k`` over an n x n symbol, in the guarded layout."""
    period = "".join(line[:n] + "0" for line in _MASK_ROWS[k])
    return int((period * (n // _MASK_PERIOD_ROW + 1))[: n * (n + 1)], 2)


def _lost_points(symbol: int, *, full: int, stride: int, n: int) -> int:
    """The mask penalty of ``qrcode.util.lost_point`` for a symbol in the guarded layout.

    Shifting by 1 steps along a row, by ``stride`` down a column; the light guard column and the
    zeros beyond the last row stop every run and pattern at the symbol's edge."""
    dark = symbol
    light = symbol ^ full
    points = _line_points(dark, light, 1) + _line_points(dark, light, stride)
    # 2 x 2 blocks of one colour, 3 points each.
    dark_blocks = dark & (dark >> 1) & (dark >> stride) & (dark >> (stride + 1))
    light_blocks = light & (light >> 1) & (light >> stride) & (light >> (stride + 1))
    points += 3 * (dark_blocks.bit_count() + light_blocks.bit_count())
    # Dark proportion: 10 points per 5 % away from 50 % (same float arithmetic as qrcode).
    percent = float(dark.bit_count()) / (n**2)
    points += int(abs(percent * 100 - 50) / 5) * 10
    return points


def _line_points(dark: int, light: int, step: int) -> int:
    """Penalties along the lines ``step`` apart (rows: 1, columns: stride): runs of 5+ modules of
    one colour (3 + length - 5 each) and 1:1:3:1:1 finder-like patterns with 4 light modules
    before or after (40 each). A set bit in a window vector marks the window's first module."""
    dark4 = dark & (dark >> step)
    dark4 &= dark4 >> (2 * step)
    dark5 = dark4 & (dark >> (4 * step))
    light4 = light & (light >> step)
    light4 &= light4 >> (2 * step)
    light5 = light4 & (light >> (4 * step))
    # A run of length L holds L - 4 five-module windows; add 2 once per run, at its first window.
    points = dark5.bit_count() + light5.bit_count()
    points += 2 * ((dark5 & ~(dark << step)).bit_count() + (light5 & ~(light << step)).bit_count())
    core = dark & (light >> step) & (dark >> (2 * step)) & (dark >> (3 * step))
    core &= (dark >> (4 * step)) & (light >> (5 * step)) & (dark >> (6 * step))  # 1011101
    finders = (core & (light4 >> (7 * step))).bit_count()  # 1011101 0000
    finders += (light4 & (core >> (4 * step))).bit_count()  # 0000 1011101
    return points + 40 * finders
